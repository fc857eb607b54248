"""OKX ``books`` sync: the sequencing rule, checksums, faults and resyncs, through handle_frame.

Book contents are compared, at checkpoints, with the venue-side model of
:class:`tests.test_okx_messages.OkxBookStream`; resyncs, gaps and malformed frames are
counted exactly.
"""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.events import (
    GAP_CHECKSUM,
    GAP_CROSSED,
    GAP_RESET,
    GAP_SEQUENCE,
    BookDelta,
    BookSnapshot,
    Gap,
)
from supervisor.exchanges.okx_book import HEARTBEAT, UPDATE, okx_sequence_verdict
from tests.test_okx_messages import OkxBookStream, book_levels, frame, make_feed

SYM = "BTC-USDT"

# OKX v5 "Order book channel" push examples, verbatim (docs-v5, WS / Order book channel).
DOC_SNAPSHOT = {
    "arg": {"channel": "books", "instId": "BTC-USDT"},
    "action": "snapshot",
    "data": [{
        "asks": [["8476.98", "415", "0", "13"], ["8477", "7", "0", "2"],
                 ["8477.34", "85", "0", "1"], ["8477.56", "1", "0", "1"],
                 ["8505.84", "8", "0", "1"], ["8506.37", "85", "0", "1"],
                 ["8506.49", "2", "0", "1"], ["8506.96", "100", "0", "2"]],
        "bids": [["8476.97", "256", "0", "12"], ["8475.55", "101", "0", "1"],
                 ["8475.54", "100", "0", "1"], ["8475.3", "1", "0", "1"],
                 ["8447.32", "6", "0", "1"], ["8447.02", "246", "0", "1"],
                 ["8446.83", "24", "0", "1"], ["8446", "95", "0", "3"]],
        "ts": "1597026383085",
        "checksum": -855196043,
        "prevSeqId": -1,
        "seqId": 123456,
    }],
}
DOC_UPDATE = copy.deepcopy(DOC_SNAPSHOT)
DOC_UPDATE["action"] = "update"
DOC_UPDATE["data"][0].update(prevSeqId=123456, seqId=123457)


def deliver(feed, msg):
    feed.handle_frame(frame(msg), 1, 1)


def deprecated(msg):
    """The same push as OKX sends it since the 2026 checksum deprecation."""
    msg = copy.deepcopy(msg)
    msg["data"][0]["checksum"] = 0
    return msg


# ----- the sequencing rule --------------------------------------------------------------------
def test_sequence_verdicts_follow_the_documented_example():
    # docs: snapshot -1/10, update 10/15, no-change 15/15, reset 15/3, then 3/5
    assert okx_sequence_verdict(10, 10, 15) is UPDATE
    assert okx_sequence_verdict(15, 15, 15) is HEARTBEAT
    assert okx_sequence_verdict(15, 15, 3) == GAP_RESET
    assert okx_sequence_verdict(3, 3, 5) is UPDATE


def test_a_prev_seq_id_other_than_the_last_applied_is_a_gap():
    assert okx_sequence_verdict(15, 14, 20) == GAP_SEQUENCE
    assert okx_sequence_verdict(15, 16, 20) == GAP_SEQUENCE


# ----- OKX's own samples ----------------------------------------------------------------------
def test_documented_snapshot_and_update_apply_when_checksum_is_zero():
    feed, events = make_feed()
    deliver(feed, deprecated(DOC_SNAPSHOT))
    deliver(feed, deprecated(DOC_UPDATE))
    bids, asks = book_levels(feed, SYM)
    assert bids[0] == ["8476.97", "256"] and bids[-1] == ["8446", "95"] and len(bids) == 8
    assert asks[0] == ["8476.98", "415"] and asks[-1] == ["8506.96", "100"] and len(asks) == 8
    assert feed.books[SYM].seq == 123457
    assert [type(e) for e in events] == [BookSnapshot, BookDelta]
    assert events[0].ts_exchange == 1597026383085 * 1_000_000
    assert (events[1].prev_seq, events[1].seq) == (123456, 123457)
    assert feed.stats.resyncs == {} and feed.stats.malformed == 0


def test_documented_snapshot_checksum_is_illustrative_so_verifying_it_resyncs():
    # The docs' sample value (-855196043) is not the CRC of the sample's levels
    # (that is -2102840145); verifying it must refuse the book, not publish it.
    feed, events = make_feed()
    deliver(feed, DOC_SNAPSHOT)
    assert feed.stats.resyncs == {GAP_CHECKSUM: 1}
    assert not feed.books[SYM].synced
    assert events == []  # never published, so no Gap either
    fixed = copy.deepcopy(DOC_SNAPSHOT)
    fixed["data"][0]["checksum"] = -2102840145
    deliver(feed, fixed)
    assert feed.books[SYM].synced and feed.book_sync.checksums_verified == 1


