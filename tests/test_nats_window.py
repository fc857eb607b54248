"""The bridge's sequencing rule and wire format, without a server.

AckWindow (what may be committed), resume_after (what the stream already holds),
unpublished_loss (the exact gap of a ring lap), stream subject coverage, subjects and ids.
"""

import pytest

from supervisor import codec
from supervisor.events import Kind, Trade
from supervisor.nats_bridge.stream import covers
from supervisor.nats_bridge.window import AckWindow, resume_after, unpublished_loss
from supervisor.nats_bridge.wire import (
    Subjects,
    filter_subject,
    json_payload,
    msg_id_prefix,
    parse_msg_id,
    recv_mono,
)


def test_in_order_acks_retire_records_and_advance_acked_through():
    w = AckWindow(limit=4, acked_through=10)
    for seq in (11, 12, 13):
        w.sent(seq, 1000)
    assert w.ack(11, 1500) == 500 and w.acked_through == 11 and len(w) == 2
    assert w.ack(12, 1700) == 700 and w.acked_through == 12
    assert w.oldest == (13, 1000)


def test_an_early_ack_is_held_until_the_ones_before_it_are_acked():
    w = AckWindow(limit=8)
    for seq in (1, 2, 3, 4):
        w.sent(seq, 0)
    assert w.ack(3, 10) == -1 and w.ack(2, 10) == -1
    assert w.acked_through == 0 and len(w) == 4
    assert w.ack(1, 10) == 10
    assert w.acked_through == 3 and len(w) == 1 and w.oldest == (4, 0)


def test_acks_for_records_not_in_flight_change_nothing():
    w = AckWindow(limit=8, acked_through=5)
    assert w.ack(3, 0) == -1
    w.sent(6, 0)
    assert w.ack(5, 0) == -1 and w.acked_through == 5 and len(w) == 1


def test_the_window_is_full_at_its_limit():
    w = AckWindow(limit=2)
    w.sent(1, 0)
    assert not w.full
    w.sent(2, 0)
    assert w.full
    w.ack(1, 0)
    assert not w.full


def test_a_window_with_gaps_in_its_seqs_retires_them_in_publish_order():
    # Records skipped (oversize, already stored) leave holes in the published seqs.
    w = AckWindow(limit=8)
    for seq in (1, 4, 9):
        w.sent(seq, 0)
    w.ack(9, 0)
    w.ack(1, 0)
    assert w.acked_through == 1
    w.ack(4, 0)
    assert w.acked_through == 9 and len(w) == 0


def test_the_first_failure_is_kept_and_wakes_the_publisher():
    w = AckWindow(limit=2)
    w.fail("JetStream refused ring seq 7: insufficient resources", 7)
    w.fail("connection closed")
    assert w.error.startswith("JetStream refused ring seq 7") and w.error_seq == 7
    assert w.changed.is_set()


@pytest.mark.parametrize("committed, stored, refused, through", [
    (0, 0, 0, 0),  # fresh: publish everything
    (100, 0, 0, 100),  # the stream holds nothing of this ring (new stream, other epoch)
    (100, 180, 0, 180),  # killed after publishing 180 but before committing past 100
    (200, 180, 0, 200),  # the stream lost its tail (limits): never go behind the commit
    (100, 180, 150, 149),  # 150 was refused: it and everything after it is re-sent
    (100, 180, 90, 100),  # a refusal behind the commit does not move it back
])
def test_resume_after_skips_what_the_stream_holds(committed, stored, refused, through):
    assert resume_after(committed, stored, refused) == through


@pytest.mark.parametrize("first_seq, lost, published, gone", [
    (201, 100, 100, 100),  # records 101..200 never published
    (201, 100, 150, 50),  # 101..150 reached the stream before the restart
    (201, 100, 200, 0),  # all of them did
    (201, 100, 250, 0),
    (201, 100, 0, 100),
])
def test_a_lap_counts_only_records_the_stream_does_not_hold(first_seq, lost, published, gone):
    assert unpublished_loss(first_seq, lost, published) == gone


@pytest.mark.parametrize("pattern, covered", [
    ("marketprism.okx_spot.>", True),
    ("marketprism.>", True),
    (">", True),
    ("marketprism.*.>", True),
    ("marketprism.okx_spot.*", False),  # one token only; ours are two deeper
    ("marketprism.okx_spot.*.*", True),
    ("marketprism.binance_spot.>", False),
    ("marketprism.*.trade.>", False),
    ("other.>", False),
    ("marketprism", False),
    ("*.*.*.*", True),
])
def test_stream_subject_coverage(pattern, covered):
    assert covers(pattern, "marketprism.okx_spot.*.*") is covered


def _trade(symbol: str = "BTC-USDT") -> tuple[int, memoryview]:
    kind, view = codec.Encoder().encode(Trade(symbol, 7, 1, 2, 3_000, "t1", "buy", "1.5", "2"))
    return kind, memoryview(bytes(view))


def test_subjects_come_from_the_record_header_and_are_cached():
    subjects = Subjects("md.raw", "okx_spot")
    kind, payload = _trade()
    assert subjects(kind, payload) == "md.raw.okx_spot.trade.BTC-USDT"
    assert subjects(kind, payload) is subjects(kind, payload)
    assert filter_subject("md.raw", "okx_spot") == "md.raw.okx_spot.>"


def test_a_record_without_a_usable_subject_is_a_codec_error():
    subjects = Subjects("marketprism", "x")
    kind, payload = _trade()
    with pytest.raises(codec.CodecError):
        subjects(kind, payload[:20])
    with pytest.raises(codec.CodecError):
        subjects(99, payload)


def test_message_ids_carry_instance_ring_epoch_and_seq():
    value = msg_id_prefix("okx_spot", 1795000000123) + "42"
    assert value == "okx_spot:1795000000123:42"
    assert parse_msg_id(value) == ("okx_spot:1795000000123", 42)
    for bad in ("42", "okx_spot:42", "a:b:c:1", "okx_spot:1:x", ""):
        with pytest.raises(ValueError):
            parse_msg_id(bad)


def test_json_payload_is_the_zeromq_document_and_recv_mono_reads_the_header():
    kind, payload = _trade("ETH-USDT")
    assert kind == Kind.TRADE and recv_mono(payload) == 3_000
    doc = codec.jsonlib.loads(json_payload("okx_spot", kind, payload, 12))
    assert doc == {"type": "trade", "instance": "okx_spot", "ring_seq": 12,
                   "symbol": "ETH-USDT", "seq": 7, "ts_exchange": 1, "ts_recv": 2,
                   "ts_recv_mono": 3_000, "trade_id": "t1", "side": "buy", "price": "1.5",
                   "size": "2"}
