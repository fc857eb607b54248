"""Built-in analysis figures, computed through the engine from encoded records."""

from __future__ import annotations

import math

import pytest
import zmq

from supervisor.analyzer.output import ResultPublisher
from supervisor.events import BookDelta, BookSnapshot, Funding, Liquidation, OpenInterest, Trade
from tests.test_analyzer_support import NS, T0, feed, make_engine


def book(symbol="BTC-USDT", seq=1, ts=T0):
    return BookSnapshot(symbol, seq, ts, ts, 0,
                        [["100", "3"], ["99.5", "1"], ["99", "6"]],
                        [["101", "1"], ["101.5", "2"], ["102", "4"]])


def trade(ts, price, size, side="buy", symbol="BTC-USDT"):
    return Trade(symbol, 0, ts, ts, 0, "1", side, price, size)


def test_book_figures_mid_spread_microprice_and_top_n_imbalance():
    eng = make_engine(depth_levels=2)
    feed(eng, [book()])
    r = eng.result(eng.symbols["BTC-USDT"])
    assert (r["best_bid"], r["best_ask"], r["mid"], r["spread"]) == (100.0, 101.0, 100.5, 1.0)
    assert r["spread_bps"] == pytest.approx(1 / 100.5 * 1e4)
    # microprice weights each side's price by the other side's size: (100*1 + 101*3) / 4
    assert r["microprice"] == pytest.approx(100.75)
    # top 2: bids 3 + 1, asks 1 + 2
    assert r["imbalance"] == pytest.approx((4 - 3) / 7)
    assert r["book_valid"] and r["book_levels"] == 6
    assert r["ring_seq"] == 1 and r["instance"] == "test" and r["type"] == "analysis"


def test_book_figures_follow_deltas():
    eng = make_engine(depth_levels=1)
    feed(eng, [book(), BookDelta("BTC-USDT", 2, T0, T0, 0, 1, [["100", "0"]], [["100.5", "2"]])])
    r = eng.result(eng.symbols["BTC-USDT"])
    assert (r["best_bid"], r["best_ask"], r["imbalance"]) == (99.5, 100.5, pytest.approx(-1 / 3))


def test_trade_vwap_and_volume_over_each_rolling_window():
    eng = make_engine(windows=[1, 10])
    trades = [trade(T0, "100", "1"), trade(T0 + 5 * NS, "110", "3", "sell"),
              trade(T0 + 9_500_000_000, "120", "2")]
    feed(eng, trades)
    r = eng.result(eng.symbols["BTC-USDT"], now=T0 + 10 * NS)
    assert r["trades"]["1s"] == {"trades": 1, "volume": 2.0, "buy_volume": 2.0, "vwap": 120.0}
    # the first trade is exactly 10 s old: out of the 10 s window
    w10 = r["trades"]["10s"]
    assert (w10["trades"], w10["volume"], w10["buy_volume"]) == (2, 5.0, 2.0)
    assert w10["vwap"] == pytest.approx((110 * 3 + 120 * 2) / 5)
    r = eng.result(eng.symbols["BTC-USDT"], now=T0 + 30 * NS)
    assert r["trades"]["10s"] == {"trades": 0, "volume": 0.0, "buy_volume": 0.0, "vwap": None}
    assert r["last_trade"] == 120.0


def test_trade_windows_stay_exact_after_the_log_is_trimmed():
    eng = make_engine(windows=[1])
    trades = [trade(T0 + i * 10_000_000, "100", "0.1") for i in range(5000)]  # 50 s at 100/s
    feed(eng, trades)
    a = eng.symbols["BTC-USDT"]
    for step in range(1, 50):  # publish every second: the log is trimmed as it goes
        eng.result(a, now=T0 + step * NS)
    r = eng.result(a, now=T0 + 50 * NS - 1)
    assert r["trades"]["1s"]["trades"] == 100
    assert r["trades"]["1s"]["volume"] == pytest.approx(10.0, rel=1e-12)
    assert len(a.trades.starts) < 300  # 0.1 s buckets, trimmed: not 5000 trades