# ----- valid streams --------------------------------------------------------------------------
def test_updates_before_the_first_snapshot_are_skipped():
    feed, events = make_feed()
    stream = OkxBookStream(seed=1)
    deliver(feed, stream.update())
    assert events == [] and feed.book_sync.skipped == 1 and feed.stats.resyncs == {}
    deliver(feed, stream.snapshot())
    assert book_levels(feed, SYM) == stream.levels()


def test_heartbeat_keeps_the_book_and_emits_nothing():
    feed, events = make_feed()
    stream = OkxBookStream(seed=2)
    deliver(feed, stream.snapshot())
    deliver(feed, stream.heartbeat())
    assert len(events) == 1 and feed.book_sync.heartbeats == 1
    deliver(feed, stream.update())
    assert feed.stats.resyncs == {} and book_levels(feed, SYM) == stream.levels()


def test_heartbeat_that_does_not_chain_is_a_gap():
    feed, events = make_feed()
    stream = OkxBookStream(seed=2)
    deliver(feed, stream.snapshot())
    stream.update()  # lost
    deliver(feed, stream.heartbeat())
    assert feed.stats.resyncs == {GAP_SEQUENCE: 1}


def test_zero_size_removes_a_level_and_removing_an_absent_level_is_fine():
    feed, _ = make_feed()
    deliver(feed, deprecated(DOC_SNAPSHOT))
    upd = deprecated(DOC_UPDATE)
    upd["data"][0].update(bids=[["8476.97", "0", "0", "0"], ["1.5", "0", "0", "0"]], asks=[])
    deliver(feed, upd)
    bids, _ = book_levels(feed, SYM)
    assert bids[0] == ["8475.55", "101"] and len(bids) == 7
    assert feed.stats.resyncs == {}


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), checksums=st.booleans(),
       heartbeat_every=st.integers(2, 10))
def test_random_valid_streams_equal_the_venue_book_without_resync(seed, n, checksums,
                                                                  heartbeat_every):
    feed, events = make_feed()
    stream = OkxBookStream(seed=seed, checksums=checksums)
    deliver(feed, stream.snapshot())
    for i in range(n):
        deliver(feed, stream.update())
        if i % heartbeat_every == 0:
            deliver(feed, stream.heartbeat())
        assert book_levels(feed, SYM) == stream.levels()  # checkpoint after every push
    assert feed.stats.resyncs == {} and feed.stats.malformed == 0
    assert [type(e) for e in events] == [BookSnapshot] + [BookDelta] * n
    assert events[-1].seq == stream.seq == feed.books[SYM].seq


# ----- faults ---------------------------------------------------------------------------------
def wrong(checksum: int) -> int:
    """A non-zero int32 that is not ``checksum``."""
    return checksum + 1 if checksum not in (-1, 2**31 - 1) else checksum - 1


def inject(feed, stream, fault):
    """Deliver one fault; return (expected resync reason or None, expected malformed)."""
    if fault == "gap":
        stream.update()  # dropped on the way
        deliver(feed, stream.update())
        return GAP_SEQUENCE, 0
    if fault == "reset":
        deliver(feed, stream.reset_update())
        return GAP_RESET, 0
    if fault == "bad_checksum":
        msg = stream.update()
        msg["data"][0]["checksum"] = wrong(msg["data"][0]["checksum"])
        deliver(feed, msg)
        return GAP_CHECKSUM, 0
    if fault == "zero_checksum":
        deliver(feed, deprecated(stream.update()))
        return None, 0
    if fault == "crossed":
        deliver(feed, stream.crossed_update())
        return GAP_CROSSED, 0
    if fault == "malformed_json":
        feed.handle_frame(frame(stream.update())[:-7], 1, 1)
        deliver(feed, stream.update())  # the next push shows the hole
        return GAP_SEQUENCE, 1
    if fault.startswith("missing_"):
        msg = stream.update()
        del msg["data"][0][fault[len("missing_"):]]
        deliver(feed, msg)
        return GAP_SEQUENCE, 1
    if fault == "error_event":
        deliver(feed, {"event": "error", "code": "60012", "msg": "Invalid request",
                       "connId": "a4d3ae55"})
        return None, 0
    raise AssertionError(fault)


FAULTS = ["gap", "reset", "bad_checksum", "zero_checksum", "crossed", "malformed_json",
          "missing_seqId", "missing_prevSeqId", "missing_bids", "missing_asks", "error_event"]


