"""Ring and JSON encodings of normalized events: exact round trips, documented layout."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import codec, jsonlib
from supervisor.events import (
    BookDelta,
    BookSnapshot,
    Funding,
    Gap,
    Kind,
    LongShortRatio,
    OpenInterest,
    Trade,
    VolatilityIndex,
)

HDR = ("BTC-USDT", 42, 1_700_000_000_000_000_000, 1_700_000_000_000_100_000, 123_456_789)


def same_levels(a, b):
    return [[Decimal(p), Decimal(q)] for p, q, *_ in a] == [[Decimal(p), Decimal(q)] for p, q in b]


def roundtrip(event):
    kind, view = codec.Encoder().encode(event)
    return kind, codec.decode(kind, bytes(view))


def test_book_delta_round_trips_exactly_with_mixed_decimals():
    bids = [["7.6110", "6"], ["7.608", "161"], ["0.00000001", "1e-05"]]
    asks = [["7.6150", "1563.5"], ["100000.12345678", "0"]]
    kind, back = roundtrip(BookDelta(*HDR, 41, bids, asks))
    assert kind == Kind.BOOK_DELTA
    assert back[:6] == HDR + (41,)
    assert same_levels(bids, back.bids) and same_levels(asks, back.asks)


def test_okx_four_field_levels_keep_price_and_size_only():
    bids = [["8476.98", "415", "0", "13"]]
    asks = [["8477", "7", "0", "2"], ["8477.5", "1.25", "0", "1"]]
    _, back = roundtrip(BookSnapshot(*HDR, bids, asks))
    assert same_levels(bids, back.bids) and same_levels(asks, back.asks)
    assert all(len(level) == 2 for level in back.bids + back.asks)


def test_empty_book_sides_encode():
    _, back = roundtrip(BookSnapshot(*HDR, [], []))
    assert back.bids == [] and back.asks == []


def test_book_record_view_exposes_int_mantissas():
    enc = codec.Encoder()
    kind, view = enc.encode(BookDelta(*HDR, 41, [["7.61", "6"]], [["7.615", "0.5"]]))
    rec = codec.BookRecord(kind, bytes(view))
    assert (rec.price_exp, rec.size_exp) == (-3, -1)
    assert list(rec.levels) == [7610, 60, 7615, 5]
    assert (rec.n_bids, rec.n_asks, rec.prev_seq, rec.symbol) == (1, 1, 41, "BTC-USDT")


def test_non_decimal_level_is_rejected_with_codec_error():
    with pytest.raises(codec.CodecError):
        codec.Encoder().encode(BookDelta(*HDR, 41, [["abc", "1"]], []))


def test_value_beyond_int64_is_rejected():
    with pytest.raises(codec.CodecError):
        codec.Encoder().encode(BookDelta(*HDR, 41, [["99999999999999999999", "1"]], []))


@pytest.mark.parametrize("price", ["1e", "1e+", "1e-", "1e99999999999", "1e-400"])
def test_bad_or_huge_exponents_are_rejected(price):
    with pytest.raises(codec.CodecError):
        codec.Encoder().encode(BookDelta(*HDR, 41, [[price, "1"]], []))


@pytest.mark.parametrize("event", [
    Trade(*HDR, "123456", "buy", "29000.10", "0.0015"),
    Funding(*HDR, "-0.00012500", 1_700_000_000_000_000_000, "29001.2"),
    Funding(*HDR, "0.0001", 0, ""),
    OpenInterest(*HDR, "123456.789", ""),
    Gap(*HDR, "sequence_gap", "expected pu=5 got 7"),
    LongShortRatio(*HDR, "1.2345", "5m"),
    VolatilityIndex("BTC-DVOL", 0, 1, 2, 3, "55.12"),
])
def test_scalar_kinds_round_trip(event):
    _, back = roundtrip(event)
    assert type(back) is type(event)
    types = ("i",) * 5 + codec._FIELDS[codec.KIND_OF[type(event)]]
    for ftype, a, b in zip(types, event, back, strict=True):
        if ftype == "d" and a:
            assert Decimal(a) == Decimal(b)
        else:
            assert a == b


def test_json_encoding_names_type_and_instance():
    doc = jsonlib.loads(codec.to_json("okx_spot", Trade(*HDR, "7", "sell", "1.50", "2")))
    assert doc["type"] == "trade" and doc["instance"] == "okx_spot"
    assert doc["price"] == "1.50" and doc["seq"] == 42
    trade = Trade(*HDR, "7", "sell", "1.5", "2")
    assert codec.topic("okx_spot", trade) == b"okx_spot/trade/BTC-USDT"


decimals = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("9999999"),
                       places=8, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(decimals, decimals), max_size=40),
       st.lists(st.tuples(decimals, decimals), max_size=40))
def test_any_decimal_levels_round_trip_exactly(bids, asks):
    bids = [[str(p.normalize()), str(q)] for p, q in bids]
    asks = [[str(p), str(q.normalize())] for p, q in asks]
    _, back = roundtrip(BookDelta(*HDR, 1, bids, asks))
    assert same_levels(bids, back.bids) and same_levels(asks, back.asks)


@given(st.integers(min_value=-(10**17), max_value=10**17), st.integers(min_value=-18, max_value=0))
def test_format_and_parse_decimal_are_inverse(m, e):
    text = codec.format_decimal(m, e)
    pm, pe = codec.parse_decimal(text)
    assert Decimal(pm).scaleb(pe) == Decimal(m).scaleb(e)


def test_book_rejects_non_finite_prices():
    from supervisor.book import OrderBook

    book = OrderBook("X")
    with pytest.raises(ValueError, match="non-finite"):
        book.load([["nan", "1"]], [], 1)
    book.load([["1", "1"]], [["2", "1"]], 1)
    with pytest.raises(ValueError, match="non-finite"):
        book.apply([["inf", "1"]], [], 2)
    assert book.top(5) == ([["1", "1"]], [["2", "1"]])  # the bad delta left no trace
