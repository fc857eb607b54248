"""The bridge proper: one instance's ring -> JetStream, lossless across restarts and outages.

One connection is one *session*. A session connects, checks the stream, works out what the
stream already holds (:func:`~supervisor.nats_bridge.window.resume_after`), then pumps:
read a ring batch, publish each record with its ``Nats-Msg-Id`` and a reply subject carrying
its ring seq, keep at most ``max_in_flight`` unacknowledged, and commit the ring cursor once
everything read is acknowledged (at once when the ring runs dry; under sustained load the
pump stops reading every ``commit_interval`` until the window drains, which costs one
round trip).

Anything that goes wrong (connection lost, an error ack, an ack later than ``ack_timeout``,
a stream that vanished) ends the session: the connection is closed with whatever it still
buffered, the ring reader is re-opened at its last commit, and after a backoff with full
jitter a new session re-sends from there. JetStream drops the re-sent records it already
stored (same ``Nats-Msg-Id`` within the duplicate window; :func:`last_stored` skips them
even beyond it). A fresh connection per session is what keeps records in ring order in
the stream: a client that reconnects by itself would flush its stale buffer after the
records re-sent from the commit.

The collector never waits for any of this: the bridge is one more ring reader. A bridge
that falls a ring behind (NATS down too long) is lapped; the records it never published
are counted in ``lost`` and logged, and consumers see the same jump in the ring seqs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from supervisor import codec, jsonlib
from supervisor.config import NatsConfig
from supervisor.exchanges.base import Backoff
from supervisor.histogram import Histogram
from supervisor.nats_bridge.stream import StreamMismatch, ensure_stream, last_stored
from supervisor.nats_bridge.window import AckWindow, resume_after, unpublished_loss
from supervisor.nats_bridge.wire import MSG_ID, Subjects, json_payload, msg_id_prefix

CONNECT_TIMEOUT = 2.0  # seconds per server per attempt
PING_INTERVAL = 5  # seconds: a silent dead server is noticed within ~3 pings
IDLE_WAIT = 0.25  # seconds in the ring's futex wait (in a thread) when the ring is dry
BATCH_RECORDS = 512  # most ring records per read
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 30.0
LOG_INTERVAL = 10.0  # seconds between repeated log lines of one kind


class SessionEnded(Exception):
    """This connection cannot go on; the bridge re-sends from its commit on a new one."""


@dataclass
class BridgeStats:
    """Counters since the process started (the stats block publishes them)."""

    published: int = 0  # messages sent (re-sends included)
    acked: int = 0  # positive acks, duplicates included
    duplicates: int = 0  # acks saying JetStream already had the message (re-sends)
    skipped: int = 0  # records not re-sent because the stream already holds them
    lost: int = 0  # records a ring lap took before they were published
    overruns: int = 0  # ring laps
    oversize: int = 0  # records larger than the server's max_payload (not publishable)
    malformed: int = 0  # records without a valid header (not publishable)
    ack_errors: int = 0  # error acks (JetStream refused a message)
    ack_timeouts: int = 0  # sessions ended by an ack later than ack_timeout
    connects: int = 0  # sessions started
    connect_failures: int = 0  # attempts that did not get a working session
    sessions_ended: int = 0  # sessions that ended on a failure
    commits: int = 0
    in_flight_max: int = 0  # most publishes ever awaiting their ack at once
    last_error: str = ""
    publish_to_ack: Histogram = field(default_factory=Histogram)


class Bridge:
    """Publishes ring ``ring`` of ``instance`` to JetStream as configured by ``cfg``.

    Example::

        bridge = Bridge("okx_spot", "okx_spot", inst.nats, log)
        bridge.attach()             # the ring must exist (shm.RingNotFound otherwise)
        task = asyncio.ensure_future(bridge.run())
        ...
        bridge.request_stop()       # drains the in-flight window, commits, disconnects
        await task
        bridge.close()
    """

    def __init__(self, instance: str, ring: str, cfg: NatsConfig,
                 log: logging.Logger) -> None:
        self.instance = instance
        self.ring = ring
        self.cfg = cfg
        self.log = log
        self.stats = BridgeStats()
        self.reader: Any = None  # shm.RingReader
        self.epoch = 0  # the ring segment's creation time: part of every message id
        self.state = "starting"  # connecting | connected | backoff | stopped
        self.server = ""  # URL of the current connection
        self.acked_seq = 0  # every record up to here is in the stream (or counted lost)
        self.committed_seq = 0
        self._ring_seq = 0  # newest ring seq at the last look
        self.backoff_until = 0.0  # monotonic
        self.attempted = asyncio.Event()  # the first session connected, or failed
        self.window: AckWindow | None = None
        self._refused = 0  # lowest seq refused by an error ack and not stored since
        self._stop = asyncio.Event()
        self._backoff = Backoff(BACKOFF_INITIAL, BACKOFF_CAP)
        self._subjects = Subjects(cfg.subject_prefix, instance)
        self._id_prefix = ""
        self._logged: dict[str, float] = {}
        self._waiting: asyncio.Future[bool] | None = None  # reader.wait() in a thread

    # ----- ring ----------------------------------------------------------------------------
    def attach(self) -> None:
        """(Re-)open the durable reader: it resumes right after its last commit."""
        import shm

        if self.reader is not None:
            self.reader.close()
        # A cursor seen for the first time starts at the oldest record still in the ring.
        self.reader = shm.RingReader(self.ring, reader=self.cfg.reader, start="oldest",
                                     batch_records=min(BATCH_RECORDS, self.cfg.max_in_flight))
        self.epoch = self.reader.stats().created_ns
        self._id_prefix = msg_id_prefix(self.instance, self.epoch)
        self.committed_seq = self.reader.next_seq - 1
        self.acked_seq = max(self.acked_seq, self.committed_seq)

    def ring_lag(self) -> tuple[int, int]:
        """(newest ring seq, records written that the stream does not hold yet)."""
        if self.reader is not None:
            self._ring_seq = self.reader.stats().last_seq
        return self._ring_seq, max(0, self._ring_seq - self.acked_seq)

    def _commit(self) -> None:
        self.reader.commit()
        self.committed_seq = self.reader.next_seq - 1
        self.stats.commits += 1

    # ----- lifecycle --------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Sessions until :meth:`request_stop`; never raises for NATS trouble."""
        try:
            while not self._stop.is_set():
                try:
                    await self._session()
                except SessionEnded as exc:
                    self._session_failed(str(exc))
                except StreamMismatch as exc:
                    self._session_failed(str(exc), level=logging.ERROR)
                except (TimeoutError, OSError, nats.errors.Error) as exc:
                    self._session_failed(f"{type(exc).__name__}: {exc}".rstrip(": "))
                finally:
                    self.attempted.set()
                if self._stop.is_set():
                    break
                self.attach()  # back to the commit: the next session re-sends from there
                delay = self._backoff.next_delay()
                self.state = "backoff"
                self.backoff_until = time.monotonic() + delay
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            self.state = "stopped"
            if self._waiting is not None and not self._waiting.done():
                # Cancelled mid-wait: the thread still uses the reader; let it return first.
                await asyncio.wait({self._waiting})

    def close(self) -> None:
        """Detach from the ring (the durable cursor stays at its last commit)."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _session_failed(self, reason: str, level: int = logging.WARNING) -> None:
        st = self.stats
        if self.state == "connected":
            st.sessions_ended += 1
        else:
            st.connect_failures += 1
        st.last_error = reason
        self.window = None
        self._log(level, "session", "NATS %s: %s; re-sending from ring seq %d after a backoff",
                  self.server or ",".join(self.cfg.servers), reason, self.committed_seq + 1)

    def _log(self, level: int, key: str, msg: str, *args: Any) -> None:
        """Log, at most once per LOG_INTERVAL per ``key`` (an outage must not flood)."""
        now = time.monotonic()
        if now - self._logged.get(key, -1e9) >= LOG_INTERVAL:
            self._logged[key] = now
            self.log.log(level, msg, *args)

    # ----- one session ------------------------------------------------------------------------
    async def _connect(self) -> Client:
        self.state = "connecting"
        window = self.window = AckWindow(self.cfg.max_in_flight, self.acked_seq)

        async def closed() -> None:
            window.fail("connection closed")

        async def error(exc: Exception) -> None:
            self.log.debug("nats: %s", exc)

        return await nats.connect(
            servers=list(self.cfg.servers), name=f"marketprism-nats-bridge {self.instance}",
            allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1,
            connect_timeout=CONNECT_TIMEOUT, ping_interval=PING_INTERVAL,
            max_outstanding_pings=2, user_credentials=self.cfg.credentials or None,
            closed_cb=closed, disconnected_cb=closed, error_cb=error)

    async def _session(self) -> None:
        nc = await self._connect()
        window = self.window
        assert window is not None
        try:
            js = nc.jetstream(timeout=self.cfg.ack_timeout)
            await ensure_stream(js, self.cfg, self.instance, self.log)
            stored = await last_stored(js, self.cfg, self.instance, self._id_prefix[:-1])
            skip = resume_after(self.committed_seq, stored, self._refused)
            self.acked_seq = window.acked_through = max(self.acked_seq, skip)
            inbox = f"{nc.new_inbox()}."
            await nc.subscribe(f"{inbox}*", cb=self._ack_handler(window, len(inbox)))
            self.server = str(nc.connected_url.geturl()) if nc.connected_url else ""
            self.state = "connected"
            self.attempted.set()
            self.stats.connects += 1
            self.log.info("connected to %s, stream %s: resuming after ring seq %d "
                          "(committed %d, stored %d)", self.server, self.cfg.stream, skip,
                          self.committed_seq, stored)
            await self._pump(nc, js, window, inbox, skip)
            await self._drain(nc, window)  # stopping: what was sent is acked, then commit
            self._commit()
        finally:
            try:
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT)
            except (TimeoutError, nats.errors.Error, OSError):
                pass

    def _ack_handler(self, window: AckWindow, cut: int) -> Any:
        st = self.stats
        loads = jsonlib.loads
        mono = time.monotonic_ns
        observe = st.publish_to_ack.observe

        async def on_ack(msg: Msg) -> None:
            """A publish ack: ``{"stream":"S","seq":9}`` (``"duplicate":true`` for a
            re-send JetStream already had), ``{"error":{"code":503,...}}``, or an empty
            message with header ``Status: 503`` when no stream captures the subject."""
            try:
                seq = int(msg.subject[cut:])
                doc = loads(msg.data) if msg.data else {}
            except (ValueError, jsonlib.JSONDecodeError):
                return
            error = doc.get("error")
            if error is None and "seq" not in doc:
                status = (msg.headers or {}).get("Status", "?")
                error = {"description": f"no stream stored it (status {status})"}
            if error is not None:
                st.ack_errors += 1
                self._refused = min(self._refused or seq, seq)
                window.fail(f"JetStream refused ring seq {seq}: "
                            f"{error.get('description', error)}", seq)
                return
            st.acked += 1
            if doc.get("duplicate"):
                st.duplicates += 1
            latency = window.ack(seq, mono())
            if latency >= 0:
                observe(latency)
                if self._refused and seq >= self._refused:
                    self._refused = 0

        return on_ack

    def _check(self, nc: Client, window: AckWindow) -> None:
        """End the session on a recorded failure, a dead connection or a late ack."""
        if window.error:
            raise SessionEnded(window.error)
        if not nc.is_connected:
            raise SessionEnded(f"connection lost ({nc.last_error or 'closed'})")
        oldest = window.oldest
        if oldest is not None and time.monotonic_ns() - oldest[1] > self.cfg.ack_timeout * 1e9:
            self.stats.ack_timeouts += 1
            raise SessionEnded(f"no ack for ring seq {oldest[0]} within "
                               f"{self.cfg.ack_timeout:g}s")
        self.acked_seq = window.acked_through

    async def _pump(self, nc: Client, js: JetStreamContext, window: AckWindow, inbox: str,
                    skip: int) -> None:
        reader = self.reader
        loop = asyncio.get_running_loop()
        interval = self.cfg.commit_interval
        next_commit = time.monotonic() + interval
        backoff_reset = False
        while not self._stop.is_set():
            self._check(nc, window)
            if not backoff_reset and window.acked_through > skip:
                self._backoff.reset()  # a session that delivered something was healthy
                backoff_reset = True
            batch = reader.read_batch()
            if batch.count:
                if batch.lost:
                    self._lapped(batch.first_seq, batch.lost)
                await self._publish(nc, window, batch, inbox, skip)
                if time.monotonic() >= next_commit:
                    await self._drain(nc, window)
                    self._commit()
                    next_commit = time.monotonic() + interval
                continue
            if len(window):
                await window.wait_changed(0.05)
                continue
            if reader.next_seq - 1 > self.committed_seq:
                self._check(nc, window)
                self._commit()
                next_commit = time.monotonic() + interval
            self._waiting = loop.run_in_executor(None, reader.wait, IDLE_WAIT)
            await self._waiting

    async def _drain(self, nc: Client, window: AckWindow) -> None:
        """Wait until every publish is acked (or the session fails)."""
        while len(window):
            self._check(nc, window)
            await window.wait_changed(0.05)
        self._check(nc, window)

    async def _publish(self, nc: Client, window: AckWindow, batch: Any, inbox: str,
                       skip: int) -> None:
        """Publish every record of ``batch`` past ``skip``, keeping the window bounded."""
        st = self.stats
        subjects = self._subjects
        id_prefix = self._id_prefix
        binary = self.cfg.encoding == "binary"
        max_payload = nc.max_payload
        publish = nc.publish
        mono = time.monotonic_ns
        types = batch.types
        first = batch.first_seq
        for i in range(batch.count):
            seq = first + i
            if seq <= skip:
                st.skipped += 1
                continue
            kind = types[i]
            payload = batch.payload(i)
            try:
                subject = subjects(kind, payload)
                data = bytes(payload) if binary else json_payload(self.instance, kind,
                                                                   payload, seq)
            except (codec.CodecError, ValueError, IndexError) as exc:
                st.malformed += 1
                self._log(logging.ERROR, "malformed", "ring seq %d (type %d) not published: "
                          "%s (%d so far)", seq, kind, exc, st.malformed)
                continue
            if len(data) > max_payload:
                st.oversize += 1
                self._log(logging.ERROR, "oversize", "ring seq %d not published: %d bytes > "
                          "the server's max_payload %d (%d so far)", seq, len(data),
                          max_payload, st.oversize)
                continue
            while window.full:
                self._check(nc, window)
                await window.wait_changed(0.05)
            window.sent(seq, mono())
            await publish(subject, data, reply=f"{inbox}{seq}",
                          headers={MSG_ID: f"{id_prefix}{seq}"})
            st.published += 1
            if len(window) > st.in_flight_max:
                st.in_flight_max = len(window)

    def _lapped(self, first_seq: int, lost: int) -> None:
        """The ring lapped the bridge: count what never reached the stream."""
        st = self.stats
        st.overruns += 1
        gone = unpublished_loss(first_seq, lost, self.acked_seq)
        st.lost += gone
        if gone:
            self.log.error("ring %s lapped the bridge: ring seqs %d..%d were never published "
                           "to JetStream (%d records; %d lost in total)", self.ring,
                           first_seq - gone, first_seq - 1, gone, st.lost)

    # ----- reporting ------------------------------------------------------------------------
    def stats_doc(self) -> dict[str, Any]:
        """Counters, state and lag for the stats block."""
        st = self.stats
        last, lag = self.ring_lag()
        window = self.window
        doc: dict[str, Any] = {
            "state": self.state, "connected": self.state == "connected",
            "server": self.server if self.state == "connected" else "",
            "stream": self.cfg.stream, "reader": self.cfg.reader,
            "encoding": self.cfg.encoding, "ring": self.ring, "ring_seq": last,
            "acked_seq": self.acked_seq, "committed_seq": self.committed_seq, "lag": lag,
            "in_flight": len(window) if window is not None else 0,
            "max_in_flight": self.cfg.max_in_flight,
            "backoff_seconds": max(0.0, self.backoff_until - time.monotonic())
            if self.state == "backoff" else 0.0,
        }
        for name, value in vars(st).items():
            doc[name] = value.to_dict() if isinstance(value, Histogram) else value
        return doc


__all__ = ["Bridge", "BridgeStats", "SessionEnded"]
