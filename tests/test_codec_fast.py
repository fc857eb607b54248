"""The Encoder's fast paths (book deltas, trades) against its generic field-by-field path.

The ring's binary layout is documented in supervisor/codec.py; the fast paths must write
exactly the bytes the generic path writes, for every symbol length, text length and decimal
form, and fail the same way.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import codec
from supervisor.events import BookDelta, Funding, Trade

HDR = (1_700_000_000_000_000_000, 1_700_000_000_000_100_000, 123_456_789)
decimals = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.tuples(st.integers(0, 10**9), st.integers(0, 10**8), st.integers(1, 10)).map(
        lambda t: f"{t[0]}.{str(t[1]).zfill(t[2])[:t[2]]}"),
)
symbols = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789", min_size=1, max_size=40)


def generic(event) -> tuple[int, bytes] | str:
    try:
        kind, view = codec.Encoder()._encode_any(event)
    except codec.CodecError:
        return "refused"  # e.g. levels whose common scale overflows int64
    return kind, bytes(view)


def fast(enc: codec.Encoder, event) -> tuple[int, bytes] | str:
    try:
        kind, view = enc.encode(event)
    except codec.CodecError:
        return "refused"
    return kind, bytes(view)


@given(symbols, st.integers(0, 2**63 - 1), st.text(max_size=30),
       st.sampled_from(["buy", "sell", ""]), decimals, decimals)
def test_trade_fast_path_writes_the_generic_bytes(symbol, seq, trade_id, side, price, size):
    event = Trade(symbol, seq, *HDR, trade_id, side, price, size)
    enc = codec.Encoder()
    got = fast(enc, event)
    assert got == generic(event)
    assert fast(enc, event) == got  # again, from the caches
    if got != "refused":  # e.g. "999999999.0000000001": a mantissa beyond int64
        assert codec.decode(*got).trade_id == trade_id


@given(symbols, st.lists(st.tuples(decimals, decimals), max_size=5),
       st.lists(st.tuples(decimals, decimals), max_size=5))
def test_delta_fast_path_writes_the_generic_bytes(symbol, bids, asks):
    event = BookDelta(symbol, 42, *HDR, 41, [list(b) for b in bids], [list(a) for a in asks])
    enc = codec.Encoder()
    assert fast(enc, event) == generic(event)
    assert fast(enc, event) == generic(event)


def test_one_encoder_switches_kinds_and_symbols():
    enc = codec.Encoder()
    events = [Trade("BTC-USDT", 1, *HDR, "7", "buy", "1.5", "2"),
              BookDelta("ETH-USDT-PERP", 2, *HDR, 1, [["3000.1", "0"]], []),
              Trade("BTC-USDT", 3, *HDR, "12345678", "sell", "1.50", "0.002"),
              Funding("BTC-USDT-PERP", 0, *HDR, "-0.0001", 0, ""),
              Trade("A", 4, *HDR, "", "", "0", "0")]
    for ev in events:
        assert fast(enc, ev) == generic(ev)


def test_decimal_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(codec, "DECIMAL_CACHE_MAX", 8)
    enc = codec.Encoder()
    for i in range(50):
        ev = Trade("BTC-USDT", i, *HDR, str(i), "buy", f"{i}.5", "1")
        assert fast(enc, ev) == generic(ev)
        assert len(enc._decimals) <= 8


@pytest.mark.parametrize("price", ["99999999999999999999", "1e", "1e5x", "abc", "-",
                                   "0." + "0" * 129 + "1"])
def test_fast_path_rejects_what_the_generic_path_rejects(price):
    ev = Trade("BTC-USDT", 1, *HDR, "1", "buy", price, "1")
    with pytest.raises(codec.CodecError):
        codec.Encoder()._encode_any(ev)
    enc = codec.Encoder()
    with pytest.raises(codec.CodecError):
        enc.encode(ev)
    with pytest.raises(codec.CodecError):  # a refused text is not remembered
        enc.encode(ev)


# Decimals padded with trailing zeros: the generic path, the fast path and the C kernel (a book
# level) store the text's own digits and decimals when they fit int64/int8, else the shortest
# form (trailing zeros after the point stripped), else refuse it.

PRICE_SIZE = struct.Struct("<qbqb")  # a trade record's last fields


def three_paths(text: str) -> list[tuple[int, int] | str]:
    """(mantissa, exp) of ``text`` as a trade's price (generic and fast path) and as a book
    level's price (the C kernel) are stored, or "refused"."""
    trade = Trade("BTC-USDT", 1, *HDR, "7", "buy", text, "1")
    got: list[tuple[int, int] | str] = []
    for record in (generic(trade), fast(codec.Encoder(), trade)):
        if record == "refused":
            got.append("refused")
        else:  # a trade record ends with price and size, each an int64 and an int8
            got.append(PRICE_SIZE.unpack_from(record[1], len(record[1]) - PRICE_SIZE.size)[:2])
    try:
        kind, view = codec.Encoder().encode(BookDelta("BTC-USDT", 2, *HDR, 1, [[text, "1"]], []))
    except codec.CodecError:
        got.append("refused")
    else:
        rec = codec.BookRecord(kind, bytes(view))
        got.append((rec.levels[0], rec.price_exp))
    return got


