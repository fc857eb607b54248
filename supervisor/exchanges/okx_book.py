"""OKX ``books`` integrity: the one place the venue's sequencing rule lives.

OKX's rule (docs-v5, "Order book channel" -> "Sequence ID"):

- the first push after a subscribe is ``action: "snapshot"`` with ``prevSeqId = -1``;
- each ``action: "update"`` names the ``seqId`` it follows in ``prevSeqId``. Ids grow but are
  NOT contiguous (live gaps of 7, 12, 93 are normal), so continuity is identity, never ``+1``;
- when the book has not changed for ~60 s OKX sends an update with empty ``bids``/``asks``
  and ``seqId == prevSeqId`` (a keepalive): it still has to chain to our last ``seqId``;
- after venue maintenance the sequence may restart: an update arrives with
  ``seqId < prevSeqId``. The docs let a client carry on; we resync (``sequence_reset``)
  because nothing proves the book survived the maintenance;
- ``checksum`` (CRC32 of the top 25 levels, see :mod:`okx_checksum`) is verified whenever it
  is non-zero; OKX sends 0 since its 2026 deprecation, so the sequence chain is the check
  that always runs;
- a book whose best bid >= best ask after a push is known to be wrong (``crossed_book``).
  OKX warns that books can cross during a new listing's pre-open call auction: such a book
  keeps resyncing, at the adapter's per-symbol recovery backoff, until the auction ends.

:class:`OkxBookSync` applies one push to an :class:`~supervisor.book.OrderBook` and says what
happened; the adapter turns the verdict into events or a resync. It keeps the venue's level
lists as parsed (no copies) and allocates nothing on the valid-update path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from supervisor.book import OrderBook
from supervisor.events import GAP_CHECKSUM, GAP_CROSSED, GAP_RESET, GAP_SEQUENCE, GAP_SNAPSHOT
from supervisor.exchanges.base import Backoff, Feed
from supervisor.exchanges.okx_checksum import CHECKSUM_DEPTH, okx_checksum
from supervisor.exchanges.ws import WebSocket

# Verdicts that are not breaks (breaks are the GAP_* reason strings from events.py).
SNAPSHOT = "snapshot"  # a snapshot was loaded and verified
UPDATE = "update"  # an update was applied and verified
HEARTBEAT = "heartbeat"  # seqId == prevSeqId and no levels: nothing changed, chain intact
SKIPPED = "skipped"  # an update while the book awaits its (re)subscribe snapshot

BREAKS = (GAP_SEQUENCE, GAP_RESET, GAP_CHECKSUM, GAP_CROSSED)


def okx_sequence_verdict(last_seq: int, prev_seq: int, seq: int) -> str:
    """Classify an update (``prevSeqId``, ``seqId``) against the last applied ``seqId``.

    Returns ``GAP_RESET`` (``seqId < prevSeqId``: the venue restarted its sequence),
    ``GAP_SEQUENCE`` (``prevSeqId`` is not the id we hold: a push was lost), ``HEARTBEAT``
    (``seqId == prevSeqId``: the venue says nothing changed) or ``UPDATE``.
    """
    if seq < prev_seq:
        return GAP_RESET
    if prev_seq != last_seq:
        return GAP_SEQUENCE
    if seq == prev_seq:
        return HEARTBEAT
    return UPDATE


class OkxBookSync:
    """Apply OKX ``books`` pushes to local books, enforcing the sequencing rule.

    Usage::

        sync = OkxBookSync()
        verdict = sync.push(book, msg["action"], msg["data"][0])
        if verdict in BREAKS:
            feed.resync(symbol, verdict, sync.detail)   # invalidates, Gap, resubscribe

    On a break the book keeps the push's levels but the last good ``seq``, and ``detail``
    says why; the caller must invalidate it (:meth:`Feed.resync` does, and emits the Gap
    only if the book had been published: a bad snapshot on a book that was not in sync is
    marked unsynced here, so it costs a counted resync but no second Gap). Missing or
    mistyped fields raise (``KeyError``/``TypeError``/``ValueError``), possibly after part
    of the push was applied: the caller must then resync too. Not thread safe; one per feed.
    """

    __slots__ = ("detail", "heartbeats", "skipped", "checksums_verified")

    def __init__(self) -> None:
        self.detail = ""  # why the last break happened (built only on breaks)
        self.heartbeats = 0  # seqId == prevSeqId keepalive pushes seen
        self.skipped = 0  # updates dropped while waiting for a snapshot
        self.checksums_verified = 0  # non-zero checksums that matched

    def push(self, book: OrderBook, action: str, data: Mapping[str, Any]) -> str:
        """Apply one element of a ``books`` push's ``data`` array; return the verdict."""
        bids = data["bids"]
        asks = data["asks"]
        seq = data["seqId"]
        if action == "update":
            if not book.synced:
                self.skipped += 1
                return SKIPPED
            verdict = okx_sequence_verdict(book.seq, data["prevSeqId"], seq)
            if verdict is HEARTBEAT:
                if not bids and not asks:
                    self.heartbeats += 1
                    return self._verify(book, data, HEARTBEAT)
                verdict = UPDATE  # same id but levels changed: apply as an update
            elif verdict is not UPDATE:
                self.detail = (f"last seqId={book.seq} got prevSeqId={data['prevSeqId']} "
                               f"seqId={seq}")
                return verdict
            good = book.seq
            book.apply(bids, asks, seq)
            verdict = self._verify(book, data, verdict)
            if verdict is not UPDATE:
                book.seq = good  # the Gap names the last state known to be right
            return verdict
        if action == "snapshot":
            was_synced = book.synced
            good = book.seq
            book.load(bids, asks, seq)
            verdict = self._verify(book, data, SNAPSHOT)
            if verdict is not SNAPSHOT:
                book.seq = good
                if not was_synced:
                    book.invalidate()  # never published: no Gap to announce
            return verdict
        raise ValueError(f"unknown books action {action!r}")

    def _verify(self, book: OrderBook, data: Mapping[str, Any], verdict: str) -> str:
        """Checksum (when the venue sent one) and crossed-book checks after a push."""
        checksum = data.get("checksum", 0)  # absent == deprecated == 0
        if checksum:
            bids, asks = book.top(CHECKSUM_DEPTH)
            ours = okx_checksum(bids, asks)
            if ours != checksum:
                self.detail = f"seqId={book.seq} checksum venue={checksum} local={ours}"
                return GAP_CHECKSUM
            self.checksums_verified += 1
        if book.crossed():
            bid = book.bids.best()
            ask = book.asks.best()
            self.detail = (f"seqId={book.seq} best bid {bid[0] if bid else '-'} >= "
                           f"best ask {ask[0] if ask else '-'}")
            return GAP_CROSSED
        return verdict