def test_realized_volatility_sums_squared_log_returns_of_sampled_mids():
    eng = make_engine(vol_sample=1, vol_window=10)
    mids = [100.0, 101.0, 100.0, 102.0, 103.0]
    events = []
    for i, m in enumerate(mids):  # one book per second, each on the sample grid
        ts = T0 + i * NS
        events.append(BookSnapshot("X", i + 1, ts, ts, 0, [[f"{m - 0.5}", "1"]],
                                   [[f"{m + 0.5}", "1"]]))
        # a second change within the same second is not sampled
        events.append(BookDelta("X", i + 101, ts, ts + NS // 2, 0, i + 1,
                                [[f"{m - 0.25}", "1"]], []))
    feed(eng, events)
    r = eng.result(eng.symbols["X"], now=T0 + 4 * NS)
    rets = [math.log(b / a) for a, b in zip(mids, mids[1:], strict=False)]
    assert r["realized_vol_samples"] == 4
    assert r["realized_vol"] == pytest.approx(math.sqrt(sum(x * x for x in rets)))
    # 10 s later the first three returns (at +1 s, +2 s, +3 s) left the window
    r = eng.result(eng.symbols["X"], now=T0 + 13 * NS)
    assert r["realized_vol_samples"] == 1
    assert r["realized_vol"] == pytest.approx(abs(rets[-1]))


def test_funding_and_open_interest_changes_since_previous_and_over_the_window():
    eng = make_engine(change_window=60)
    feed(eng, [Funding("X", 0, T0, T0, 0, "0.0001", 0, "100"),
               Funding("X", 0, T0, T0 + 30 * NS, 0, "0.0003", 0, "101"),
               Funding("X", 0, T0, T0 + 90 * NS, 0, "0.0002", 0, "102"),
               OpenInterest("X", 0, T0, T0, 0, "1000", ""),
               OpenInterest("X", 0, T0, T0 + 90 * NS, 0, "1100", "5500")])
    r = eng.result(eng.symbols["X"], now=T0 + 90 * NS)
    assert r["funding_rate"] == 0.0002 and r["mark_price"] == 102.0
    assert r["funding_rate_change"] == pytest.approx(-0.0001)
    # over 60 s: the oldest sample still inside is the one at +30 s
    assert r["funding_rate_change_window"] == pytest.approx(-0.0001)
    assert r["open_interest"] == 1100.0 and r["open_interest_change"] == 100.0
    assert r["open_interest_value"] == 5500.0


def test_liquidation_bursts_start_at_the_threshold_and_count_once_per_burst(caplog):
    eng = make_engine(liquidation_window=10, liquidation_burst=3)
    liqs = [Liquidation("X", 0, T0, T0 + s * NS, 0, "sell", "100", "2")
            for s in (0, 1, 2, 3, 30, 31, 32)]
    feed(eng, liqs)
    a = eng.symbols["X"]
    assert a.liq.bursts == 2
    r = eng.result(a, now=T0 + 32 * NS)
    assert r["liquidations"] == {"count": 3, "notional": 600.0, "burst": True, "bursts": 2}
    assert eng.result(a, now=T0 + 60 * NS)["liquidations"]["burst"] is False
    assert sum("liquidation burst" in rec.message for rec in caplog.records) == 2


def test_results_are_published_at_most_once_per_interval_per_symbol():
    ctx = zmq.Context()
    try:
        pub = ResultPublisher(ctx, "inproc://results", "test", interval=0.1)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"test/analysis/")
        sub.connect("inproc://results")
        eng = make_engine()
        feed(eng, [book("A"), book("B")])
        assert pub.publish_due(eng, now=100.0) == 2
        feed(eng, [BookDelta("A", 2, T0, T0, 0, 1, [["100", "4"]], [])], first_seq=3)
        assert pub.publish_due(eng, now=100.06) == 0  # A changed, but 60 ms after its last
        assert pub.publish_due(eng, now=100.11) == 1  # A only: B did not change
        assert pub.publish_due(eng, now=100.5) == 0
        topics = []
        while sub.poll(1000 if len(topics) < 3 else 10):
            topic, body = sub.recv_multipart()
            topics.append(topic)
        assert topics == [b"test/analysis/A", b"test/analysis/B", b"test/analysis/A"]
        pub.close()
        sub.close()
    finally:
        ctx.term()