@settings(max_examples=150)
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(0, 15), after=st.integers(0, 10),
       fault=st.sampled_from(FAULTS), checksums=st.booleans())
def test_every_fault_gives_one_counted_resync_and_a_correct_book_after_resubscribe(
        seed, before, after, fault, checksums):
    feed, events = make_feed()
    stream = OkxBookStream(seed=seed, checksums=checksums)
    deliver(feed, stream.snapshot())
    for _ in range(before):
        deliver(feed, stream.update())
    assert book_levels(feed, SYM) == stream.levels()
    last_good = feed.books[SYM].seq
    reason, malformed = inject(feed, stream, fault)
    if reason is not None:
        assert feed.stats.resyncs == {reason: 1}
        assert not feed.books[SYM].synced
        gaps = [e for e in events if isinstance(e, Gap)]
        assert len(gaps) == 1 and (gaps[0].reason, gaps[0].seq) == (reason, last_good)
        deliver(feed, stream.update())  # still in flight from the old subscription
        assert feed.book_sync.skipped == 1
        deliver(feed, stream.snapshot())  # the resubscribe's snapshot
    for _ in range(after):
        deliver(feed, stream.update())
    assert feed.stats.resyncs == ({reason: 1} if reason else {})
    assert feed.stats.malformed == malformed
    assert feed.stats.subscribe_errors == (fault == "error_event")
    assert feed.books[SYM].synced
    assert book_levels(feed, SYM) == stream.levels()
    snapshots = sum(isinstance(e, BookSnapshot) for e in events)
    assert snapshots == (2 if reason else 1)


def test_a_break_on_one_instrument_leaves_the_other_in_sync():
    feed, events = make_feed(symbols=("BTC-USDT", "ETH-USDT"))
    btc = OkxBookStream("BTC-USDT", seed=5)
    eth = OkxBookStream("ETH-USDT", seed=6)
    deliver(feed, btc.snapshot())
    deliver(feed, eth.snapshot())
    btc.update()  # lost
    deliver(feed, btc.update())
    deliver(feed, eth.update())
    assert feed.stats.resyncs == {GAP_SEQUENCE: 1}
    assert not feed.books["BTC-USDT"].synced and feed.books["ETH-USDT"].synced
    assert book_levels(feed, "ETH-USDT") == eth.levels()
    assert [e.symbol for e in events if isinstance(e, Gap)] == ["BTC-USDT"]


def test_a_crossed_snapshot_is_refused_without_a_gap():
    feed, events = make_feed()
    snap = deprecated(DOC_SNAPSHOT)
    snap["data"][0]["bids"].insert(0, ["8480", "1", "0", "1"])
    deliver(feed, snap)
    assert feed.stats.resyncs == {GAP_CROSSED: 1}
    assert not feed.books[SYM].synced and events == []


def test_a_push_missing_its_timestamp_resyncs_and_counts_malformed():
    feed, events = make_feed()
    stream = OkxBookStream(seed=9)
    deliver(feed, stream.snapshot())
    msg = stream.update()
    del msg["data"][0]["ts"]
    deliver(feed, msg)
    assert feed.stats.resyncs == {GAP_SEQUENCE: 1} and feed.stats.malformed == 1
    assert not any(isinstance(e, BookDelta) for e in events)


@pytest.mark.parametrize("level", [["abc", "1", "0", "1"], ["100.5"], "oops"])
def test_an_unparsable_level_resyncs_and_never_raises(level):
    feed, _ = make_feed()
    stream = OkxBookStream(seed=4)
    deliver(feed, stream.snapshot())
    msg = stream.update()
    msg["data"][0]["asks"].append(level)
    deliver(feed, msg)  # must not raise
    assert feed.stats.resyncs == {GAP_SEQUENCE: 1} and feed.stats.malformed == 1
    assert not feed.books[SYM].synced


@pytest.mark.parametrize("data", [
    b"", b"null", b"[]", b"{}", b"\xff\xfe", b'{"arg": {"channel": "nope"}, "data": []}',
    b'{"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update", "data": 5}',
    b'{"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "burst", "data": [{}]}',
    b'{"event": "subscribe", "arg": "books"}',
])
def test_malformed_frames_are_counted_and_never_raise(data):
    feed, events = make_feed()
    feed.handle_frame(data, 1, 1)
    assert feed.stats.malformed == 1 and events == []


def test_frames_for_unconfigured_instruments_are_ignored():
    feed, events = make_feed()
    deliver(feed, OkxBookStream("ETH-USDT", seed=1).snapshot())
    assert events == [] and feed.stats.malformed == 0
