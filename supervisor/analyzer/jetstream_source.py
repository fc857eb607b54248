"""The analyzer's third source: the instance's JetStream stream, for analyzers on other hosts.

:class:`JetStreamSource` reads the stream the NATS bridge fills (``nats-bridge@<instance>``,
:mod:`supervisor.nats_bridge`) through a durable pull consumer (``inst.nats.consumer``) and
hands the analyzer the same batches as :class:`~supervisor.analyzer.source.RingSource`:
with the ``binary`` encoding, records with consecutive ring seqs (``first_seq``, ``lost``,
``data``/``offsets``/``lengths``/``types``) for :meth:`Engine.process_batch`; with
``json``, the collector's documents for :meth:`Engine.process_docs`.

Exactly once, as with the ring: :meth:`commit` acknowledges the last message of the batch
just processed (``AckPolicy.ALL``: everything before it too) and waits for the server to
confirm. On start the consumer is re-created at its ack floor + 1, so a restart after a
crash resumes right after the last commit, in stream order (the server's redelivery of a
dead client's unacknowledged messages would come back after ``ack_wait`` and out of
order). The ring seq in each message id (``<instance>:<epoch>:<seq>``) is checked: a jump
is ``lost`` records (a lapped bridge, messages aged out before we read them), a seq at or
below the last one processed is a duplicate and dropped, a new epoch (the ring was
re-created) starts a new baseline.

``poll(timeout)`` is synchronous like the other sources: the nats client runs on a private
event loop that turns only inside :meth:`poll` and :meth:`commit`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.js import api
from nats.js.errors import NotFoundError

from supervisor import jsonlib
from supervisor.config import NatsConfig
from supervisor.nats_bridge.wire import KIND_OF_TOKEN, MSG_ID, filter_subject, parse_msg_id

ACK_WAIT = 300.0  # seconds; a live analyzer acks every batch long before (watchdog: 30 s)
_PAD = bytes(8)


class StreamBatch:
    """Records with consecutive ring seqs, laid out like ``shm.Batch`` (8-byte aligned)."""

    __slots__ = ("count", "first_seq", "lost", "data", "offsets", "lengths", "types")

    def __init__(self, first_seq: int, lost: int, payloads: list[bytes],
                 types: list[int]) -> None:
        parts: list[bytes] = []
        offsets: list[int] = []
        pos = 0
        for p in payloads:
            offsets.append(pos)
            pad = -len(p) % 8
            parts.append(p)
            if pad:
                parts.append(_PAD[:pad])
            pos += len(p) + pad
        self.count = len(payloads)
        self.first_seq = first_seq
        self.lost = lost
        self.data = memoryview(b"".join(parts))
        self.offsets = offsets
        self.lengths = [len(p) for p in payloads]
        self.types = types


class JetStreamSource:
    """Durable pull consumer ``cfg.consumer`` on ``cfg.stream``, filtered to ``instance``.

    Parameters
    ----------
    instance : str
        Instance name (its subjects are ``<prefix>.<instance>.>``).
    cfg : NatsConfig
        The instance's ``nats`` table (servers, stream, prefix, encoding, consumer).
    batch : int
        Most records per batch (``inst.analyzer.batch``).
    on_lost : callable, optional
        ``on_lost(lost, first_seq)`` for the json encoding (binary batches carry ``lost``).

    Raises
    ------
    nats.errors.Error, OSError
        NATS unreachable at start, or the stream does not exist.
    """

    mode = "jetstream"

    def __init__(self, instance: str, cfg: NatsConfig, batch: int, log: logging.Logger,
                 on_lost: Callable[[int, int], None] | None = None) -> None:
        self.instance = instance
        self.cfg = cfg
        self.batch_records = batch
        self.log = log
        self.on_lost = on_lost
        self.binary = cfg.encoding == "binary"
        self.caught_up = False
        self.committed_seq = 0  # ring seq of the last acknowledged record
        self.last_seq = 0  # ring seq of the last record handed out
        self.origin = ""  # "<instance>:<epoch>" of the last record
        self.duplicates = 0  # records at or below last_seq (dropped)
        self.malformed = 0  # messages without our id or a known kind (dropped)
        self._held: list[Any] = []  # fetched after a seq break: the next batch starts here
        self._last_msg: Any = None  # the newest message handed out (or dropped), unacked
        self._last_seq_pending = 0
        self._pending = 0
        self._pending_at = 0.0
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._start())
        except BaseException:
            self.loop.close()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        self.nc = await nats.connect(
            servers=list(cfg.servers), name=f"marketprism-analyzer {self.instance}",
            user_credentials=cfg.credentials or None, connect_timeout=2,
            max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        start = await self._resume_point()
        await self.js.add_consumer(cfg.stream, api.ConsumerConfig(
            durable_name=cfg.consumer, ack_policy=api.AckPolicy.ALL, ack_wait=ACK_WAIT,
            filter_subject=filter_subject(cfg.subject_prefix, self.instance),
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start
            else api.DeliverPolicy.ALL, opt_start_seq=start or None,
            max_ack_pending=max(10_000, 4 * self.batch_records)))
        self.sub = await self.js.pull_subscribe_bind(cfg.consumer, cfg.stream)

    async def _resume_point(self) -> int:
        """Stream seq right after the consumer's ack floor (0: a new consumer, from the
        start of the stream); the old consumer is deleted to drop its delivery state."""
        cfg = self.cfg
        try:
            info = await self.js.consumer_info(cfg.stream, cfg.consumer)
        except NotFoundError:
            return 0
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        if floor:
            try:
                msg = await self.js.get_msg(cfg.stream, floor)
                self.origin, self.committed_seq = parse_msg_id(msg.headers[MSG_ID])
                self.last_seq = self.committed_seq
            except (NotFoundError, KeyError, TypeError, ValueError):
                pass  # aged out: the next record starts a new baseline
        await self.js.delete_consumer(cfg.stream, cfg.consumer)
        return floor + 1 if floor else 0

    # ----- reading --------------------------------------------------------------------------
    def poll(self, timeout: float) -> StreamBatch | list[dict[str, Any]] | None:
        """The next run of consecutive records, waiting up to ``timeout``; ``None`` when
        nothing (new) arrived."""
        return self.loop.run_until_complete(self._poll(timeout))

    async def _poll(self, timeout: float) -> StreamBatch | list[dict[str, Any]] | None:
        msgs, self._held = self._held, []
        if not msgs:
            try:
                msgs = await self.sub.fetch(self.batch_records, timeout=max(timeout, 0.01))
            except TimeoutError:  # nats' and asyncio's
                self.caught_up = True
                return None
            if len(msgs) < self.batch_records:
                self.caught_up = True
        payloads: list[Any] = []
        types: list[int] = []
        first_seq = lost = 0
        for i, msg in enumerate(msgs):
            try:
                origin, seq = parse_msg_id((msg.headers or {})[MSG_ID])
                kind = KIND_OF_TOKEN[msg.subject.rsplit(".", 2)[1]]
            except (KeyError, ValueError, IndexError):
                self.malformed += 1
                self._last_msg = msg
                continue
            if origin != self.origin:
                if payloads:
                    self._held = msgs[i:]  # a new ring: its records start the next batch
                    break
                if self.origin:
                    self.log.warning("stream records now come from ring %s (was %s): the "
                                     "ring was re-created; new baseline at seq %d", origin,
                                     self.origin, seq)
                # No loss is counted before the first record of a ring we have not seen.
                self.origin = origin
                self.last_seq = seq - 1
            if seq <= self.last_seq:
                self.duplicates += 1
                self._last_msg = msg
                continue
            if not payloads:
                first_seq = seq
                lost = seq - self.last_seq - 1
            elif seq != first_seq + len(payloads):
                self._held = msgs[i:]  # a gap: the records after it form the next batch
                break
            payloads.append(msg.data)
            types.append(kind)
            self.last_seq = seq
            self._last_msg = msg
        if not payloads:
            return None
        self._last_seq_pending = self.last_seq
        if self.binary:
            return StreamBatch(first_seq, lost, payloads, types)
        if lost and self.on_lost is not None:
            self.on_lost(lost, first_seq)
        return [jsonlib.loads(p) for p in payloads]

    def commit(self) -> None:
        """Acknowledge everything handed out so far and wait for the server's confirmation."""
        msg, self._last_msg = self._last_msg, None
        if msg is not None:
            self.loop.run_until_complete(msg.ack_sync(timeout=5))
            self.committed_seq = self._last_seq_pending or self.committed_seq

    # ----- state ----------------------------------------------------------------------------
    def lag(self) -> int:
        """Messages in the stream this consumer has not been delivered yet (1 s cache)."""
        now = time.monotonic()
        if now - self._pending_at >= 1.0:
            self._pending_at = now
            try:
                info = self.loop.run_until_complete(
                    self.js.consumer_info(self.cfg.stream, self.cfg.consumer))
                self._pending = info.num_pending or 0
            except (nats.errors.Error, OSError):
                pass  # unreachable: keep the last figure
        return self._pending + len(self._held)

    def writer_state(self) -> str:
        return "running" if self.nc.is_connected else "disconnected"

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.nc.close())
        finally:
            self.loop.close()


__all__ = ["JetStreamSource", "StreamBatch"]
