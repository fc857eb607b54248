"""Every data-quality check fires on data that breaks it, and stays silent on good data,
including the shared real recordings run through the real adapters."""

from __future__ import annotations

import logging
import random

import pytest

from supervisor.analyzer.quality import CHECKS
from supervisor.events import BookDelta, BookSnapshot, OpenInterest, Trade
from tests.test_analyzer_support import NS, T0, docs_of, feed, make_engine, recordings


def snap(symbol="X", seq=1, ts=T0, bids=(("100", "1"),), asks=(("101", "1"),), ts_ex=None):
    return BookSnapshot(symbol, seq, T0 if ts_ex is None else ts_ex, ts, 0,
                        [list(b) for b in bids], [list(a) for a in asks])


def delta(seq, bids=(), asks=(), ts=T0, symbol="X", ts_ex=None):
    return BookDelta(symbol, seq, ts if ts_ex is None else ts_ex, ts, 0, seq - 1,
                     [list(b) for b in bids], [list(a) for a in asks])


def trade(ts, price, symbol="X", ts_ex=None):
    return Trade(symbol, 0, ts if ts_ex is None else ts_ex, ts, 0, "1", "buy", price, "1")


def counts(eng):
    return {c: n for c, n in eng.quality.totals.items() if n}


# ----- time gaps -----------------------------------------------------------------------------
def test_time_gap_fires_when_a_symbol_is_silent_longer_than_the_bound():
    eng = make_engine(time_gap=60)
    feed(eng, [trade(T0, "100"), trade(T0 + 61 * NS, "100"), trade(T0 + 62 * NS, "100")])
    assert counts(eng) == {"time_gap": 1}
    assert eng.quality.counts["time_gap"] == {"X": 1}


def test_time_gap_stays_silent_within_the_bound_and_across_symbols():
    eng = make_engine(time_gap=60)
    feed(eng, [trade(T0, "100"), trade(T0 + 59 * NS, "100"),
               trade(T0 + 100 * NS, "100", symbol="Y")])  # Y's first event: no gap
    assert counts(eng) == {}


# ----- crossed / locked ----------------------------------------------------------------------
def test_crossed_book_counts_episodes_not_updates():
    eng = make_engine()
    feed(eng, [snap(), delta(2, bids=[("101.5", "1")]), delta(3, bids=[("101.2", "1")]),
               delta(4, bids=[("101.5", "0"), ("101.2", "0")]),  # uncrossed
               delta(5, asks=[("99", "1")])])  # crossed again
    assert counts(eng) == {"crossed_book": 2}
    assert eng.quality.to_dict()["crossed"] == ["X"]


def test_locked_book_fires_when_best_bid_equals_best_ask():
    eng = make_engine()
    feed(eng, [snap(), delta(2, bids=[("101", "2")])])
    assert counts(eng) == {"locked_book": 1}


def test_normal_books_are_neither_crossed_nor_locked():
    eng = make_engine()
    feed(eng, [snap(), delta(2, bids=[("100.5", "2")]), delta(3, asks=[("100.6", "2")])])
    assert counts(eng) == {}


# ----- sizes ---------------------------------------------------------------------------------
def test_nonpositive_sizes_count_every_bad_level():
    eng = make_engine()
    feed(eng, [snap(bids=[("100", "0"), ("99", "-1"), ("98", "1")]),
               delta(2, asks=[("102", "-5")])])
    assert counts(eng) == {"nonpositive_size": 3}


def test_size_zero_in_a_delta_is_a_removal_not_a_violation():
    eng = make_engine()
    feed(eng, [snap(bids=[("100", "1"), ("99", "1")]), delta(2, bids=[("100", "0")])])
    assert counts(eng) == {}


# ----- price jumps ---------------------------------------------------------------------------
def random_walk(n, start=100.0, tick=0.01, seed=7):
    rng = random.Random(seed)
    price = start
    out = []
    for _ in range(n):
        price += rng.choice((-1, 1)) * tick * rng.randint(1, 3)
        out.append(f"{price:.2f}")
    return out


