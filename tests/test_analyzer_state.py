"""Analyzer state: books from int64 mantissas, the chain rule, scalar record readers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import codec
from supervisor.analyzer.state import (
    APPLY,
    CROSSED,
    GAP,
    LOCKED,
    NO_BOOK,
    NORMAL,
    STALE,
    BookState,
    delta_verdict,
    read_scalar,
    read_trade,
)
from supervisor.book import OrderBook
from supervisor.events import (
    BookDelta,
    BookSnapshot,
    Funding,
    Gap,
    Kind,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
    VolatilityIndex,
)

ENC = codec.Encoder()


def record(event):
    kind, view = ENC.encode(event)
    return codec.BookRecord(kind, bytes(view))


def load(book: BookState, ev: BookSnapshot) -> int:
    r = record(ev)
    return book.load_record(r.levels, r.n_bids, r.price_exp, r.size_exp, r.seq)


def apply(book: BookState, ev: BookDelta) -> int:
    r = record(ev)
    return book.apply_record(r.levels, r.n_bids, r.price_exp, r.size_exp, r.seq)


def snap(bids, asks, seq=1):
    return BookSnapshot("X", seq, 0, 0, 0, bids, asks)


def delta(bids, asks, seq=2, prev=1):
    return BookDelta("X", seq, 0, 0, 0, prev, bids, asks)


def sides(book: BookState) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return book.levels()


def test_a_price_has_one_key_whatever_exponent_its_record_used():
    book = BookState()
    load(book, snap([["43250.1", "1"]], [["43250.3", "2"]]))  # price exponent -1
    apply(book, delta([["43250.1", "5"], ["43250.15", "1"]], []))  # exponent -2
    assert sides(book)[0] == [(43250.15, 1.0), (43250.1, 5.0)]
    apply(book, delta([["43250.10", "0"]], [], seq=3, prev=2))  # removes the first level
    assert sides(book)[0] == [(43250.15, 1.0)]


def test_size_zero_removes_and_removing_an_absent_level_is_harmless():
    book = BookState()
    load(book, snap([["10", "1"], ["9", "2"]], [["11", "1"]]))
    assert apply(book, delta([["10", "0"], ["8", "0"]], [])) == 0
    assert sides(book) == ([(9.0, 2.0)], [(11.0, 1.0)])


def test_negative_sizes_are_counted_and_skipped_zero_in_a_snapshot_too():
    book = BookState()
    assert load(book, snap([["10", "1"], ["9", "0"]], [["11", "-1"]])) == 2
    assert sides(book) == ([(10.0, 1.0)], [])
    assert apply(book, delta([["10", "-3"]], [["12", "2"]])) == 1
    assert sides(book) == ([(10.0, 1.0)], [(12.0, 2.0)])


def test_cross_state_tells_crossed_locked_and_normal_apart():
    book = BookState()
    load(book, snap([["10", "1"]], [["11", "1"]]))
    assert book.cross_state() == NORMAL
    apply(book, delta([["11", "1"]], []))
    assert book.cross_state() == LOCKED
    apply(book, delta([["11.5", "1"]], [], seq=3, prev=2))
    assert book.cross_state() == CROSSED
    assert (book.best_bid(), book.best_ask()) == (11.5, 11.0)


def test_text_and_mantissa_paths_build_the_same_book():
    a, b = BookState(), BookState()
    bids, asks = [["0.35210000", "672.5"], ["0.3520", "1144"]], [["0.3522", "1e-3"]]
    load(a, snap(bids, asks))
    b.load_text(bids, asks, 1)
    assert sides(a) == sides(b)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 3),
                          st.integers(0, 4)), min_size=1, max_size=60))
def test_books_equal_the_reference_order_book_after_any_deltas(ops):
    """Random deltas, prices written with 1..4 decimals, against supervisor.book.OrderBook."""
    ref = OrderBook("X")
    book = BookState()
    bids = [[f"{100 - i}.5", "1"] for i in range(5)]
    asks = [[f"{200 + i}.5", "1"] for i in range(5)]
    ref.load(bids, asks, 1)
    load(book, snap(bids, asks))
    for n, (is_bid, tick, size, decimals) in enumerate(ops):
        base = Decimal(100 if is_bid else 200) + (-1 if is_bid else 1) * Decimal(tick) / 10
        price = f"{base:.{decimals + 1}f}"
        level = [[price, str(size)]]
        ev = delta(level if is_bid else [], [] if is_bid else level, seq=n + 2, prev=n + 1)
        ref.apply(ev.bids, ev.asks, ev.seq)
        apply(book, ev)
    want_bids = [(float(lv[0]), float(lv[1])) for lv in ref.bids.top(len(ref.bids))]
    want_asks = [(float(lv[0]), float(lv[1])) for lv in ref.asks.top(len(ref.asks))]
    assert sides(book) == (want_bids, want_asks)


def test_delta_verdicts_follow_the_prev_seq_chain():
    assert delta_verdict(False, 0, 5, 6) == NO_BOOK
    assert delta_verdict(True, 5, 5, 9) == APPLY  # ids need not be contiguous (OKX)
    assert delta_verdict(True, 9, 3, 7) == STALE  # before the snapshot we were seeded from
    assert delta_verdict(True, 9, 9 - 1, 9) == STALE
    assert delta_verdict(True, 9, 10, 12) == GAP


SCALARS = [
    Trade("BTC-USDT", 7, 1, 2, 3, "abc", "sell", "43250.15", "0.001"),
    Funding("BTC-USDT-PERP", 0, 1, 2, 3, "-0.00012", 99, "43251.5"),
    Funding("BTC-USDT-PERP", 0, 1, 2, 3, "0.0001", 0, ""),
    OpenInterest("BTC-USDT-PERP", 0, 1, 2, 3, "12345.6", ""),
    Liquidation("BTC-USDT-PERP", 0, 1, 2, 3, "buy", "43000", "1.5"),
    LongShortRatio("BTC-USDT-PERP", 0, 1, 2, 3, "1.2345", "5m"),
    VolatilityIndex("BTC-DVOL", 0, 1, 2, 3, "87.65"),
    Gap("BTC-USDT", 41, 1, 2, 3, "sequence_gap", "U=5 > 3"),
]


def test_scalar_reader_agrees_with_the_codec_for_every_kind():
    for ev in SCALARS:
        kind, view = ENC.encode(ev)
        payload = bytes(view)
        symbol, seq, ts_ex, ts_rx, mono, values = read_scalar(kind, payload)
        decoded = codec.decode(kind, payload)
        assert (symbol, seq, ts_ex, ts_rx, mono) == tuple(decoded[:5])
        want = [(float(v) if v else None) if isinstance(v, str) and f not in
                ("trade_id", "side", "period", "reason", "detail") else v
                for f, v in zip(decoded._fields[5:], decoded[5:], strict=True)]
        assert values == want, Kind(kind).name


def test_trade_fast_path_reads_side_price_and_size():
    kind, view = ENC.encode(SCALARS[0])
    assert read_trade(bytes(view)) == ("BTC-USDT", 7, 1, 2, 3, False, 43250.15, 0.001)
    kind, view = ENC.encode(SCALARS[0]._replace(side="buy"))
    assert read_trade(bytes(view))[5] is True


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**14) + 1, 10**14 - 1), st.integers(0, 22), st.integers(0, 4))
def test_a_mantissa_key_is_the_double_of_the_decimal_text(mantissa, decimals, pad):
    """The kernel's key for mantissa * 10^-decimals is float() of the same decimal string,
    whatever exponent the record used (the value padded with trailing zeros)."""
    text = f"{Decimal(mantissa).scaleb(-decimals):f}"
    book = BookState()
    size = 10**pad
    book.load_record([abs(mantissa) * 10**pad, size], 1, -(decimals + pad), -pad, 1)
    assert book.levels()[0] == [(abs(float(text)), 1.0)]


def test_a_book_grows_past_its_first_allocation_and_shrinks_back():
    book = BookState()
    n = 5000
    levels = [v for i in range(n) for v in (10_000 + i, 1)]  # ascending asks, bids below
    book.load_record([v for i in range(n) for v in (9_999 - i, 2)] + levels, n, 0, 0, 1)
    assert book.level_count() == 2 * n
    assert (book.best_bid(), book.best_ask()) == (9999.0, 10000.0)
    assert book.depth(0, 10) == 20.0 and book.depth(1, 10 * n) == float(n)
    removals = [v for i in range(0, n, 2) for v in (10_000 + i, 0)]
    assert book.apply_record(removals, 0, 0, 0, 2) == 0
    assert book.level_count() == n + n // 2
    assert book.levels()[1][:2] == [(10001.0, 1.0), (10003.0, 1.0)]


def test_text_levels_that_are_not_finite_numbers_are_counted_not_applied():
    book = BookState()
    assert book.load_text([["10", "1"], ["nan", "1"], ["9", "inf"]], [["11", "1"]], 1) == 2
    assert book.apply_text([["inf", "2"]], [["-inf", "1"], ["12", "nan"]], 2) == 3
    assert sides(book) == ([(10.0, 1.0)], [(11.0, 1.0)])
    with pytest.raises(ValueError):
        book.apply_text([["ten", "1"]], [], 3)
    with pytest.raises(IndexError):
        book.apply_text([["10"]], [], 3)


def test_levels_come_from_any_int64_buffer():
    from array import array

    book = BookState()
    raw = array("q", [105, 2, 110, 3]).tobytes()
    assert book.load_record(raw, 1, -1, 0, 7) == 0
    assert sides(book) == ([(10.5, 2.0)], [(11.0, 3.0)])
    assert book.apply_record(memoryview(raw).cast("q")[2:], 0, -1, 0, 8) == 0
    assert book.seq == 8 and book.valid
    book.invalidate()
    assert not book.valid and book.level_count() == 0 and book.cross_state() == NORMAL


def test_level_counts_that_do_not_add_up_are_a_clear_error():
    book = BookState()
    with pytest.raises(ValueError, match="bad book record"):
        book.apply_record([105, 2], 2, 0, 0, 1)  # says 2 bids, carries 1 level
    assert book.level_count() == 0
