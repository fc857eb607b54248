"""The bridge's sequencing rule: which ring records JetStream holds, and where to commit.

Two pure pieces, tested on their own (tests/test_nats_window.py):

- :class:`AckWindow`: the publishes awaiting their JetStream ack, in publish order, bounded
  by ``max_in_flight``. ``acked_through`` is the highest ring seq with every publish up to it
  acknowledged: the only position the ring cursor may ever be committed to.
- :func:`resume_after` and :func:`unpublished_loss`: after a (re)connect, which records the
  stream already holds (they are skipped, not re-sent), and how many of the records a ring
  lap skipped were never published (the bridge's exact, counted gap).
"""

from __future__ import annotations

import asyncio
from collections import deque


class AckWindow:
    """Publishes in flight on one connection, oldest first.

    Acks arrive in publish order (one connection, one stream, a server that stores in
    order); one that overtakes is held until those before it are acked, so ``acked_through``
    never passes an unacknowledged record. The first failure (an error ack, a publish nobody
    stored) is kept in ``error``: the session ends and the bridge re-sends from its commit.

    ``changed`` is set whenever records retire or a failure is recorded, for a publisher
    waiting for room. Not thread safe (one event loop).

    Example::

        window = AckWindow(limit=1024)
        window.sent(41, now_ns)
        window.sent(42, now_ns)
        window.ack(42, now_ns)   # early: held
        window.ack(41, now_ns)   # retires 41 and 42
        assert window.acked_through == 42 and len(window) == 0
    """

    __slots__ = ("limit", "acked_through", "error", "error_seq", "changed", "_seqs", "_sent",
                 "_early")

    def __init__(self, limit: int, acked_through: int = 0) -> None:
        self.limit = limit
        self.acked_through = acked_through
        self.error = ""  # first failure ("" = none)
        self.error_seq = 0  # ring seq the failure is about (0 = the connection as a whole)
        self.changed = asyncio.Event()
        self._seqs: deque[int] = deque()  # ring seqs in publish order
        self._sent: deque[int] = deque()  # CLOCK_MONOTONIC ns of each publish, same order
        self._early: set[int] = set()  # acked, but behind an unacked one

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def full(self) -> bool:
        return len(self._seqs) >= self.limit

    @property
    def oldest(self) -> tuple[int, int] | None:
        """(ring seq, publish time ns) of the oldest unacked publish."""
        return (self._seqs[0], self._sent[0]) if self._seqs else None

    def sent(self, seq: int, now_ns: int) -> None:
        """Record a publish; seqs must grow."""
        self._seqs.append(seq)
        self._sent.append(now_ns)

    def ack(self, seq: int, now_ns: int) -> int:
        """JetStream stored ``seq``; returns ns since its publish when it retired the oldest
        publish, -1 otherwise (held early, or not in flight)."""
        seqs = self._seqs
        if not seqs or seq < seqs[0]:
            return -1
        if seq != seqs[0]:
            self._early.add(seq)
            return -1
        latency = now_ns - self._sent[0]
        seqs.popleft()
        self._sent.popleft()
        self.acked_through = seq
        early = self._early
        while early and seqs and seqs[0] in early:
            early.discard(seqs[0])
            self.acked_through = seqs.popleft()
            self._sent.popleft()
        self.changed.set()
        return latency

    def fail(self, reason: str, seq: int = 0) -> None:
        """Record the first failure of this session (later ones are consequences)."""
        if not self.error:
            self.error = reason
            self.error_seq = seq
        self.changed.set()

    async def wait_changed(self, timeout: float) -> None:
        """Sleep until an ack or failure arrives, at most ``timeout`` seconds."""
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass


def resume_after(committed: int, stored: int, refused: int) -> int:
    """Highest ring seq not to publish again after a (re)connect.

    ``committed`` is the ring cursor's commit, ``stored`` the seq of the last message the
    stream holds from this ring (0: none), ``refused`` the lowest seq JetStream refused with
    an error ack in an earlier session (0: none). One publisher's messages are stored in
    order, so everything up to ``stored`` is there too, except from a refused one on.
    """
    through = max(committed, stored)
    if refused:
        through = min(through, max(committed, refused - 1))
    return through


def unpublished_loss(first_seq: int, lost: int, published_through: int) -> int:
    """Records a ring lap took from the bridge that the stream does not hold.

    The reader was lapped: ``lost`` records just before ``first_seq`` are gone from the
    ring. Those up to ``published_through`` reached the stream before (a restart re-reads
    from the commit, which lags what was published), so they are not lost.
    """
    return max(0, first_seq - max(first_seq - lost, published_through + 1))


__all__ = ["AckWindow", "resume_after", "unpublished_loss"]