def test_price_jump_fires_on_a_trade_far_beyond_the_recent_volatility():
    eng = make_engine(jump_sigma=8, jump_min_samples=50, jump_min_move=0.002)
    prices = random_walk(200)
    jump = f"{float(prices[-1]) * 1.05:.2f}"
    feed(eng, [trade(T0 + i * NS // 10, p) for i, p in enumerate([*prices, jump])])
    assert counts(eng) == {"price_jump": 1}


def test_price_jump_fires_on_the_mid():
    eng = make_engine(jump_sigma=8, jump_min_samples=50)
    events = [snap(bids=[("99.99", "1")], asks=[("100.01", "1")])]
    bid = 9999
    for seq in range(2, 200):
        new = bid + random.Random(seq).choice((-1, 1))
        events.append(delta(seq, bids=[(f"{new / 100:.2f}", "1"), (f"{bid / 100:.2f}", "0")],
                            asks=[(f"{(new + 2) / 100:.2f}", "1"), (f"{(bid + 2) / 100:.2f}",
                                                                     "0")]))
        bid = new
    up = round(bid * 1.1)  # +10 %, the old best levels removed in the same update
    events.append(delta(200, bids=[(f"{up / 100:.2f}", "1"), (f"{bid / 100:.2f}", "0")],
                        asks=[(f"{(up + 2) / 100:.2f}", "1"), (f"{(bid + 2) / 100:.2f}", "0")]))
    feed(eng, events)
    assert counts(eng) == {"price_jump": 1}


def test_price_jump_stays_silent_on_a_random_walk_and_before_it_is_armed():
    eng = make_engine(jump_sigma=8, jump_min_samples=50)
    feed(eng, [trade(T0 + i * NS // 10, p) for i, p in enumerate(random_walk(2000))])
    # 10 % moves, but only 20 returns seen: not armed yet
    feed(eng, [trade(T0 + i * NS, f"{100 * 1.1 ** (i % 2):.2f}", symbol="Y")
               for i in range(21)])
    assert counts(eng) == {}


# ----- stale symbols -------------------------------------------------------------------------
def test_stale_symbol_fires_once_per_episode_while_others_keep_updating():
    eng = make_engine(stale_after=30, time_gap=1000)
    feed(eng, [trade(T0, "1", symbol="A"), trade(T0, "1", symbol="B"),
               trade(T0 + 31 * NS, "1", symbol="B")])
    q = eng.quality
    assert q.check_stale(q.clock) == ["A"]
    assert q.check_stale(q.clock + NS) == []  # still the same episode
    feed(eng, [trade(T0 + 32 * NS, "1", symbol="A")], first_seq=4)
    assert q.to_dict()["stale"] == []
    assert q.check_stale(T0 + 63 * NS) == ["A", "B"]
    assert counts(eng) == {"stale_symbol": 3}


def test_configured_symbols_that_never_update_go_stale():
    eng = make_engine(stale_after=30)
    eng.quality.expect(("A", "B"), T0)
    feed(eng, [trade(T0 + 40 * NS, "1", symbol="A")])
    assert eng.quality.check_stale(T0 + 40 * NS) == ["B"]


def test_stale_stays_silent_while_every_symbol_updates():
    eng = make_engine(stale_after=30)
    feed(eng, [trade(T0 + s * NS, "1", symbol=sym) for s in range(0, 100, 10) for sym in "AB"])
    assert eng.quality.check_stale(eng.quality.clock) == []
    assert counts(eng) == {}


# ----- clock skew ----------------------------------------------------------------------------
def test_clock_skew_fires_both_ways_beyond_the_bound():
    eng = make_engine(clock_skew=5)
    feed(eng, [trade(T0, "1", ts_ex=T0 - 6 * NS), trade(T0 + NS, "1", ts_ex=T0 + 7 * NS),
               trade(T0 + 2 * NS, "1", ts_ex=T0 + 1 * NS)])
    assert counts(eng) == {"clock_skew": 2}


def test_clock_skew_ignores_snapshots_and_rest_polled_kinds():
    eng = make_engine(clock_skew=5)
    old = T0 - 300 * NS
    feed(eng, [snap(ts_ex=old), OpenInterest("X", 0, old, T0, 0, "5", ""),
               delta(2, bids=[("99", "1")], ts_ex=T0 - NS)])
    assert counts(eng) == {}


# ----- cross-symbol misalignment ----------------------------------------------------------
def test_misalignment_flags_the_symbol_whose_offset_leaves_the_median():
    eng = make_engine(misalignment=2)
    events = []
    for i in range(100):
        ts = T0 + i * NS
        events += [trade(ts, "1", symbol="A", ts_ex=ts - NS // 10),
                   trade(ts, "1", symbol="B", ts_ex=ts - NS // 5),
                   trade(ts, "1", symbol="C", ts_ex=ts - 4 * NS)]  # replaying 4 s late
    feed(eng, events)
    assert eng.quality.check_alignment() == ["C"]
    assert eng.quality.check_alignment() == []  # same episode
    assert counts(eng) == {"misalignment": 1}


def test_misalignment_stays_silent_when_offsets_agree():
    eng = make_engine(misalignment=2)
    feed(eng, [trade(T0 + i * NS, "1", symbol=s, ts_ex=T0 + i * NS - NS // 2 - k * NS // 10)
               for i in range(50) for k, s in enumerate("ABC")])
    assert eng.quality.check_alignment() == []
    assert counts(eng) == {}


# ----- logging -------------------------------------------------------------------------------
def test_violations_are_logged_once_per_interval_with_a_count_of_the_rest(caplog):
    now = [0.0]
    eng = make_engine(time_gap=1, log_interval=10)
    eng.quality._monotonic = lambda: now[0]
    with caplog.at_level(logging.WARNING):
        feed(eng, [trade(T0 + i * 2 * NS, "1") for i in range(6)])  # 5 gaps
        lines = [r.message for r in caplog.records if "quality" in r.message]
        assert len(lines) == 1 and "time_gap X: no update for 2.000s" in lines[0]
        now[0] = 11.0
        eng.quality.flush_logs()
    lines = [r.message for r in caplog.records if "quality" in r.message]
    assert lines[-1] == "quality: time_gap X: 4 more since the last report"
    assert eng.quality.counts["time_gap"] == {"X": 5}


# ----- the real recordings -----------------------------------------------------------------
RECORDINGS = recordings()
# Tighter than the defaults, so the silence is not owed to slack bounds: the recordings' own
# extremes are a 19 s silence (RUNE-EUR), 0.93 s receive-exchange skew (SUSHI-USDT-PERP),
# and 53 mid / 34 trade returns on the busiest symbol.
STRICT = dict(time_gap=30, stale_after=30, clock_skew=2, misalignment=0.5, jump_min_samples=5)


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_every_check_stays_silent_on_the_real_recordings_from_the_ring(name):
    events = RECORDINGS[name]
    eng = make_engine(**STRICT)
    feed(eng, events)
    q = eng.quality
    q.check_stale(q.clock)
    q.check_alignment()
    assert counts(eng) == {}
    assert (eng.sequence_gaps, eng.no_book, eng.lost) == (0, 0, 0)
    books = [a for a in eng.symbols.values() if a.book.valid]
    assert books and all(a.book.cross_state() == 0 for a in books)


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_every_check_stays_silent_on_the_real_recordings_from_zeromq(name):
    eng = make_engine(**STRICT)
    eng.process_docs(docs_of(RECORDINGS[name]))
    eng.quality.check_stale(eng.quality.clock)
    eng.quality.check_alignment()
    assert counts(eng) == {}
    assert (eng.sequence_gaps, eng.no_book) == (0, 0)


def test_the_recordings_arm_every_check_so_their_silence_means_something():
    kinds = {type(e).__name__ for evs in RECORDINGS.values() for e in evs}
    assert {"BookSnapshot", "BookDelta", "Trade", "OpenInterest"} <= kinds
    eng = make_engine(**STRICT)
    feed(eng, RECORDINGS["BINANCE_FUTURES"])
    sq = eng.quality.symbols["SUSHI-USDT-PERP"]
    assert sq.mid_jumps.n >= 50 and sq.trade_jumps.n >= 30  # the jump check was armed
    assert len([s for s in eng.quality.symbols.values() if s.offset_ts]) == 4  # 4 offsets
    assert len(CHECKS) == 8