def fits(m: int, e: int) -> bool:
    return -(1 << 63) <= m < (1 << 63) and e >= -127


def written_and_shortest(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(mantissa, exp) with the text's decimals, and with trailing zeros after the point
    stripped (plain decimal text only)."""
    ip, _, fp = text.partition(".")
    m, e = int(ip + fp), -len(fp)
    written = (m, e)
    while e < 0 and m % 10 == 0:
        m, e = m // 10, e + 1
    return written, (m, e)


@pytest.mark.parametrize("text, stored", [
    ("922337204.0000000000", (922337204, 0)),  # 9223372040000000000 > int64 max
    ("-922337204.0000000000", (-922337204, 0)),
    ("922337203685477580.70", (9223372036854775807, -1)),  # int64 max, one zero stripped
    ("-922337203685477580.80", (-9223372036854775808, -1)),  # int64 min
    ("9223372036854775807.00", (9223372036854775807, 0)),
    ("1." + "0" * 130, (1, 0)),  # 130 decimals: beyond the int8 exponent as written
    ("0." + "0" * 130, (0, 0)),
    ("1.5000000000000000000e3", (1500, 0)),
    ("0.000000000000000000100", (100, -21)),  # fits as written: kept as written
    ("1.50", (150, -2)),
])
def test_padded_decimals_are_stored_alike_by_all_three_paths(text, stored):
    assert three_paths(text) == [stored] * 3


@pytest.mark.parametrize("text", ["922337204.0000000001", "9223372036854775808.0",
                                  "-9223372036854775809.000", "92233720368547758080.0",
                                  "0." + "0" * 129 + "1", "1e-128", "1" + "0" * 19 + ".0"])
def test_decimals_that_do_not_fit_even_stripped_are_refused_by_all_three_paths(text):
    assert three_paths(text) == ["refused"] * 3
    trade = Trade("BTC-USDT", 1, *HDR, "7", "buy", text, "1")
    with pytest.raises(codec.CodecError, match="decimal out of range"):
        codec.Encoder()._encode_any(trade)
    with pytest.raises(codec.CodecError, match="decimal out of range"):
        codec.Encoder().encode(trade)
    with pytest.raises(codec.CodecError, match=r"not encodable decimal rows \(rc -2\)"):
        codec.Encoder().encode(BookDelta("BTC-USDT", 2, *HDR, 1, [[text, "1"]], []))


@pytest.mark.parametrize("text", ["--5", "+-5", "5-", "\u0661\u0662", "\uff15", " 5", "5 ",
                                  "5,1", "1_0", "1.2.3", ".", "+", "e5", "1e", "1e+", "nan",
                                  "inf", "0x10", '5"', "1e4001", "1e" + "1" * 5000])
def test_malformed_decimals_are_refused_by_all_three_paths(text):
    assert three_paths(text) == ["refused"] * 3
    with pytest.raises(codec.CodecError):
        codec.fixed_point(text)


@given(st.text("0123456789.+-eE ,\"\\[]\u0661", min_size=1, max_size=12))
def test_the_three_paths_agree_on_any_text(text):
    got = three_paths(text)  # ("" is a trade's "no value" but no book level: not compared)
    assert got == [got[0]] * 3


def test_a_book_field_is_a_whole_json_string():
    """Each string is one field: an empty extra field keeps its place, and a string that
    only splits into decimals at a comma or space is refused, not read as two fields. A
    string with an escape refuses the event even in a column that is not converted:
    skipping it could shift the fields after it."""
    enc = codec.Encoder()
    kind, view = enc.encode(BookDelta("BTC-USDT", 2, *HDR, 1, [["5", "1", ""]], []))
    rec = codec.BookRecord(kind, bytes(view))
    assert (rec.levels[0], rec.levels[1], rec.n_bids) == (5, 1, 1)
    for level in (["5,1", ""], ["5 1", ""], ['5","1', ""], ["5", "1", 'x"', "2"]):
        with pytest.raises(codec.CodecError, match="not encodable"):
            enc.encode(BookDelta("BTC-USDT", 2, *HDR, 1, [level], []))


padded = st.builds(lambda sign, ip, fp, pad: f"{sign}{ip}.{fp}" + "0" * pad,
                   st.sampled_from(["", "-"]),
                   st.one_of(st.integers(0, 10**20), st.sampled_from([922337204, 9223372036])),
                   st.text("0123456789", max_size=20), st.integers(0, 140))


@given(padded)
def test_the_three_paths_agree_on_padded_decimals(text):
    written, shortest = written_and_shortest(text)
    expected = written if fits(*written) else shortest if fits(*shortest) else "refused"
    assert three_paths(text) == [expected] * 3


@given(st.lists(padded, min_size=1, max_size=6), st.sampled_from(["1", "2.50", "0.0001"]))
def test_a_book_column_falls_back_to_its_shortest_form_on_its_own(prices, size):
    """One exponent per column: the largest written decimals if every value fits at that
    scale, else the largest shortest-form decimals (never above 0); the other column keeps
    its own."""
    expected: tuple[int, list[int]] | str = "refused"
    for forms in zip(*(written_and_shortest(p) for p in prices), strict=True):
        decimals = max(0, *(-e for _, e in forms))
        scaled = [m * 10**(decimals + e) for m, e in forms]  # exact: decimals + e >= 0
        if decimals <= 127 and all(-(1 << 63) <= m < (1 << 63) for m in scaled):
            expected = (-decimals, scaled)
            break
    event = BookDelta("BTC-USDT", 2, *HDR, 1, [[p, size] for p in prices], [])
    try:
        kind, view = codec.Encoder().encode(event)
    except codec.CodecError:
        assert expected == "refused"
        return
    rec = codec.BookRecord(kind, bytes(view))
    assert (rec.price_exp, list(rec.levels)[0::2]) == expected
    assert rec.size_exp == written_and_shortest(size)[0][1]  # as written: it fits
    assert codec.decode(kind, bytes(view)).bids == [
        [codec.format_decimal(m, rec.price_exp), size] for m in expected[1]]


def test_the_row_kernel_refuses_an_unterminated_string():
    from supervisor._kernels import ffi, lib

    out = ffi.new("uint8_t[]", 64)  # -1 is MP_DECIMAL_EINVAL; 32 the end of one level
    for text, result in ((b'[["5","1"]]', 32), (b'[["5","1', -1),
                         (b"5 1", 32), (b'5 "1', -1)):
        assert lib.mp_book_body_encode(text, len(text), 2, 1, 0, out, 0, 64) == result
