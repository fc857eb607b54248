"""The engine: losses, broken chains and re-seeding, upstream gaps, plug-in batches."""

from __future__ import annotations

import logging

import pytest

from supervisor.analyzer.engine import Engine
from supervisor.analyzer.settings import Settings
from supervisor.events import BookDelta, BookSnapshot, Gap, Kind, Trade
from tests.test_analyzer_support import (
    T0,
    FakeBatch,
    docs_of,
    feed,
    make_engine,
    recordings,
)


def snap(seq, bids=(("100", "1"),), asks=(("101", "1"),), symbol="X"):
    return BookSnapshot(symbol, seq, T0, T0, 0, [list(b) for b in bids], [list(a) for a in asks])


def delta(seq, prev, bids=(), asks=(), symbol="X"):
    return BookDelta(symbol, seq, T0, T0, 0, prev, [list(b) for b in bids],
                     [list(a) for a in asks])


def levels(eng, symbol="X"):
    return eng.symbols[symbol].book.levels()


def seeding_engine():
    requested: list[str] = []

    def request(symbol: str) -> bool:
        requested.append(symbol)
        return True

    eng = Engine("test", Settings(), logging.getLogger("test.engine"), request_seed=request)
    return eng, requested


def test_lost_records_are_counted_exactly_and_logged(caplog):
    eng = make_engine()
    eng.process_batch(FakeBatch(1, [snap(1)]))
    eng.process_batch(FakeBatch(42, [delta(2, 1, bids=[("99", "1")])], lost=40))
    assert (eng.lost, eng.overruns, eng.ring_seq) == (40, 1, 42)
    assert "lost 40 records (ring seq 2..41) before seq 42" in caplog.text


def test_a_broken_chain_invalidates_only_that_book_and_asks_for_a_seed():
    eng, requested = seeding_engine()
    feed(eng, [snap(1), snap(1, symbol="Y"), delta(5, 4, bids=[("99", "1")])])
    assert eng.sequence_gaps == 1 and requested == ["X"]
    assert not eng.symbols["X"].book.valid and eng.symbols["Y"].book.valid
    assert eng.result(eng.symbols["X"])["book_valid"] is False


def test_deltas_held_while_seeding_are_replayed_on_the_snapshot_and_stale_ones_dropped():
    eng, requested = seeding_engine()
    feed(eng, [delta(10, 9, bids=[("99", "5")]),  # no book yet: seed, hold
               delta(11, 10, asks=[("102", "1")]),
               delta(12, 11, bids=[("98", "1")])])
    assert requested == ["X"] and eng.no_book == 1
    # the snapshot already contains 10 and 11: only 12 applies on top of it
    eng.seed("X", 11, [["100", "1"], ["99", "5"]], [["101", "1"], ["102", "1"]])
    assert levels(eng) == ([(100.0, 1.0), (99.0, 5.0), (98.0, 1.0)],
                           [(101.0, 1.0), (102.0, 1.0)])
    assert eng.symbols["X"].book.seq == 12 and eng.seeds == 1
    feed(eng, [delta(13, 12, bids=[("98", "0")])], first_seq=4)
    assert levels(eng)[0] == [(100.0, 1.0), (99.0, 5.0)] and eng.sequence_gaps == 0


def test_a_reply_overtaken_by_the_streams_own_snapshot_is_ignored():
    eng, _ = seeding_engine()
    feed(eng, [delta(10, 9, bids=[("99", "5")]), snap(20, bids=[("97", "1")])])
    eng.seed("X", 15, [["50", "1"]], [["60", "1"]])
    assert levels(eng) == ([(97.0, 1.0)], [(101.0, 1.0)]) and eng.stale_seeds == 1


def test_a_gap_while_replaying_held_deltas_asks_again_and_keeps_the_rest():
    eng, requested = seeding_engine()
    feed(eng, [delta(10, 9), delta(12, 11), delta(13, 12)])  # 11 is missing
    eng.seed("X", 10, [["100", "1"]], [["101", "1"]])
    assert requested == ["X", "X"] and eng.sequence_gaps == 1
    assert [d[0] for d in eng.symbols["X"].pending] == [12, 13]


