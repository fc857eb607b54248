"""Encodings of normalized events: binary for the ring, JSON for ZeroMQ and logs.

Binary (ring record payload; the ring record's type id is the event :class:`Kind`).
Little-endian, every field at its natural alignment::

    0   int64  seq            venue sequence (see supervisor.events)
    8   int64  ts_exchange    ns since the epoch, 0 if unknown
    16  int64  ts_recv        ns since the epoch (wall clock)
    24  int64  ts_recv_mono   ns, CLOCK_MONOTONIC
    32  uint8  symbol_len
    33  uint8[7] reserved (0)
    40  symbol (ASCII), zero-padded to a multiple of 8
    B   body, by kind (B = 40 + padded symbol length)

Book bodies (BOOK_SNAPSHOT, BOOK_DELTA)::

    B+0   int64  prev_seq       (BOOK_DELTA only; the snapshot body starts at "n_bids")
    +0    uint32 n_bids
    +4    uint32 n_asks
    +8    int8   price_exp      value = mantissa * 10**exp, one exponent per column per record
    +9    int8   size_exp
    +10   uint8[6] reserved
    +16   (n_bids + n_asks) x { int64 price_mantissa, int64 size_mantissa }, bids first,
          best first on each side

The mantissas are exact: the C kernel ``mp_decimal_rows`` turns the venue's decimal text into
int64 at the largest scale the record needs, so no value passes through a binary float. A
column whose values do not fit int64 (or its exponent int8) at that scale only because of
trailing zeros after the decimal point (venues pad: "922337204.0000000000") falls back to the
fewest decimals that write all its values exactly (exponent 0 there); scalar decimals follow the
same rule (:func:`fixed_point`), so a value encodes alike in a trade, a funding and a book.

Other kinds are a sequence of fields after ``B``: decimal = int64 mantissa + int8 exponent,
int = int64, text = uint16 length + UTF-8. Field order is the NamedTuple's (see ``_FIELDS``).

JSON (ZeroMQ, logs): one object per event, ``{"type": "book_delta", "instance": ..., <the
NamedTuple's fields>}`` with decimals as the venue's strings (:func:`to_json`).
"""

from __future__ import annotations

import re
import struct
from typing import Any

from supervisor import jsonlib
from supervisor._kernels import ffi as _ffi
from supervisor._kernels import lib as _C
from supervisor.events import (  # noqa: F401 - KIND_OF re-exported for callers
    KIND_OF,
    TYPE_OF,
    BookDelta,
    BookSnapshot,
    Event,
    Kind,
    Level,
    Trade,
)

HEADER = struct.Struct("<qqqqB7x")
BOOK_COUNTS = struct.Struct("<IIbb6x")
PREV_SEQ = struct.Struct("<q")
_DELTA_BODY = struct.Struct("<qIIbb6x")  # prev_seq then the book counts, read in one call
_SYMBOL_CACHE: dict[bytes, str] = {}  # symbols repeat: decode each once
MAX_SYMBOL = 64
_ALIGN = 8

_DEC = struct.Struct("<qb")
_INT = struct.Struct("<q")
_TXT = struct.Struct("<H")

# Per-kind field types after the common header: "d" decimal, "i" int, "t" text.
_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.TRADE: ("t", "t", "d", "d"),  # trade_id, side, price, size
    Kind.FUNDING: ("d", "i", "d"),  # rate, next_funding_ts, mark_price ("" -> no value)
    Kind.OPEN_INTEREST: ("d", "d"),
    Kind.LIQUIDATION: ("t", "d", "d"),
    Kind.LONG_SHORT_RATIO: ("d", "t"),
    Kind.VOLATILITY_INDEX: ("d",),
    Kind.GAP: ("t", "t"),
}
_NO_VALUE_EXP = -128  # decimal field left empty by the venue ("")
# sign, digits, decimals, exponent sign and exponent digits (leading zeros dropped, as the C
# kernels skip them: "1e0001" is 10)
_DECIMAL_TEXT = re.compile(r"([+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
                           r"(?:[eE]([+-]?)(?=[0-9])0*([0-9]*))?", re.ASCII)
_MAX_EXP10 = 4000  # most digits, and largest net exponent, parse_decimal takes
DECIMAL_CACHE_MAX = 65_536  # decimal texts an Encoder remembers (cleared in place when full)

KIND_NAMES = {kind: kind.name.lower() for kind in Kind}


class CodecError(ValueError):
    """An event cannot be encoded (e.g. a value beyond int64) or a record is malformed."""


