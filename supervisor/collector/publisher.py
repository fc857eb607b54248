"""The adapter's sink: every normalized event goes to the ring, then to ZeroMQ.

The ring is the lossless path (durable reader cursors, overrun accounting); ZeroMQ PUB is
the fan-out for consumers on other hosts and never blocks the collector: the socket has a
send high-water mark, sends are non-blocking, and a full queue is a counted drop.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import zmq

from supervisor import codec, jsonlib
from supervisor.events import Event
from supervisor.histogram import Histogram


class RingSink(Protocol):
    def write(self, payload: Any, type_id: int) -> int: ...


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
        self.encode_errors = 0
        self._topics: dict[tuple[type, str], bytes] = {}
        self._mono_ns = time.monotonic_ns

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
            self.recv_to_ring.observe(self._mono_ns() - event.ts_recv_mono)
        pub = self.pub
        if pub is not None:
            key = (type(event), event.symbol)
            topic = self._topics.get(key)
            if topic is None:
                topic = self._topics[key] = codec.topic(self.instance, event)
            doc = event._asdict()
            doc["type"] = codec.KIND_NAMES[kind]
            doc["instance"] = self.instance
            doc["ring_seq"] = self.ring_seq
            try:
                pub.send_multipart((topic, jsonlib.dumps(doc)), zmq.NOBLOCK)
                self.zmq_sent += 1
            except zmq.Again:
                self.zmq_dropped += 1

    def stats(self) -> dict[str, Any]:
        return {
            "ring_records": self.ring_records, "ring_bytes": self.ring_bytes,
            "ring_seq": self.ring_seq, "zmq_sent": self.zmq_sent,
            "zmq_dropped": self.zmq_dropped, "encode_errors": self.encode_errors,
            "latency_recv_ring": self.recv_to_ring.to_dict(),
        }
