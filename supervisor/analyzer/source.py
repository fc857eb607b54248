"""Where the analyzer's records come from: the instance's ring, or the collector's ZeroMQ.

:class:`RingSource` (same host) attaches to the ring under a durable reader name and is the
exactly-once path: the daemon commits the cursor after each processed batch. A lap is
reported by the ring with the exact number of records lost, and counted.

:class:`ZmqSource` (another host, or no ring) subscribes to the collector's PUB socket
(topic prefix ``instance/``) and detects losses from the ``ring_seq`` the collector puts in
every document. Books are seeded from the collector's snapshot service by
:class:`SnapshotClient`, which both sources use to re-seed a book whose chain broke.

Both sources are polled from one synchronous loop: ``poll(timeout)`` blocks at most
``timeout`` seconds (in the ring's futex wait or ``zmq_poll``), so the loop that feeds the
watchdog is the loop that processes data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from supervisor import jsonlib


class RecordBatch(Protocol):
    """What :meth:`Engine.process_batch` reads (``shm.Batch`` has exactly this shape)."""

    count: int
    first_seq: int
    lost: int
    data: Any  # buffer of payloads
    offsets: Any  # int sequences, first ``count`` entries meaningful
    lengths: Any
    types: Any


class RingSource:
    """The instance's ring under a durable reader name.

    Parameters
    ----------
    ring, reader : str
        Ring and durable cursor names (``inst.ring``, ``inst.analyzer.reader``).
    batch : int
        Most records per batch (``inst.analyzer.batch``).
    coalesce : float
        Seconds to sleep, after a poll that returned records, before looking again, instead
        of sleeping on the futex at once (settings ``wake_coalesce``; 0 = never).

    Raises
    ------
    shm.RingNotFound, shm.RingNameError, shm.RingBusy, shm.RingLayoutError
        From :class:`shm.RingReader`.
    """

    mode = "ring"

    def __init__(self, ring: str, reader: str, batch: int, coalesce: float = 0.0,
                 spin: float = 0.0) -> None:
        import shm

        self.batch_records = batch
        self.coalesce = coalesce
        self.spin = spin  # busy-poll this long before sleeping on the futex
        self.busy = False  # the last poll returned records
        self.coalesced = 0  # polls that slept ``coalesce`` instead of waiting for a wake
        self.waits = 0  # polls that slept on the ring's futex (the writer wakes them)
        # A cursor seen for the first time starts at the oldest record still in the ring:
        # an analyzer installed after the collector analyses what the ring still holds.
        self.reader = shm.RingReader(ring, reader=reader, start="oldest", batch_records=batch)
        self.name = ring
        self.caught_up = False  # set once a read found nothing more to read
        self._stats_at = 0.0
        self._stats: Any = None

    @property
    def committed_seq(self) -> int:
        """Last record committed (0: none); what a restart resumes after."""
        return self.reader.next_seq - 1

    def poll(self, timeout: float) -> RecordBatch | None:
        """The next batch, waiting up to ``timeout``; ``None`` when nothing arrived.

        A batch with ``lost > 0`` means the writer lapped us: ``lost`` records just before
        ``first_seq`` are gone.
        """
        reader = self.reader
        batch = reader.read_batch()
        if batch.count == 0 and self.busy and self.coalesce:
            # Records keep coming: let a few gather instead of registering as a sleeper,
            # which would make the collector issue a futex wake for nearly every record.
            self.coalesced += 1
            time.sleep(self.coalesce)
            batch = reader.read_batch()
        self.busy = batch.count > 0
        if batch.count == 0:
            self.caught_up = True
            self.waits += 1
            started = time.monotonic()
            if not reader.wait(timeout, self.spin):
                # wait() returns at once when the writer closed the ring: do not spin.
                left = timeout - (time.monotonic() - started)
                if left > 0.01 and self.writer_state() != "running":
                    time.sleep(min(left, 0.1))
                return None
            batch = reader.read_batch()
            if batch.count == 0:
                return None
            self.busy = True
        if batch.count < self.batch_records:
            self.caught_up = True  # the ring had nothing beyond this batch
        return batch

    def commit(self) -> None:
        self.reader.commit()

    def stats(self, max_age: float = 0.5) -> Any:
        now = time.monotonic()
        if self._stats is None or now - self._stats_at > max_age:
            self._stats = self.reader.stats()
            self._stats_at = now
        return self._stats

    def writer_state(self) -> str:
        return self.stats().writer_state

    def lag(self) -> int:
        """Records written that this reader has not read yet."""
        return max(0, self.stats(0.0).last_seq - (self.reader.next_seq - 1))

    def close(self) -> None:
        self.reader.close()


class SnapshotClient:
    """Asks the collector's snapshot service for books, without blocking the loop.

    A DEALER socket: requests go out as ``{"symbol": ...}`` and replies come back in any
    order (they carry the symbol). A request without a reply within ``timeout`` is sent
    again; ``IMMEDIATE`` keeps requests from piling up while the collector is down.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, timeout: float,
                 log: logging.Logger) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.log = log
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.connect(endpoint)
        self.pending: dict[str, float] = {}  # symbol -> monotonic time of the last send
        self.requests = 0
        self.errors = 0

    def request(self, symbol: str) -> bool:
        """Queue a snapshot request for ``symbol`` (sent now or by :meth:`tick`)."""
        if symbol not in self.pending:
            self.pending[symbol] = 0.0
            self._send(symbol, time.monotonic())
        return True

    def _send(self, symbol: str, now: float) -> None:
        try:
            self.sock.send(jsonlib.dumps({"symbol": symbol}), zmq.NOBLOCK)
            self.requests += 1
            self.pending[symbol] = now
        except zmq.Again:
            # No connection yet: leave the timestamp old so tick() retries soon.
            self.pending[symbol] = now - self.timeout + min(0.2, self.timeout)

    def tick(self) -> None:
        """Re-send requests that went unanswered for ``timeout``."""
        now = time.monotonic()
        for symbol, sent in list(self.pending.items()):
            if now - sent >= self.timeout:
                self._send(symbol, now)

    def replies(self) -> list[dict[str, Any]]:
        """Every reply that has arrived (non-blocking)."""
        out = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                doc = jsonlib.loads(frames[-1])
            except jsonlib.JSONDecodeError:
                self.errors += 1
                continue
            if isinstance(doc, dict):
                out.append(doc)

    def handle(self, doc: dict[str, Any], seed: Callable[[str, int, Any, Any], None],
               failed: Callable[[str], None]) -> None:
        """Route one reply: seed the book, retry a resyncing book, or give up on a symbol."""
        symbol = doc.get("symbol")
        if not isinstance(symbol, str) or symbol not in self.pending:
            return  # a duplicate answer to a re-sent request
        error = doc.get("error")
        if error is None:
            del self.pending[symbol]
            seed(symbol, doc["seq"], doc["bids"], doc["asks"])
        elif "retry" in error:
            self.pending[symbol] = time.monotonic() - self.timeout + min(0.2, self.timeout)
        else:
            self.errors += 1
            del self.pending[symbol]
            self.log.warning("snapshot service %s: %s", self.endpoint, error)
            failed(symbol)

    def close(self) -> None:
        self.sock.close(linger=0)


