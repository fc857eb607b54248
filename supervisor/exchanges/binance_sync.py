"""Binance diff-depth book synchronisation: the venue's sequencing rule, one class per market.

Binance publishes a book as a REST snapshot (``lastUpdateId``) plus a diff stream whose
events carry the range of update ids they cover (``U`` first, ``u`` last) and, on USD-M
futures, the last id of the previous event on the stream (``pu``). A local book is right only
when the snapshot and the stream are stitched together by those ids ("How to manage a local
order book correctly" in the spot and USD-M docs):

========================  ==========================================  ==========================
step                      spot                                        USD-M futures
========================  ==========================================  ==========================
before the snapshot       buffer every event                          buffer every event
snapshot arrives          drop buffered events with ``u <= L``        drop those with ``u < L``
first applied event       must straddle: ``U <= L + 1 <= u``          must straddle: ``U <= L <= u``
                                                                      (``u == L``: already in the
                                                                      snapshot, chain starts)
after that                ``u <= id``: stale, ignore;                 ``pu`` must equal the
                          ``U > id + 1``: gap; else apply             previous ``u``; else gap
========================  ==========================================  ==========================

(``L`` = the snapshot's ``lastUpdateId``, ``id`` = the book's current update id.) If the
first buffered event left after the drop starts past ``L`` the snapshot is older than the
stream and another one is needed (:data:`OLD_SNAPSHOT`), which is not a gap: nothing was
published yet. Quantities are absolute, 0 removes a level (an absent one is fine), and a
book left crossed by an applied event is a break: that state is never published.

The sync classes do no I/O and never log: the feed drives them (:meth:`on_event` per diff
event, :meth:`on_snapshot` per REST body) and acts on the status they return (emit a delta,
resync, fetch a snapshot). Tests drive them the same way. One instance per symbol, so a
break on one symbol never touches another's book (cryptofeed's ``_reset()`` drops them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supervisor.book import OrderBook

# Statuses returned by on_event / on_snapshot (plain ints: compared on the hot path).
APPLIED = 0  # the event was applied to a published book: emit a BookDelta
BUFFERED = 1  # no snapshot yet: the event is kept until one arrives
STALE = 2  # the book already contains the event: ignored
GAP = 3  # the ids do not chain: the book is broken (resync); the event is kept
CROSSED = 4  # applying left best bid >= best ask: the book is broken (resync)
OVERFLOW = 5  # the buffer hit its bound while waiting: it was dropped, the sync restarts
SYNCED = 6  # on_snapshot: book loaded, buffered events folded in: emit a BookSnapshot
OLD_SNAPSHOT = 7  # on_snapshot: the snapshot predates the buffered stream: fetch another

STATUS_NAMES = ("applied", "buffered", "stale", "gap", "crossed", "overflow", "synced",
                "old_snapshot")

# Sync states.
WAITING = 0  # buffering events until a snapshot arrives
FIRST = 1  # snapshot loaded and published, the straddling event not seen yet (USD-M)
LIVE = 2  # every event must chain onto the last applied one

# A buffered event: (U, u, pu, bids, asks, E). Kept as the parser gave it, no copies.
BufferedEvent = tuple[int, int, int, Sequence[Any], Sequence[Any], int]


class DepthSync:
    """Snapshot + diff-stream stitching for one symbol's :class:`OrderBook`.

    Subclasses implement the venue's rule in :meth:`on_event` (hot path, inlined per market),
    :meth:`_straddles` and :meth:`_drop_before`. ``stale`` and ``overflows`` count what was
    ignored; ``last_ts`` is the event time (ms) of the last event folded in by
    :meth:`on_snapshot` (0 if none), the exchange time of the published snapshot.

    Usage::

        sync = BinanceSpotSync(OrderBook("BTC-USDT"))
        sync.on_event(U, u, 0, bids, asks, E)       # -> BUFFERED until a snapshot
        sync.on_snapshot(last_update_id, bids, asks)  # -> SYNCED (or OLD_SNAPSHOT, ...)
        sync.on_event(U, u, 0, bids, asks, E)       # -> APPLIED / STALE / GAP / CROSSED
    """

    __slots__ = ("book", "buffer", "max_buffer", "state", "stale", "overflows", "last_ts")

    def __init__(self, book: OrderBook, max_buffer: int = 4096) -> None:
        self.book = book
        self.buffer: list[BufferedEvent] = []
        self.max_buffer = max_buffer
        self.state = WAITING
        self.stale = 0
        self.overflows = 0
        self.last_ts = 0

    @property
    def live(self) -> bool:
        """True once a snapshot is loaded and nothing has broken since."""
        return self.state != WAITING

    def reset(self) -> None:
        """Forget everything (disconnect, malformed event): wait for a new snapshot."""
        self.state = WAITING
        self.buffer = []

    def on_event(self, first: int, last: int, prev: int, bids: Sequence[Any],
                 asks: Sequence[Any], ts: int) -> int:
        """One diff event (``U``, ``u``, ``pu`` or 0, bids, asks, ``E``) -> a status."""
        raise NotImplementedError

    def on_snapshot(self, last_update_id: int, bids: Sequence[Any],
                    asks: Sequence[Any]) -> int:
        """A REST snapshot: load it and fold the buffered events in.

        Returns :data:`SYNCED` (publish the book), :data:`OLD_SNAPSHOT` (buffer kept, fetch
        another), :data:`GAP` (the buffered events themselves do not chain; the buffer is
        kept from the break on) or :data:`CROSSED`. On anything but SYNCED the book is left
        invalid (it was never published, so no gap needs announcing). Exceptions from bad
        levels propagate; the caller resets.
        """
        if type(last_update_id) is not int:
            raise TypeError(f"lastUpdateId is {type(last_update_id).__name__}, not int")
        buf = self._drop_before(last_update_id)
        book = self.book
        self.last_ts = 0
        if buf and not self._straddles(buf[0], last_update_id):
            self.buffer = buf
            self.state = WAITING
            return OLD_SNAPSHOT
        self.buffer = []
        book.load(bids, asks, last_update_id)
        self.state = FIRST
        for i, ev in enumerate(buf):
            status = self._advance(ev)
            if status == GAP:
                self.buffer = buf[i:]
                self.state = WAITING
                book.invalidate()
                return GAP
            if status == APPLIED:
                self.last_ts = ev[5]
        self.state = LIVE if (buf or self._live_after_load) else FIRST
        if book.crossed():
            self.state = WAITING
            book.invalidate()
            return CROSSED
        return SYNCED

    # ----- venue rule pieces ----------------------------------------------------------------
    _live_after_load = False  # spot: the live rule is also the straddle rule

    def _drop_before(self, last_update_id: int) -> list[BufferedEvent]:
        raise NotImplementedError

    def _straddles(self, ev: BufferedEvent, last_update_id: int) -> bool:
        raise NotImplementedError

    def _advance(self, ev: BufferedEvent) -> int:
        """Apply one buffered event to the loaded book by the live rule (no crossed check)."""
        raise NotImplementedError

    # ----- shared outcomes ------------------------------------------------------------------
    def _wait(self, first: int, last: int, prev: int, bids: Sequence[Any],
              asks: Sequence[Any], ts: int) -> int:
        """Buffer an event while no snapshot is loaded.

        Checked here, not when folded in: a bad event must fail on its own frame.
        """
        if not (type(first) is int and type(last) is int and type(prev) is int
                and type(bids) is list and type(asks) is list):
            raise TypeError("depth event ids must be ints and sides lists")
        self.book.check(bids, asks)  # the very checks applying it will make
        buf = self.buffer
        if len(buf) >= self.max_buffer:
            self.buffer = [(first, last, prev, bids, asks, ts)]
            self.overflows += 1
            return OVERFLOW
        buf.append((first, last, prev, bids, asks, ts))
        return BUFFERED

    def _break(self, kept: BufferedEvent | None) -> None:
        """The live book broke: wait for a snapshot, keeping the event that showed it."""
        self.state = WAITING
        self.buffer = [kept] if kept is not None else []


class BinanceSpotSync(DepthSync):
    """Spot rule: drop ``u <= L``; then ``u <= id`` is stale, ``U > id + 1`` a gap."""

    __slots__ = ()
    _live_after_load = True

    def on_event(self, first: int, last: int, prev: int, bids: Sequence[Any],
                 asks: Sequence[Any], ts: int) -> int:
        """Spot ``depthUpdate``: ``prev`` is unused (spot events carry no ``pu``)."""
        if self.state != LIVE:
            return self._wait(first, last, prev, bids, asks, ts)
        book = self.book
        seq = book.seq
        if last <= seq:
            self.stale += 1
            return STALE
        if first > seq + 1:
            self._break((first, last, prev, bids, asks, ts))
            return GAP
        if book.apply(bids, asks, last):  # True: left crossed, a state never to publish
            self._break(None)
            return CROSSED
        return APPLIED

    def _drop_before(self, last_update_id: int) -> list[BufferedEvent]:
        return [ev for ev in self.buffer if ev[1] > last_update_id]

    def _straddles(self, ev: BufferedEvent, last_update_id: int) -> bool:
        return ev[0] <= last_update_id + 1 <= ev[1]

    def _advance(self, ev: BufferedEvent) -> int:
        book = self.book
        if ev[1] <= book.seq:
            self.stale += 1
            return STALE
        if ev[0] > book.seq + 1:
            return GAP
        book.apply(ev[3], ev[4], ev[1])
        return APPLIED


class BinanceFuturesSync(DepthSync):
    """USD-M rule: drop ``u < L``; first ``U <= L <= u``; then ``pu`` == previous ``u``."""

    __slots__ = ()

    def on_event(self, first: int, last: int, prev: int, bids: Sequence[Any],
                 asks: Sequence[Any], ts: int) -> int:
        """USD-M ``depthUpdate``: ``prev`` is ``pu``."""
        book = self.book
        if self.state != LIVE:
            if self.state == WAITING:
                return self._wait(first, last, prev, bids, asks, ts)
            # FIRST: a snapshot is published, the straddling event is still to come.
            seq = book.seq
            if last <= seq:
                if last == seq:  # ends exactly at the snapshot: nothing new, chain starts
                    self.state = LIVE
                self.stale += 1
                return STALE
            if first > seq:
                self._break((first, last, prev, bids, asks, ts))
                return GAP
            self.state = LIVE
        elif prev != book.seq:
            self._break((first, last, prev, bids, asks, ts))
            return GAP
        if book.apply(bids, asks, last):  # True: left crossed, a state never to publish
            self._break(None)
            return CROSSED
        return APPLIED

    def _drop_before(self, last_update_id: int) -> list[BufferedEvent]:
        return [ev for ev in self.buffer if ev[1] >= last_update_id]

    def _straddles(self, ev: BufferedEvent, last_update_id: int) -> bool:
        return ev[0] <= last_update_id <= ev[1]

    def _advance(self, ev: BufferedEvent) -> int:
        book = self.book
        if self.state == FIRST:
            self.state = LIVE  # the caller checked that the first one straddles
        elif ev[2] != book.seq:
            return GAP
        book.apply(ev[3], ev[4], ev[1])
        return APPLIED


__all__ = [
    "APPLIED", "BUFFERED", "STALE", "GAP", "CROSSED", "OVERFLOW", "SYNCED", "OLD_SNAPSHOT",
    "STATUS_NAMES", "DepthSync", "BinanceSpotSync", "BinanceFuturesSync",
]
