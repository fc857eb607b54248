"""The Encoder's fast paths (book deltas, trades) against its generic field-by-field path.

The ring's binary layout is documented in supervisor/codec.py; the fast paths must write
exactly the bytes the generic path writes, for every symbol length, text length and decimal
form, and fail the same way.
"""

from __future__ import annotations

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
    if got != "refused":  # e.g. "922337204.0000000000": a mantissa beyond int64
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
                                   "1." + "0" * 130])
def test_fast_path_rejects_what_the_generic_path_rejects(price):
    ev = Trade("BTC-USDT", 1, *HDR, "1", "buy", price, "1")
    with pytest.raises(codec.CodecError):
        codec.Encoder()._encode_any(ev)
    enc = codec.Encoder()
    with pytest.raises(codec.CodecError):
        enc.encode(ev)
    with pytest.raises(codec.CodecError):  # a refused text is not remembered
        enc.encode(ev)
