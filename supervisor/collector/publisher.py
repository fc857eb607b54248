"""The adapter's sink: every normalized event goes to the ring, then to ZeroMQ.

The ring is the lossless path (durable reader cursors, overrun accounting); ZeroMQ PUB is
the fan-out for consumers on other hosts and never blocks the collector: the socket has a
send high-water mark, sends are non-blocking, and a full queue is a counted drop.

This is the per-event hot path (tens of thousands of calls a second on one core), so:

- the ZeroMQ document of each event type is built by a function generated once from the
  type's fields (:func:`document_builder`), not by ``_asdict()`` plus three inserts;
- the two frames go out through the socket's compiled ``send``, not pyzmq's Python
  ``send_multipart`` wrapper;
- on an ``XPUB`` socket (what the collector binds) the publisher tracks the subscriptions
  it is told about and builds no document at all while nobody is subscribed: a PUB socket
  without subscribers drops every message anyway, and most deployments read the ring, not
  ZeroMQ. The hot path makes no ZeroMQ call while gated: a new subscription wakes the
  event loop through the socket's file descriptor (:meth:`Publisher.attach`), and the
  collector also calls :meth:`Publisher.poll_subscriptions` once a second (which is how a
  last unsubscribe is noticed while documents flow). ZeroMQ subscribers never see the first
  messages after they connect anyway.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

import zmq
import zmq.backend

from supervisor import codec, jsonlib
from supervisor.events import Event
from supervisor.histogram import Histogram

Builder = Callable[[Event, int], bytes]


class RingSink(Protocol):
    def write(self, payload: Any, type_id: int) -> int: ...


def document_builder(event_type: type, instance: str) -> Builder:
    """``f(event, ring_seq) -> JSON bytes`` of ``event_type``'s ZeroMQ document.

    The document is the event's fields in order, then ``type``, ``instance`` and
    ``ring_seq`` (the README's wire format, byte for byte what ``_asdict()`` gave). The
    function unpacks the tuple and builds one dict literal: about half the cost of
    ``_asdict()`` plus three item assignments.
    """
    fields = event_type._fields
    names = [f"f{i}" for i in range(len(fields))]
    items = ", ".join(f"{name!r}: {var}" for name, var in zip(fields, names, strict=True))
    kind_name = codec.KIND_NAMES[codec.KIND_OF[event_type]]
    src = (f"def build(event, ring_seq):\n"
           f"    {', '.join(names)}, = event\n"
           f"    return dumps({{{items}, 'type': {kind_name!r}, 'instance': instance, "
           f"'ring_seq': ring_seq}})\n")
    scope: dict[str, Any] = {"dumps": jsonlib.dumps, "instance": instance}
    exec(compile(src, f"<document_builder {event_type.__name__}>", "exec"), scope)  # noqa: S102
    return scope["build"]  # type: ignore[no-any-return]


class Publisher:
    """Callable sink: encode once for the ring, once as JSON for ZeroMQ.

    ``ring_seq`` in the ZeroMQ document is the ring's record sequence, so consumers of
    either path can match events one to one.
    """

    def __init__(self, instance: str, ring: RingSink | None, pub: zmq.Socket | None) -> None:
        self.instance = instance
        self.ring = ring
        self.pub = pub
        self.encoder = codec.Encoder()
        self.recv_to_ring = Histogram()
        self.ring_records = 0
        self.ring_bytes = 0
        self.ring_seq = 0  # sequence of the last record written
        self.zmq_sent = 0
        self.zmq_dropped = 0
        self.zmq_unsubscribed = 0  # events not serialized: no subscriber on the XPUB
        self.encode_errors = 0
        self.subscriptions: set[bytes] = set()  # prefixes some subscriber holds (XPUB)
        self._topics: dict[tuple[type, str], bytes] = {}
        self._builders: dict[type, Builder] = {}
        self._mono_ns = time.monotonic_ns
        self._gated = pub is not None and pub.getsockopt(zmq.TYPE) == zmq.XPUB
        self._active = pub is not None and not self._gated  # publish documents now?
        self._loop: asyncio.AbstractEventLoop | None = None
        if pub is not None:
            send = zmq.backend.Socket.send  # the compiled send, without pyzmq's Python layer
            self._send = lambda data, flags: send(pub, data, flags)
        if self._gated:
            self.poll_subscriptions()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read (un)subscriptions when the XPUB's descriptor signals (no-op for a PUB).

        While gated nothing else touches the socket, so its edge-triggered descriptor cannot
        be drained behind our back; once documents flow, sends may consume the signal and
        the once-a-second :meth:`poll_subscriptions` takes over.
        """
        if self._gated and self._loop is None:
            assert self.pub is not None
            self._loop = loop
            loop.add_reader(self.pub.getsockopt(zmq.FD), self.poll_subscriptions)
            self.poll_subscriptions()

    def detach(self) -> None:
        """Stop watching the descriptor (before the socket closes)."""
        if self._loop is not None and self.pub is not None:
            self._loop.remove_reader(self.pub.getsockopt(zmq.FD))
            self._loop = None

    def poll_subscriptions(self) -> bool:
        """Read the XPUB's (un)subscription messages; True when someone is subscribed.

        ZeroMQ passes each distinct prefix once when its first subscriber arrives and once
        more when its last one leaves (or disconnects), so a set of prefixes is exact.
        """
        if not self._gated:
            return self._active
        pub = self.pub
        assert pub is not None
        while True:
            try:
                msg = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if msg[:1] == b"\x01":
                self.subscriptions.add(msg[1:])
            elif msg[:1] == b"\x00":
                self.subscriptions.discard(msg[1:])
        self._active = bool(self.subscriptions)
        return self._active

    def __call__(self, event: Event) -> None:
        try:
            kind, payload = self.encoder.encode(event)
        except codec.CodecError:
            self.encode_errors += 1
            raise
        ring = self.ring
        if ring is not None:
            self.ring_seq = ring.write(payload, kind)
            self.ring_records += 1
            self.ring_bytes += len(payload)
            # Histogram.observe, inlined: one call less per event
            hist = self.recv_to_ring
            value = self._mono_ns() - event.ts_recv_mono
            hist.counts[bisect_left(hist.bounds, value)] += 1
            hist.sum += value
            hist.count += 1
        if not self._active:
            if self.pub is not None:
                self.zmq_unsubscribed += 1
            return
        etype = type(event)
        key = (etype, event.symbol)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = codec.topic(self.instance, event)
        build = self._builders.get(etype)
        if build is None:
            build = self._builders[etype] = document_builder(etype, self.instance)
        send = self._send
        try:
            send(topic, zmq.NOBLOCK | zmq.SNDMORE)
            send(build(event, self.ring_seq), zmq.NOBLOCK)
            self.zmq_sent += 1
        except zmq.Again:
            self.zmq_dropped += 1

    def stats(self) -> dict[str, Any]:
        return {
            "ring_records": self.ring_records, "ring_bytes": self.ring_bytes,
            "ring_seq": self.ring_seq, "zmq_sent": self.zmq_sent,
            "zmq_dropped": self.zmq_dropped, "zmq_unsubscribed": self.zmq_unsubscribed,
            "zmq_subscriptions": len(self.subscriptions), "encode_errors": self.encode_errors,
            "latency_recv_ring": self.recv_to_ring.to_dict(),
        }
