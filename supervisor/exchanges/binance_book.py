"""Binance book sync driving: diff events and REST snapshots into the per-symbol syncs.

The sequencing rule itself is :mod:`supervisor.exchanges.binance_sync` (pure, no I/O); this
mixin of :class:`~supervisor.exchanges.binance_feed.BinanceFeed` feeds it: the
``depthUpdate`` handler (hot path), the synchronous snapshot entry point
:meth:`BinanceBooks.apply_snapshot` shared by the REST path and the tests, and the
per-symbol snapshot task (spawned, never awaited in the socket handler; 429 Retry-After and
backoff via :meth:`Feed.rest_get_retry`; one symbol's break never touches another's book).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from supervisor import jsonlib
from supervisor.events import GAP_CROSSED, GAP_SEQUENCE, GAP_SNAPSHOT, BookDelta, BookSnapshot
from supervisor.exchanges.base import Backoff, Feed, RestError
from supervisor.exchanges.binance_symbols import binance_symbol
from supervisor.exchanges.binance_sync import (
    APPLIED,
    CROSSED,
    GAP,
    OLD_SNAPSHOT,
    OVERFLOW,
    STALE,
    SYNCED,
    DepthSync,
)

# BookDelta(...) without NamedTuple's Python-level __new__ (one frame less per delta, the
# hot path); the field count is checked by test_binance_feed's delta tests.
_new_event = tuple.__new__


def _ns(ms: Any) -> int:
    """Venue milliseconds -> ns; anything but an int is malformed (``"1" * 10**6`` is not)."""
    if type(ms) is not int:
        raise TypeError(f"timestamp is {type(ms).__name__}, not int")
    return ms * 1_000_000


class BinanceBooks(Feed):
    """The book half of a Binance feed (mixed into :class:`BinanceFeed`, which owns the maps).

    Counters beyond :class:`FeedStats`: ``stale_events`` (diff events already in the book),
    ``old_snapshots`` (snapshots older than the stream, refetched), ``buffer_overflows``.
    """

    depth_path: ClassVar[str] = ""
    has_pu: ClassVar[bool] = False  # diff events carry ``pu`` (USD-M)
    snapshot_attempts: ClassVar[int] = 5  # REST attempts per round before "snapshot_failed"
    # Set up by BinanceFeed.__init__ / _refresh_symbols:
    _syncs: dict[str, DepthSync]  # normalized symbol -> sync
    _sync_by_venue: dict[str, DepthSync]  # "BTCUSDT" -> sync (hot path)
    _snapshot_tasks: dict[str, asyncio.Task[Any]]
    stale_events: int
    old_snapshots: int
    buffer_overflows: int
    ignored: int

    @property
    def snapshot_limit(self) -> int:
        raise NotImplementedError

    def _on_depth(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Diff depth event -> :class:`BookDelta` once the book is in sync.

        ::

            {"e": "depthUpdate", "E": 1626992741140,   # event time, ms
             "T": 1626992741123,                      # USD-M only: transaction time
             "s": "SUSHIUSDT",
             "U": 600859601193,                       # first update id in this event
             "u": 600859602861,                       # last update id in this event
             "pu": 600859600917,                      # USD-M only: "u" of the previous event
             "b": [["7.5980", "1433"], ["7.6100", "0"]],   # bids [price, qty]; qty 0 = remove
             "a": [["7.6170", "534"]]}                     # asks
        """
        sync = self._sync_by_venue.get(d["s"])
        if sync is None:
            self.ignored += 1  # not (or no longer) subscribed: late frame after UNSUBSCRIBE
            return
        book = sync.book
        prev = book.seq
        try:
            last = d["u"]
            bids = d["b"]
            asks = d["a"]
            ts = d["E"]
            if ts.__class__ is not int:
                raise TypeError(f"E is {type(ts).__name__}, not int")
            status = sync.on_event(d["U"], last, d["pu"] if self.has_pu else 0, bids, asks, ts)
        except Exception:
            # The event is lost: that book cannot be trusted.
            sync.reset()
            self.resync(book.symbol, GAP_SEQUENCE, "malformed depth event", ts_recv, ts_mono)
            raise
        if status == APPLIED:
            # Feed.emit inlined (the hot path: one call and a type-name lookup saved).
            events = self.stats.events
            events["BookDelta"] = events.get("BookDelta", 0) + 1
            self.sink(_new_event(BookDelta, (book.symbol, last, ts * 1_000_000, ts_recv,
                                             ts_mono, prev, bids, asks)))
        elif status != STALE:
            self._depth_status(sync, status, d, prev, ts_recv, ts_mono)
        else:
            self.stale_events += 1

    def _depth_status(self, sync: DepthSync, status: int, d: dict[str, Any], prev: int,
                      ts_recv: int, ts_mono: int) -> None:
        """The rare outcomes of a diff event: buffered, gap, crossed, overflow."""
        symbol = sync.book.symbol
        if status == GAP:
            pu = f" pu={d['pu']}" if self.has_pu else ""
            self.resync(symbol, GAP_SEQUENCE, f"book at u={prev}, event U={d['U']} "
                        f"u={d['u']}{pu}", ts_recv, ts_mono)
        elif status == CROSSED:
            self.resync(symbol, GAP_CROSSED, f"crossed after u={d['u']}", ts_recv, ts_mono)
        elif status == OVERFLOW:
            self.buffer_overflows += 1
            self.log.warning("symbol=%s: %d diff events buffered without a snapshot: dropped "
                             "them, sync restarts", symbol, sync.max_buffer)
            self._request_snapshot(symbol)
        else:  # BUFFERED: make sure a snapshot is on its way (after a failed round, say)
            self._request_snapshot(symbol)

    def apply_snapshot(self, symbol: str, body: Any, ts_recv: int = 0, ts_mono: int = 0) -> int:
        """Load a REST depth snapshot body for ``symbol``; returns the sync status.

        ``body`` is the parsed JSON or its raw text (``{"lastUpdateId": N, "bids": [...],
        "asks": [...]}``, USD-M adds ``E``/``T``). On :data:`SYNCED` a :class:`BookSnapshot`
        goes out (the buffered events folded in, so its ``seq`` is the last one applied);
        :data:`OLD_SNAPSHOT` means the body predates the buffered stream and another is
        needed; GAP/CROSSED resync the symbol. A snapshot for a book already in sync is not
        needed and ignored (:data:`STALE`). This is the one way a snapshot reaches a book:
        the REST path calls it, and tests call it with recorded bodies.

        Raises ``ValueError`` on a malformed body (the book is reset: nothing half loaded).
        """
        sync = self._syncs.get(symbol)
        if sync is None or sync.live:
            return STALE
        if isinstance(body, (str, bytes)):
            body = jsonlib.loads(body)
        book = sync.book
        try:
            body_ts = _ns(body.get("E", 0))  # USD-M only
            status = sync.on_snapshot(body["lastUpdateId"], body["bids"], body["asks"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            sync.reset()
            book.invalidate()
            raise ValueError(f"bad depth snapshot for {symbol}: {type(exc).__name__}: "
                             f"{exc}") from exc
        ts_recv = ts_recv or time.time_ns()
        ts_mono = ts_mono or time.monotonic_ns()
        if status == SYNCED:
            bids, asks = book.snapshot_levels()
            ts_ex = sync.last_ts * 1_000_000 if sync.last_ts else body_ts
            self.emit(BookSnapshot(symbol, book.seq, ts_ex, ts_recv, ts_mono, bids, asks))
            self.log.info("symbol=%s in sync at u=%d (%d bids, %d asks)", symbol, book.seq,
                          len(bids), len(asks))
        elif status == OLD_SNAPSHOT:
            self.old_snapshots += 1
            self.log.info("symbol=%s: snapshot lastUpdateId=%d predates the stream (first "
                          "buffered U=%d): fetching another", symbol, body["lastUpdateId"],
                          sync.buffer[0][0])
        elif status == GAP:
            self.resync(symbol, GAP_SEQUENCE, "buffered events do not chain", ts_recv, ts_mono)
        elif status == CROSSED:
            self.resync(symbol, GAP_CROSSED, "crossed after snapshot", ts_recv, ts_mono)
        return status

    def recover(self, symbol: str, reason: str) -> None:
        """After a break on ``symbol``: fetch a new snapshot for that symbol alone."""
        self._request_snapshot(symbol)

    def _request_snapshot(self, symbol: str) -> None:
        """Start the snapshot task of ``symbol`` unless one runs (or there is no connection)."""
        if symbol not in self._syncs or self.session is None:
            return
        if self.ws is None or self.ws.closed:
            return
        task = self._snapshot_tasks.get(symbol)
        if task is not None and not task.done():
            return
        self._snapshot_tasks[symbol] = self.spawn(self._snapshot_loop(symbol),
                                                  name=f"snapshot {self.cfg.instance} {symbol}")

    async def _snapshot_loop(self, symbol: str) -> None:
        """Fetch snapshots of ``symbol`` until one syncs the book.

        Each round is :meth:`rest_get_retry` (backoff, Retry-After honoured); a round that
        gives up is counted as a ``snapshot_failed`` resync and the next round starts after
        a backoff. Diff events keep buffering meanwhile (bounded).
        """
        params = {"symbol": binance_symbol(symbol), "limit": self.snapshot_limit}
        backoff = Backoff(self.cfg.backoff_initial, self.cfg.backoff_max)
        while symbol in self._syncs and not self._syncs[symbol].live:
            try:
                body = await self.with_snapshot_slot(
                    self.rest_get_retry(self.depth_path, params, self.snapshot_attempts))
                status = self.apply_snapshot(symbol, body)
            except RestError as exc:
                self.resync(symbol, GAP_SNAPSHOT, str(exc))
                status = -1
            except ValueError as exc:
                self.stats.rest_errors += 1
                self.log.warning("%s", exc)
                status = -1
            if status in (SYNCED, STALE):
                return
            await asyncio.sleep(backoff.next_delay())
