"""The synthetic market and the fault book, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.replay.faults import FaultBook, venue_symbol
from supervisor.replay.market import Fmt, Market, fixed, spec_for
from tests.test_replay_support import RefBook, okx_checksum

STYLES = {"binance_spot": ("fixed", 8), "binance_derivatives": ("fixed", None),
          "okx": ("trim", None), "deribit": ("number", None)}


def market(venue: str, symbol: str, seed: int = 1) -> Market:
    return Market(venue, symbol, seed, *STYLES[venue])


def as_ref(m: Market) -> RefBook:
    bids, asks = m.top(100_000)
    ref = RefBook()
    ref.load([[m.price_text(t), m.size_text(n)] for t, n in bids],
             [[m.price_text(t), m.size_text(n)] for t, n in asks])
    return ref


def event_levels(m: Market, changes: list[tuple[int, int, bool]]) -> list[list[str]]:
    return [[m.price_text(t), m.size_text(n)] for t, n, _ in changes]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32),
       where=st.sampled_from([("binance_spot", "BTCUSDT"), ("binance_derivatives", "NKNUSDT"),
                              ("okx", "DOGE-USDT-SWAP"), ("deribit", "BTC-24SEP21-8000-P"),
                              ("deribit", "ETH-PERPETUAL"), ("okx", "ZZZ-USDT")]))
def test_book_never_crosses_and_keeps_at_least_100_levels_a_side(seed, where):
    m = market(*where, seed=seed)
    for _ in range(3000):
        m.next_book_event()
        bid, ask = m.best()
        assert bid < ask
        assert len(m.book.bids.keys) >= 100 and len(m.book.asks.keys) >= 100
        assert bid >= 1


def test_same_seed_gives_the_same_event_stream():
    a, b = market("okx", "BTC-USDT", 7), market("okx", "BTC-USDT", 7)
    for _ in range(500):
        ea, eb = a.next_book_event(), b.next_book_event()
        assert ea._replace(ts_ms=0) == eb._replace(ts_ms=0)
    assert a.top(200) == b.top(200)


def test_different_seeds_give_different_books():
    assert market("okx", "BTC-USDT", 1).top(50) != market("okx", "BTC-USDT", 2).top(50)


def test_events_applied_to_the_starting_book_rebuild_the_market_book():
    m = market("binance_derivatives", "ETHUSDT", 3)
    ref = as_ref(m)
    for _ in range(2000):
        ev = m.next_book_event()
        ref.apply(event_levels(m, ev.bids), event_levels(m, ev.asks))
        assert not ref.crossed()
    assert ref.top(1000) == as_ref(m).top(1000)


def test_binance_ids_count_changes_and_chain_events():
    m = market("binance_spot", "BTCUSDT")
    prev = m.next_book_event()
    for _ in range(500):
        ev = m.next_book_event()
        assert ev.first_id == prev.last_id + 1  # spot: U = previous u + 1
        assert ev.prev_last_id == prev.last_id  # USD-M: pu = previous u
        assert 1 <= ev.last_id - ev.first_id + 1 <= 3
        prev = ev


def test_rest_snapshot_is_straddled_by_the_next_event():
    m = market("binance_derivatives", "BTCUSDT")
    for _ in range(50):
        m.next_book_event()
        last, _, _ = m.rest_snapshot(1000)
        ev = m.next_book_event()
        assert ev.first_id <= last < ev.last_id  # spot U <= L+1 <= u and USD-M U <= L <= u


def test_rest_snapshot_plus_the_straddling_event_equals_the_book():
    m = market("binance_derivatives", "BTCUSDT", 5)
    for _ in range(100):
        m.next_book_event()
    last, bids, asks = m.rest_snapshot(1000)
    ref = RefBook()
    ref.load([[m.price_text(t), m.size_text(n)] for t, n in bids],
             [[m.price_text(t), m.size_text(n)] for t, n in asks])
    ev = m.next_book_event()
    ref.apply(event_levels(m, ev.bids), event_levels(m, ev.asks))
    assert ref.top(1000) == as_ref(m).top(1000)


def test_seq_steps_are_larger_than_one_and_a_reset_goes_down():
    m = market("okx", "BTC-USDT")
    prev = m.next_book_event()
    for _ in range(200):
        ev = m.next_book_event()
        assert ev.prev_seq == prev.seq and 2 <= ev.seq - prev.seq <= 9
        prev = ev
    reset = m.next_book_event(reset=True)
    assert reset.prev_seq == prev.seq and reset.seq < reset.prev_seq
    after = m.next_book_event()
    assert after.prev_seq == reset.seq and after.seq > reset.seq


def test_okx_checksum_matches_an_independent_crc32():
    m = market("okx", "BTC-USDT-SWAP", 9)
    for _ in range(100):
        m.next_book_event()
        assert m.okx_checksum() == okx_checksum(as_ref(m))


def test_prices_and_sizes_render_in_each_venue_style():
    assert fixed(12345, 2) == "123.45" and fixed(5, 3) == "0.005" and fixed(7, 0) == "7"
    assert Fmt(1, 2, "fixed", 8).render(12345) == "123.45000000"
    assert Fmt(1, 3, "trim").render(1500) == "1.5"
    assert Fmt(1, 3, "trim").render(2000) == "2"
    assert Fmt(5, 1, "number").render(60001) == "30000.5"
    assert Fmt(5, 1, "number").render(60000) == "30000.0"
    spec = spec_for("deribit", "BTC-PERPETUAL")
    assert (spec.price_decimals, spec.tick, spec.lot) == (1, 5, 10)  # tick 0.5, 10 USD lots


def test_huge_book_levels_lie_beyond_the_book_and_do_not_cross():
    m = market("binance_spot", "BTCUSDT")
    bids, asks = m.far_levels(5000)
    assert len(bids) == len(asks) == 5000
    assert max(t for t, _ in bids) < -m.book.bids.keys[-1]
    assert min(t for t, _ in asks) > m.book.asks.keys[-1]


# ----- the fault book -------------------------------------------------------------------
def test_fault_fires_count_times_and_every_firing_is_counted():
    book = FaultBook()
    book.inject("okx", "drop", count=2)
    assert "okx" in book.armed
    assert book.take("okx", "drop", "BTC-USDT") is not None
    assert book.take("okx", "drop", "ETH-USDT") is not None
    assert book.take("okx", "drop", "BTC-USDT") is None
    assert book.applied["okx"] == {"drop": 2}
    assert "okx" not in book.armed


def test_fault_symbol_accepts_normalized_or_venue_ids_and_filters():
    book = FaultBook()
    book.inject("binance_derivatives", "drop", symbol="BTC-USDT-PERP")
    assert book.take("binance_derivatives", "drop", "ETHUSDT") is None
    assert book.take("binance_derivatives", "drop", "BTCUSDT") is not None
    assert venue_symbol("okx", "BTC-USDT-PERP") == "BTC-USDT-SWAP"
    assert venue_symbol("deribit", "BTC-USD-PERP") == "BTC-PERPETUAL"
    assert venue_symbol("deribit", "ETH-USDC-PERP") == "ETH_USDC-PERPETUAL"
    assert venue_symbol("binance_spot", "btcusdt") == "BTCUSDT"


def test_binance_fault_arms_both_binance_endpoints_and_instance_names_are_venues():
    book = FaultBook()
    book.inject("binance", "stall", seconds=1)
    assert book.armed == {"binance_spot", "binance_derivatives"}
    fault = book.take("binance_derivatives", "stall", "BTCUSDT")
    assert fault is not None and fault.params == {"seconds": 1.0}
    assert book.applied["binance_derivatives"] == {"stall": 1}
    book.inject("okx_spot", "disconnect")
    book.inject("deribit_derivatives", "disconnect")
    assert book.armed == {"okx", "deribit"}


@pytest.mark.parametrize("venue,kind,params", [
    ("kraken", "drop", {}), ("okx", "explode", {}), ("okx", "drop", {"count": 0}),
    ("okx", "stall", {"seconds": -1}), ("okx", "malformed", {"mode": "xml"}),
    ("binance_spot", "reset", {}), ("deribit", "bad_checksum", {})])
def test_fault_book_rejects_bad_faults(venue, kind, params):
    with pytest.raises(ValueError):
        FaultBook().inject(venue, kind, **params)


def test_clear_disarms_everything():
    book = FaultBook()
    book.inject("okx", "drop")
    book.inject("deribit", "stall")
    assert book.clear() == 2 and not book.armed and not book.faults


def test_the_text_cache_is_bounded_and_cleared_in_place(monkeypatch):
    import supervisor.replay.market as market

    monkeypatch.setattr(market, "FMT_CACHE_MAX", 8)
    fmt = Fmt(1, 2, "fixed")
    held = fmt.cache  # what the venue renderers keep a reference to
    for n in range(20):
        assert fmt.render(n) == f"{n / 100:.2f}"
        assert len(held) <= 8 and held[n] == fmt.render(n)
    assert fmt.cache is held
