"""Per-symbol state rebuilt from ring records: books from int64 mantissas, scalar fields.

The ring carries prices and sizes as int64 mantissas with one exponent per column per record
(:mod:`supervisor.codec`). The exponent is chosen per record (the most decimals that record
needs), so the same price can arrive as ``432501e-1`` in one delta and ``4325010e-2`` in the
next. Levels are therefore keyed by ``mantissa / 10**-exp``, a division of two exactly
representable doubles, so IEEE rounding makes it the same double as ``float("43250.1")``
whatever the scale, and a decimal with at most 15 significant digits maps to exactly one key
(the rule
:mod:`supervisor.book` already relies on). Sizes are kept as floats: they only feed analytics
(depth, imbalance, microprice); the exact decimals stay in the ring.

The books live in a C kernel (``native/mp_levels.c``, ``supervisor._levels``) that applies a
record's int64 levels in place, straight from the reader's batch buffer: nothing is allocated
per level and no Python code runs per level.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from supervisor._levels import ffi as _ffi
from supervisor._levels import lib as _C
from supervisor.codec import HEADER
from supervisor.events import Kind

POW10: tuple[int, ...] = tuple(10**i for i in range(0, 40))
NO_VALUE_EXP = -128  # a decimal field the venue left empty (codec._NO_VALUE_EXP)

# Verdicts of :func:`delta_verdict`.
APPLY = 0
STALE = 1
GAP = 2
NO_BOOK = 3

# Results of :meth:`BookState.cross_state`.
NORMAL = 0
LOCKED = 1
CROSSED = 2


def delta_verdict(valid: bool, book_seq: int, prev_seq: int, seq: int) -> int:
    """The analyzer's one sequencing rule for :class:`~supervisor.events.BookDelta`.

    Every adapter publishes deltas whose ``prev_seq`` is the ``seq`` of the state they
    apply to (Binance ``u`` of the previous event, OKX ``prevSeqId``, Deribit
    ``prev_change_id``), so one venue-independent chain check suffices:

    - ``NO_BOOK``: no valid book (never seeded, or broken): wait for a snapshot;
    - ``APPLY``: ``prev_seq`` is the book's ``seq``;
    - ``STALE``: ``seq`` is at or below the book's (a delta published before the snapshot
      the book was seeded from: ZeroMQ late join); drop it silently;
    - ``GAP``: anything else: deltas are missing, the book is wrong from here on.
    """
    if not valid:
        return NO_BOOK
    if prev_seq == book_seq:
        return APPLY
    if seq <= book_seq:
        return STALE
    return GAP


class BookState:
    """The analyzer's copy of one symbol's book and the venue ``seq`` it is at.

    The levels live in a C kernel (``native/mp_levels.c``): per side a sorted array of float
    keys and sizes, applied a whole record per call straight from the ring's int64 mantissas
    (no Python object per level). Keys are the correctly rounded doubles of the venue's
    decimals whatever exponent a record chose (see the module docstring); sizes are floats
    (they only feed analytics; the exact decimals stay in the ring).

    ``valid`` is False until a snapshot (ring ``BookSnapshot`` or the collector's snapshot
    service) is loaded, and again after a :class:`~supervisor.events.Gap` or a broken chain.

    Usage::

        book = BookState()
        rec = BookRecord(kind, payload)
        book.load_record(rec.levels, rec.n_bids, rec.price_exp, rec.size_exp, rec.seq)
        book.best_bid(), book.best_ask(), book.cross_state()
    """

    __slots__ = ("c", "seq", "valid")

    def __init__(self) -> None:
        book = _C.mp_levels_new()
        if book == _ffi.NULL:
            raise MemoryError("cannot allocate a book")
        self.c = _ffi.gc(book, _C.mp_levels_free)  # the kernel's book (engine hot path)
        self.seq = 0
        self.valid = False

    def load_record(self, levels: Any, n_bids: int, price_exp: int, size_exp: int,
                    seq: int) -> int:
        """Replace the book with a snapshot record's levels: ``levels`` holds (price, size)
        int64 mantissa pairs, bids first (a ``memoryview``, ``bytes`` or ``list``).

        Returns how many levels had a size <= 0 (dropped: a snapshot never carries them).
        """
        bad = self._apply(levels, n_bids, price_exp, size_exp, 1)
        self.seq = seq
        self.valid = True
        return bad

    def apply_record(self, levels: Any, n_bids: int, price_exp: int, size_exp: int,
                     seq: int) -> int:
        """Apply a delta record's levels (size 0 removes); returns sizes < 0 (skipped)."""
        bad = self._apply(levels, n_bids, price_exp, size_exp, 0)
        self.seq = seq
        return bad

    def _apply(self, levels: Any, n_bids: int, price_exp: int, size_exp: int,
               load: int) -> int:
        vals = (_ffi.new("int64_t[]", levels) if isinstance(levels, list)
                else _ffi.from_buffer("int64_t[]", levels))
        n = len(vals) // 2  # (price, size) pairs
        return checked(_C.mp_levels_apply(self.c, vals, n_bids, n - n_bids, price_exp,
                                          size_exp, load))

    def load_text(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]],
                  seq: int) -> int:
        """Snapshot from decimal strings (the ZeroMQ path); returns sizes <= 0 seen."""
        vals, n_bids, n_asks = _floats(bids, asks)
        bad = checked(_C.mp_levels_apply_f(self.c, vals, n_bids, n_asks, 1))
        self.seq = seq
        self.valid = True
        return bad

    def apply_text(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]],
                   seq: int) -> int:
        """Delta from decimal strings; returns sizes < 0 (and non-finite values) skipped."""
        vals, n_bids, n_asks = _floats(bids, asks)
        bad = checked(_C.mp_levels_apply_f(self.c, vals, n_bids, n_asks, 0))
        self.seq = seq
        return bad

    def invalidate(self) -> None:
        _C.mp_levels_clear(self.c)
        self.valid = False

    def top(self) -> tuple[int, float, float, float, float]:
        """(state, best bid, its size, best ask, its size); state 0: a side is empty,
        1 normal, 2 locked, 3 crossed (prices and sizes 0.0 where a side is empty)."""
        out = TOP
        state = _C.mp_levels_top(self.c, out)
        return state, out[0], out[1], out[2], out[3]

    def best_bid(self) -> float | None:
        return -self.c.bids.keys[0] if self.c.bids.count else None

    def best_ask(self) -> float | None:
        return self.c.asks.keys[0] if self.c.asks.count else None

    def cross_state(self) -> int:
        """``CROSSED`` (best bid > best ask), ``LOCKED`` (equal) or ``NORMAL``."""
        state = _C.mp_levels_top(self.c, TOP)
        return CROSSED if state == 3 else LOCKED if state == 2 else NORMAL

    def depth(self, side: int, n: int) -> float:
        """Total size of the best ``n`` levels of bids (side 0) or asks (side 1)."""
        return _C.mp_levels_depth(self.c, side, n)

    def level_count(self) -> int:
        return self.c.bids.count + self.c.asks.count

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Every level as (price, size), best first: bids, asks."""
        sides = []
        for side, count in ((0, self.c.bids.count), (1, self.c.asks.count)):
            out = _ffi.new("double[]", 2 * count or 1)
            n = _C.mp_levels_copy(self.c, side, out, count)
            sides.append([(out[2 * i], out[2 * i + 1]) for i in range(n)])
        return sides[0], sides[1]


TOP = _ffi.new("double[4]")  # mp_levels_top's output (the analyzer is single-threaded)


def checked(result: int) -> int:
    """A kernel result: the count it returned, or MemoryError."""
    if result < 0:
        raise MemoryError("cannot grow a book side") if result == _C.MP_LEVELS_ENOMEM \
            else ValueError(f"bad book record (kernel error {result})")
    return result


def _floats(bids: Iterable[Sequence[str]],
            asks: Iterable[Sequence[str]]) -> tuple[Any, int, int]:
    """Decimal-string levels -> (price, size) doubles for the kernel, bids first."""
    vals = [float(x) for lv in bids for x in (lv[0], lv[1])]
    n_bids = len(vals) // 2
    vals += [float(x) for lv in asks for x in (lv[0], lv[1])]
    return _ffi.new("double[]", vals), n_bids, len(vals) // 2 - n_bids


# ----- scalar records (everything that is not a book) ----------------------------------------
_DEC = struct.Struct("<qb")
_TXT = struct.Struct("<H")
_INT = struct.Struct("<q")
_HEADER_UNPACK = HEADER.unpack_from
_DEC_UNPACK = _DEC.unpack_from
_TXT_UNPACK = _TXT.unpack_from

# Field types after the common header, as in supervisor.codec (d decimal, i int, t text).
SCALAR_FIELDS: dict[int, tuple[str, ...]] = {
    Kind.TRADE: ("t", "t", "d", "d"),
    Kind.FUNDING: ("d", "i", "d"),
    Kind.OPEN_INTEREST: ("d", "d"),
    Kind.LIQUIDATION: ("t", "d", "d"),
    Kind.LONG_SHORT_RATIO: ("d", "t"),
    Kind.VOLATILITY_INDEX: ("d",),
    Kind.GAP: ("t", "t"),
}


def read_header(payload: Any) -> tuple[str, int, int, int, int, int]:
    """(symbol, seq, ts_exchange, ts_recv, ts_recv_mono, body offset) of any record."""
    seq, ts_ex, ts_rx, ts_mono, slen = _HEADER_UNPACK(payload, 0)
    symbol = bytes(payload[40:40 + slen]).decode("ascii")
    return symbol, seq, ts_ex, ts_rx, ts_mono, (40 + slen + 7) & ~7


def read_scalar(kind: int, payload: Any) -> tuple[str, int, int, int, int, list[Any]]:
    """Header plus the body's fields: decimals as floats (None when empty), text as str.

    The float is ``mantissa / 10**-exp`` (correctly rounded), never a formatted string.
    """
    symbol, seq, ts_ex, ts_rx, ts_mono, off = read_header(payload)
    values: list[Any] = []
    for ftype in SCALAR_FIELDS[kind]:
        if ftype == "d":
            m, e = _DEC_UNPACK(payload, off)
            values.append(None if e == NO_VALUE_EXP else
                          (m / POW10[-e] if e <= 0 else float(m * POW10[e])))
            off += 9
        elif ftype == "i":
            values.append(_INT.unpack_from(payload, off)[0])
            off += 8
        else:
            (n,) = _TXT_UNPACK(payload, off)
            values.append(bytes(payload[off + 2:off + 2 + n]).decode())
            off += 2 + n
    return symbol, seq, ts_ex, ts_rx, ts_mono, values


def read_trade(payload: Any) -> tuple[str, int, int, int, int, bool, float, float]:
    """The trade fast path: (symbol, seq, ts_ex, ts_recv, ts_mono, is_buy, price, size)."""
    seq, ts_ex, ts_rx, ts_mono, slen = _HEADER_UNPACK(payload, 0)
    symbol = bytes(payload[40:40 + slen]).decode("ascii")
    off = (40 + slen + 7) & ~7
    (n,) = _TXT_UNPACK(payload, off)  # trade_id: skipped
    off += 2 + n
    (n,) = _TXT_UNPACK(payload, off)
    is_buy = n > 0 and payload[off + 2] == 98  # b"b"uy
    off += 2 + n
    pm, pe = _DEC_UNPACK(payload, off)
    sm, se = _DEC_UNPACK(payload, off + 9)
    return (symbol, seq, ts_ex, ts_rx, ts_mono, is_buy, pm / POW10[-pe] if pe <= 0 else
            float(pm * POW10[pe]), sm / POW10[-se] if se <= 0 else float(sm * POW10[se]))


__all__ = ["BookState", "delta_verdict", "read_header", "read_scalar",
           "read_trade", "APPLY", "STALE", "GAP", "NO_BOOK", "NORMAL", "LOCKED", "CROSSED",
           "POW10"]