class OkxBookRecovery:
    """Bring one broken book back by resubscribing its ``books`` channel; others untouched.

    OKX has no REST snapshot carrying ``seqId``, so a fresh subscription is the only way to a
    fresh snapshot: unsubscribe, then subscribe (OKX does not document that subscribing to a
    channel already subscribed sends a new snapshot). Each symbol has its own full-jitter
    :class:`Backoff`: an isolated break recovers within ``backoff_initial``; a symbol that
    keeps breaking (a crossed pre-open book, a refused subscribe) slows down to
    ``backoff_max`` instead of spending the connection's 480 requests/hour. A subscribe
    whose snapshot does not arrive within ``snapshot_timeout`` (lost, malformed, refused
    without an id) is resynced as ``snapshot_failed`` by :meth:`watchdog`.

    Usage (inside the feed)::

        self.recovery = OkxBookRecovery(self, self.resubscribe_book, 10.0)
        def recover(self, symbol, reason): self.recovery.start(symbol)
    """

    __slots__ = ("feed", "resubscribe", "snapshot_timeout", "tasks", "backoffs", "last_start",
                 "deadlines")

    def __init__(self, feed: Feed, resubscribe: Callable[[str], Awaitable[None]],
                 snapshot_timeout: float) -> None:
        self.feed = feed
        self.resubscribe = resubscribe  # coroutine: unsubscribe + subscribe one symbol's book
        self.snapshot_timeout = snapshot_timeout
        self.tasks: dict[str, asyncio.Task[Any]] = {}  # symbol -> pending recovery
        self.backoffs: dict[str, Backoff] = {}
        self.last_start: dict[str, float] = {}  # symbol -> monotonic time of last recovery
        self.deadlines: dict[str, float] = {}  # symbol -> monotonic snapshot deadline

    def start(self, symbol: str) -> None:
        """Schedule one recovery of ``symbol`` (no-op while one is pending)."""
        if symbol not in self.tasks:
            self.tasks[symbol] = self.feed.spawn(self._run(symbol), name=f"okx-recover-{symbol}")

    async def _run(self, symbol: str) -> None:
        cfg = self.feed.cfg
        try:
            now = time.monotonic()
            backoff = self.backoffs.setdefault(symbol,
                                               Backoff(cfg.backoff_initial, cfg.backoff_max))
            if now - self.last_start.get(symbol, -1e9) > 2 * cfg.backoff_max:
                backoff.reset()  # the last break was long ago: this one is isolated
            self.last_start[symbol] = now
            await asyncio.sleep(backoff.next_delay())
            if symbol in self.feed.books:  # not removed by a SIGHUP meanwhile
                await self.resubscribe(symbol)
        finally:
            self.tasks.pop(symbol, None)

    def expect_snapshot(self, symbol: str) -> None:
        """A ``books`` subscribe for ``symbol`` went out: its snapshot is now due."""
        self.deadlines[symbol] = time.monotonic() + self.snapshot_timeout

    def snapshot_arrived(self, symbol: str) -> None:
        self.deadlines.pop(symbol, None)

    async def watchdog(self, ws: WebSocket) -> None:
        """Per connection: resync books whose snapshot is overdue."""
        while not ws.closed:
            await asyncio.sleep(min(1.0, self.snapshot_timeout / 4))
            now = time.monotonic()
            for symbol in [s for s, t in self.deadlines.items() if t < now]:
                del self.deadlines[symbol]
                book = self.feed.books.get(symbol)
                if book is not None and not book.synced and symbol not in self.tasks:
                    self.feed.resync(symbol, GAP_SNAPSHOT,
                                     f"no snapshot {self.snapshot_timeout:g}s after subscribe")

    def clear(self) -> None:
        """The connection is gone (its tasks were cancelled with it)."""
        self.tasks.clear()
        self.deadlines.clear()


__all__ = ["OkxBookSync", "OkxBookRecovery", "okx_sequence_verdict", "SNAPSHOT", "UPDATE",
           "HEARTBEAT", "SKIPPED", "BREAKS"]