class ZmqSource:
    """The collector's ZeroMQ PUB stream for this instance (no durable cursor).

    ``poll`` returns up to ``batch`` parsed documents. ``ring_seq`` jumps are counted as
    lost records via ``on_lost(lost, first_seq)``.
    """

    mode = "zmq"

    def __init__(self, ctx: zmq.Context, instance: str, endpoint: str, batch: int,
                 on_lost: Callable[[int, int], None], log: logging.Logger) -> None:
        self.instance = instance
        self.endpoint = endpoint
        self.batch_records = batch
        self.on_lost = on_lost
        self.log = log
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, f"{instance}/".encode())
        self.sock.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.last_ring_seq = 0  # 0: no baseline yet
        self.malformed = 0
        self.caught_up = False
        self.committed_seq: int | None = None  # no durable cursor in this mode

    def register(self, sock: zmq.Socket) -> None:
        """Also wake the poll for ``sock`` (the snapshot client's replies)."""
        self.poller.register(sock, zmq.POLLIN)

    def poll(self, timeout: float) -> list[dict[str, Any]] | None:
        sock = self.sock
        if not self.poller.poll(timeout * 1000):
            self.caught_up = True
            return None
        docs: list[dict[str, Any]] = []
        loads = jsonlib.loads
        for _ in range(self.batch_records):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self.caught_up = True
                break
            try:
                doc = loads(frames[-1])
                ring_seq = doc.get("ring_seq", 0)
            except (jsonlib.JSONDecodeError, AttributeError):
                self.malformed += 1
                continue
            self._check_seq(ring_seq)
            docs.append(doc)
        return docs or None

    def _check_seq(self, ring_seq: int) -> None:
        """``ring_seq`` must grow by one per document; a jump is loss, a fall a new ring."""
        last = self.last_ring_seq
        if ring_seq and last:
            if ring_seq > last + 1:
                self.on_lost(ring_seq - last - 1, ring_seq)
            elif ring_seq <= last:
                self.log.warning("collector ring_seq went back from %d to %d (ring "
                                 "re-created?): new baseline", last, ring_seq)
        if ring_seq:
            self.last_ring_seq = ring_seq

    def commit(self) -> None:
        """Nothing to commit: ZeroMQ has no durable cursor (documented at-most-once)."""

    def lag(self) -> int:
        return 0

    def writer_state(self) -> str:
        return "running"

    def close(self) -> None:
        self.sock.close(linger=0)


__all__ = ["RecordBatch", "RingSource", "ZmqSource", "SnapshotClient"]