def _pad(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def format_decimal(mantissa: int, exp: int) -> str:
    """Exact decimal text of ``mantissa * 10**exp`` (exp <= 0)."""
    if exp >= 0:
        return str(mantissa * 10**exp)
    digits = str(abs(mantissa)).rjust(1 - exp, "0")
    text = digits[:exp] + "." + digits[exp:]
    return "-" + text if mantissa < 0 else text


def parse_decimal(text: str) -> tuple[int, int]:
    """(mantissa, exp) of one decimal string as written (its decimals, any size); see
    :func:`fixed_point` for the range-checked form the ring stores.

    The grammar is the C kernels': ``[+-]digits[.digits][e[+-]digits]`` in ASCII, with at
    least one digit before the exponent. Anything else (``"--5"``, ``" 5"``, ``"1_0"``,
    non-ASCII digits, NaN) raises :class:`CodecError`, as do more than 4000 digits or a
    net exponent beyond ``±4000`` (refused as out of range; it keeps ``10**exp`` cheap).
    """
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        raise CodecError(f"not a decimal: {text!r}")
    sign, ip, fp, exp_sign, exp_digits = match.groups(default="")
    if len(exp_digits) > 4 or len(ip) + len(fp) > _MAX_EXP10:  # before int(): its digit cap
        raise CodecError(f"decimal out of range: {text!r}")
    exp = -len(fp) + (-1 if exp_sign == "-" else 1) * int(exp_digits or "0")
    if abs(exp) > _MAX_EXP10:
        raise CodecError(f"decimal out of range: {text!r}")
    m = int(ip + fp)
    if exp > 0:
        m, exp = m * 10**exp, 0
    return (-m if sign == "-" else m), exp


def fixed_point(text: str) -> tuple[int, int]:
    """(int64 mantissa, exp >= -127) the ring stores for a decimal text.

    The text's own digits and decimals (``"1.50"`` is ``(150, -2)``) when they fit; else the
    same value with its trailing zeros after the decimal point stripped (``"922337204.0000000000"``
    is ``(922337204, 0)``), the mp_decimal kernel's fallback for a book column. Raises
    :class:`CodecError` if neither fits.
    """
    m, e = parse_decimal(text)
    if not _fits(m, e):
        while e < 0 and m % 10 == 0:
            m //= 10
            e += 1
        if not _fits(m, e):
            raise CodecError(f"decimal out of range: {text!r}")
    return m, e


def _fits(mantissa: int, exp: int) -> bool:
    """An int64 mantissa and an int8 exponent >= -127 (-128 marks "no value")."""
    return -(1 << 63) <= mantissa < (1 << 63) and exp >= -127


class Encoder:
    """Encodes events into one reusable buffer (no per-event allocation of the record).

    ``encode`` returns a memoryview into the encoder's buffer, valid until the next call:
    the ring write copies it once into shared memory. Not thread safe.

    The collector calls this for every event, so the hot kinds have their own paths (same
    bytes as the generic one, which the tests check): a book delta's header, symbol and
    ``prev_seq`` go out in one ``pack_into`` with a :class:`struct.Struct` made once per
    symbol; a trade's whole record in one ``pack_into`` with a Struct made once per
    (symbol, trade id length, side length); decimal texts are parsed once and remembered
    (prices and sizes repeat; at most :data:`DECIMAL_CACHE_MAX`).
    """

    def __init__(self, max_record: int = 1 << 20) -> None:
        self.buf = bytearray(max_record)
        self._view = memoryview(self.buf)
        self._cbuf = _ffi.from_buffer(self.buf)
        self._symbols: dict[str, bytes] = {}
        self._delta_heads: dict[str, tuple[struct.Struct, bytes, int]] = {}
        self._trade_structs: dict[tuple[str, int, int], tuple[struct.Struct, bytes, int]] = {}
        self._decimals: dict[str, tuple[int, int]] = {}

    def _symbol(self, symbol: str) -> bytes:
        """The symbol's bytes zero-padded to 8 (cached: symbols repeat)."""
        raw = self._symbols.get(symbol)
        if raw is None:
            enc = symbol.encode("ascii")
            if len(enc) > MAX_SYMBOL:
                raise CodecError(f"symbol longer than {MAX_SYMBOL} bytes: {symbol!r}")
            raw = self._symbols[symbol] = enc.ljust(_pad(len(enc)), b"\0")
        return raw

    def _decimal(self, text: str) -> tuple[int, int]:
        """(mantissa, exp) of a decimal text, range-checked; remembered."""
        found = self._decimals.get(text)
        if found is None:
            if text == "":  # the venue sent no value
                return 0, _NO_VALUE_EXP
            m, e = fixed_point(text)
            if len(self._decimals) >= DECIMAL_CACHE_MAX:
                self._decimals.clear()
            found = self._decimals[text] = (m, e)
        return found

    def encode(self, event: Event) -> tuple[int, memoryview]:
        """Return (ring type id, payload view) for ``event``."""
        etype = type(event)
        if etype is BookDelta:
            symbol, seq, ts_ex, ts_recv, ts_mono, prev_seq, bids, asks = event
            head = self._delta_heads.get(symbol)
            if head is None:
                head = self._delta_head(symbol)
            st, sym, slen = head
            st.pack_into(self.buf, 0, seq, ts_ex, ts_recv, ts_mono, slen, sym, prev_seq)
            return 2, self._view[:self._levels(bids, asks, st.size)]
        if etype is Trade:
            return 3, self._view[:self._trade(event)]
        return self._encode_any(event)

    def _delta_head(self, symbol: str) -> tuple[struct.Struct, bytes, int]:
        """Header + padded symbol + prev_seq of ``symbol``'s deltas as one Struct."""
        sym = self._symbol(symbol)
        head = self._delta_heads[symbol] = (struct.Struct(f"<qqqqB7x{len(sym)}sq"), sym,
                                            len(symbol))
        return head

    def _trade(self, event: Trade) -> int:
        symbol, seq, ts_ex, ts_recv, ts_mono, trade_id, side, price, size = event
        tid = trade_id.encode()
        sd = side.encode()
        key = (symbol, len(tid), len(sd))
        found = self._trade_structs.get(key)
        if found is None:
            sym = self._symbol(symbol)
            found = self._trade_structs[key] = (
                struct.Struct(f"<qqqqB7x{len(sym)}sH{len(tid)}sH{len(sd)}sqbqb"), sym,
                len(symbol))
        st, sym, slen = found
        pm, pe = self._decimal(price)
        sm, se = self._decimal(size)
        st.pack_into(self.buf, 0, seq, ts_ex, ts_recv, ts_mono, slen, sym, len(tid), tid,
                     len(sd), sd, pm, pe, sm, se)
        return st.size

    def _encode_any(self, event: Event) -> tuple[int, memoryview]:
        """Every kind, field by field (what the fast paths must reproduce byte for byte)."""
        kind = KIND_OF[type(event)]
        buf = self.buf
        symbol = event.symbol
        sym = self._symbol(symbol)
        HEADER.pack_into(buf, 0, event.seq, event.ts_exchange, event.ts_recv,
                         event.ts_recv_mono, len(symbol))
        off = 40 + len(sym)
        buf[40:off] = sym
        if kind is Kind.BOOK_DELTA:
            PREV_SEQ.pack_into(buf, off, event.prev_seq)
            off = self._levels(event.bids, event.asks, off + 8)
        elif kind is Kind.BOOK_SNAPSHOT:
            off = self._levels(event.bids, event.asks, off)
        else:
            off = self._fields(kind, event, off)
        return int(kind), self._view[:off]

    def _levels(self, bids: list[Level], asks: list[Level], off: int) -> int:
        nb, na = len(bids), len(asks)
        if nb or na:
            stride = len(bids[0]) if nb else len(asks[0])
            # orjson's C encoder flattens the nested lists faster than a Python join;
            # the kernel reads JSON punctuation as field separators.
            text = jsonlib.dumps((bids, asks))
        else:
            stride, text = 2, b""
        end = _C.mp_book_body_encode(text, len(text), stride, nb, na, self._cbuf, off,
                                     len(self.buf))
        if end < 0:
            raise CodecError(f"levels are not encodable decimal rows (rc {end}): {text[:80]!r}")
        return end

    def _fields(self, kind: Kind, event: Event, off: int) -> int:
        buf = self.buf
        for ftype, value in zip(_FIELDS[kind], event[5:], strict=True):
            if ftype == "d":
                _DEC.pack_into(buf, off, *self._decimal(value))
                off += 9
            elif ftype == "i":
                _INT.pack_into(buf, off, value)
                off += 8
            else:
                raw = value.encode()
                _TXT.pack_into(buf, off, len(raw))
                buf[off + 2:off + 2 + len(raw)] = raw
                off += 2 + len(raw)
        return off


class BookRecord:
    """Zero-copy view of a book record: int64 mantissas without building level lists."""

    __slots__ = ("symbol", "seq", "prev_seq", "ts_exchange", "ts_recv", "ts_recv_mono",
                 "n_bids", "n_asks", "price_exp", "size_exp", "levels_at", "_mv")

    def __init__(self, kind: int, payload: Any) -> None:
        mv = memoryview(payload)
        (self.seq, self.ts_exchange, self.ts_recv, self.ts_recv_mono,
         slen) = HEADER.unpack_from(mv, 0)
        raw = mv[40:40 + slen].tobytes()
        symbol = _SYMBOL_CACHE.get(raw)
        if symbol is None:
            symbol = _SYMBOL_CACHE[raw] = raw.decode("ascii")
        self.symbol = symbol
        off = (47 + slen) & ~7  # 40 + slen rounded up to 8
        if kind == 2:  # Kind.BOOK_DELTA
            (self.prev_seq, self.n_bids, self.n_asks, self.price_exp,
             self.size_exp) = _DELTA_BODY.unpack_from(mv, off)
            off += 24
        else:
            self.prev_seq = self.seq
            self.n_bids, self.n_asks, self.price_exp, self.size_exp = BOOK_COUNTS.unpack_from(
                mv, off)
            off += 16
        end = off + 16 * (self.n_bids + self.n_asks)
        if end > len(mv):
            raise CodecError(f"truncated book record for {symbol}")
        self.levels_at = off  # byte offset of the levels in the payload (8-byte aligned)
        self._mv = mv

    @property
    def levels(self) -> memoryview:
        """Flat int64 [p0, s0, p1, s1, ...], bids first, then asks (a view, no copy)."""
        off = self.levels_at
        return self._mv[off:off + 16 * (self.n_bids + self.n_asks)].cast("q")


def decode(kind: int, payload: Any) -> Event:
    """Rebuild the event from a ring record (decimals as exact strings)."""
    kind = Kind(kind)
    if kind in (Kind.BOOK_SNAPSHOT, Kind.BOOK_DELTA):
        rec = BookRecord(kind, payload)
        pe, se, lv = rec.price_exp, rec.size_exp, rec.levels
        levels = [[format_decimal(lv[i], pe), format_decimal(lv[i + 1], se)]
                  for i in range(0, len(lv), 2)]
        bids, asks = levels[:rec.n_bids], levels[rec.n_bids:]
        common = (rec.symbol, rec.seq, rec.ts_exchange, rec.ts_recv, rec.ts_recv_mono)
        if kind is Kind.BOOK_DELTA:
            return BookDelta(*common, rec.prev_seq, bids, asks)
        return BookSnapshot(*common, bids, asks)
    mv = memoryview(payload)
    seq, ts_ex, ts_rx, ts_mono, slen = HEADER.unpack_from(mv, 0)
    symbol = bytes(mv[40:40 + slen]).decode("ascii")
    off = _pad(40 + slen)
    values: list[Any] = []
    for ftype in _FIELDS[kind]:
        if ftype == "d":
            m, e = _DEC.unpack_from(mv, off)
            values.append("" if e == _NO_VALUE_EXP else format_decimal(m, e))
            off += 9
        elif ftype == "i":
            values.append(_INT.unpack_from(mv, off)[0])
            off += 8
        else:
            (n,) = _TXT.unpack_from(mv, off)
            values.append(bytes(mv[off + 2:off + 2 + n]).decode())
            off += 2 + n
    if off > len(mv):
        raise CodecError(f"truncated {kind.name} record for {symbol}")
    return TYPE_OF[kind](symbol, seq, ts_ex, ts_rx, ts_mono, *values)


def to_json(instance: str, event: Event) -> bytes:
    """The JSON encoding: ``{"type": ..., "instance": ..., <fields>}``."""
    doc: dict[str, Any] = {"type": KIND_NAMES[KIND_OF[type(event)]], "instance": instance}
    doc.update(event._asdict())
    return jsonlib.dumps(doc)


def topic(instance: str, event: Event) -> bytes:
    """ZeroMQ topic ``instance/type/symbol`` (subscribers filter by prefix)."""
    return f"{instance}/{KIND_NAMES[KIND_OF[type(event)]]}/{event.symbol}".encode()


__all__ = ["Encoder", "BookRecord", "CodecError", "decode", "to_json", "topic",
           "format_decimal", "parse_decimal", "fixed_point", "KIND_NAMES"]
