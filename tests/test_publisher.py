"""The collector's sink: ZeroMQ documents, the XPUB subscription gate, the ring path.

Real ZeroMQ sockets over ``inproc://`` (no mocks): what a SUB receives is what the README
documents, and nothing is serialized while nobody is subscribed.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq

from supervisor import codec, jsonlib
from supervisor.collector import publisher as publisher_mod
from supervisor.collector.publisher import Publisher, document_builder
from supervisor.events import (
    BookDelta,
    BookSnapshot,
    Funding,
    Gap,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
    VolatilityIndex,
)

HDR = ("BTC-USDT", 42, 1_700_000_000_000_000_000, 1_700_000_000_000_100_000, 123_456_789)
EVENTS = [
    BookSnapshot(*HDR, [["29000.1", "1"]], [["29000.2", "0.5"]]),
    BookDelta(*HDR, 41, [["29000.1", "0"]], []),
    Trade(*HDR, "123456", "buy", "29000.10", "0.0015"),
    Funding(*HDR, "-0.000125", 1_700_000_000_000_000_000, "29001.2"),
    OpenInterest(*HDR, "123456.789", ""),
    Liquidation(*HDR, "sell", "29000", "2"),
    LongShortRatio(*HDR, "1.2345", "5m"),
    VolatilityIndex("BTC-DVOL", 0, 1, 2, 3, "55.12"),
    Gap(*HDR, "sequence_gap", 'expected pu=5 got 7 "quoted"'),
]


class ListRing:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []

    def write(self, payload, type_id: int) -> int:
        self.records.append((type_id, bytes(payload)))
        return len(self.records)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def old_document(event, instance: str, ring_seq: int) -> bytes:
    """What the publisher sent before the generated builders (``_asdict`` + inserts)."""
    doc = event._asdict()
    doc["type"] = codec.KIND_NAMES[codec.KIND_OF[type(event)]]
    doc["instance"] = instance
    doc["ring_seq"] = ring_seq
    return jsonlib.dumps(doc)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_generated_document_is_byte_for_byte_the_documented_one(event):
    build = document_builder(type(event), "okx_spot")
    assert build(event, 7) == old_document(event, "okx_spot", 7)


def recv_all(sub: zmq.Socket, n: int, timeout: float = 5.0) -> list[list[bytes]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sub.poll(100):
            out.append(sub.recv_multipart())
    return out


def test_plain_pub_publishes_every_event_with_its_ring_seq(ctx):
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://plain")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect("inproc://plain")
    time.sleep(0.05)  # the subscription reaches the PUB
    ring = ListRing()
    p = Publisher("okx_spot", ring, pub)
    for ev in EVENTS:
        p(ev)
    got = recv_all(sub, len(EVENTS))
    assert [(t, body) for t, body in got] == [
        (codec.topic("okx_spot", ev), old_document(ev, "okx_spot", i + 1))
        for i, ev in enumerate(EVENTS)]
    assert p.zmq_sent == len(EVENTS) and p.ring_records == len(EVENTS)
    assert p.recv_to_ring.count == len(EVENTS)
    assert [t for t, _ in ring.records] == [codec.KIND_OF[type(e)] for e in EVENTS]
    sub.close(0)
    pub.close(0)


def test_xpub_serializes_nothing_until_someone_subscribes(ctx, monkeypatch):
    pub = ctx.socket(zmq.XPUB)
    pub.bind("inproc://gated")
    built = []
    real = publisher_mod.document_builder

    def counting(etype, instance):
        inner = real(etype, instance)
        return lambda ev, seq: built.append(seq) or inner(ev, seq)
    monkeypatch.setattr(publisher_mod, "document_builder", counting)
    p = Publisher("okx_spot", ListRing(), pub)
    trade = EVENTS[2]
    for _ in range(100):
        p(trade)
    assert built == [] and p.zmq_sent == 0 and p.zmq_unsubscribed == 100
    assert p.recv_to_ring.count == 100  # the ring path is unaffected

    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"okx_spot/trade/")
    sub.connect("inproc://gated")
    deadline = time.monotonic() + 5
    while not p.poll_subscriptions() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.subscriptions == {b"okx_spot/trade/"}
    p(trade)
    [(topic, body)] = recv_all(sub, 1)
    assert topic == b"okx_spot/trade/BTC-USDT"
    assert jsonlib.loads(body)["ring_seq"] == 101
    assert p.zmq_sent == 1

    sub.close(0)  # the last subscriber leaves: its prefix is withdrawn
    deadline = time.monotonic() + 5
    while p.poll_subscriptions() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.subscriptions == set()
    sent = p.zmq_sent
    p(trade)
    assert p.zmq_sent == sent
    pub.close(0)


def test_xpub_subscriber_is_noticed_by_the_event_loop_without_polling(ctx):
    """attach(): the socket's descriptor wakes the loop; the hot path never polls."""
    pub = ctx.socket(zmq.XPUB)
    pub.bind("inproc://loop")
    p = Publisher("binance_spot", None, pub)

    async def main() -> None:
        p.attach(asyncio.get_running_loop())
        p(EVENTS[1])
        assert p.zmq_unsubscribed == 1
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"binance_spot/")
        sub.connect("inproc://loop")
        deadline = time.monotonic() + 5
        while not p.subscriptions and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # only the loop's reader callback can notice it
        assert p.subscriptions == {b"binance_spot/"}
        p(EVENTS[1])
        assert p.zmq_sent == 1
        assert recv_all(sub, 1)[0][0] == b"binance_spot/book_delta/BTC-USDT"
        sub.close(0)
        p.detach()

    asyncio.run(main())
    pub.close(0)


def test_encode_error_is_counted_and_raised(ctx):
    p = Publisher("okx_spot", ListRing(), None)
    with pytest.raises(codec.CodecError):
        p(BookDelta(*HDR, 41, [["99999999999999999999", "1"]], []))
    assert p.encode_errors == 1 and p.ring_records == 0