def test_an_upstream_gap_invalidates_the_book_until_the_next_snapshot():
    eng = make_engine()
    feed(eng, [snap(1), Gap("X", 1, 0, T0, 0, "sequence_gap", "U=9 > 2"),
               delta(2, 1, bids=[("99", "1")])])
    assert eng.upstream_gaps == {"sequence_gap": 1} and eng.no_book == 1
    assert not eng.symbols["X"].book.valid
    feed(eng, [snap(7), delta(8, 7, bids=[("99", "1")])], first_seq=4)
    assert levels(eng) == ([(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0)])


def test_without_a_snapshot_service_deltas_wait_for_the_rings_next_snapshot():
    eng = make_engine()
    feed(eng, [delta(2, 1), delta(3, 2), snap(3), delta(4, 3, asks=[("101", "0")])])
    assert eng.no_book == 2 and eng.sequence_gaps == 0
    assert levels(eng) == ([(100.0, 1.0)], [])


def test_only_the_plugins_kinds_are_decoded_with_their_ring_seqs():
    eng = make_engine()
    eng.plugin_kinds = frozenset({int(Kind.TRADE)})
    t1 = Trade("X", 1, T0, T0, 0, "a", "buy", "100.5", "2")
    t2 = Trade("Y", 2, T0, T0, 0, "b", "sell", "7", "0.001")
    eng.process_batch(FakeBatch(100, [snap(1), t1, delta(2, 1), t2]))
    events, seqs = eng.take_plugin_batch()
    assert events == [t1, t2] and seqs == [101, 103]
    assert eng.take_plugin_batch() == ([], [])


def test_latency_is_observed_once_per_batch():
    eng = make_engine()
    feed(eng, [snap(1), delta(2, 1), delta(3, 2)], batch=2)
    assert eng.latency.count == 2


@pytest.mark.parametrize("name", ["BINANCE_FUTURES", "DERIBIT"])
def test_ring_records_and_zeromq_documents_give_the_same_results(name):
    events = recordings()[name]
    ring, zmq_ = make_engine(), make_engine()
    feed(ring, events)
    zmq_.process_docs(docs_of(events))
    assert set(ring.symbols) == set(zmq_.symbols)
    for symbol, a in ring.symbols.items():
        want = ring.result(a)
        got = zmq_.result(zmq_.symbols[symbol])
        assert _close(got, want), symbol


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9)
    return a == b


def test_records_that_do_not_decode_are_counted_and_skipped_and_the_rest_applies(caplog):
    eng = make_engine()
    good = FakeBatch(1, [snap(1), delta(2, 1, bids=[("99", "1")]), delta(3, 2)])
    # record 2 cut short, and an unknown type id
    lengths = list(good.lengths)
    lengths[1] = 60
    types = list(good.types)
    types[2] = 77
    good.lengths, good.types = lengths, types
    assert eng.process_batch(good) == 3
    assert eng.malformed == 2 and eng.ring_seq == 3
    assert levels(eng) == ([(100.0, 1.0)], [(101.0, 1.0)])
    assert "malformed record at ring seq 2 (type 2) skipped: error: unpack_from" in caplog.text


def test_documents_that_do_not_decode_are_counted_and_a_half_applied_book_is_dropped():
    eng, requested = seeding_engine()
    docs = docs_of([snap(1), delta(2, 1, bids=[("99", "1"), ("98", "1")])])
    docs[1]["bids"][1][0] = "not a price"  # fails after the first level was applied
    docs.append({"type": "trade", "symbol": "X"})  # fields missing
    docs.append({"type": "no_such_type"})
    assert eng.process_docs(docs) == 1
    assert eng.malformed == 3 and not eng.symbols["X"].book.valid and requested == ["X"]
