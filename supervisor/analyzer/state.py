"""Per-symbol state rebuilt from ring records: books from int64 mantissas, scalar fields.

The ring carries prices and sizes as int64 mantissas with one exponent per column per record
(:mod:`supervisor.codec`). The exponent is chosen per record (the most decimals that record
needs), so the same price can arrive as ``432501e-1`` in one delta and ``4325010e-2`` in the
next. Levels are therefore keyed by ``mantissa / 10**-exp``: Python's int/int true division
is correctly rounded, so it yields the same double as ``float("43250.1")`` whatever the scale,
and a decimal with at most 15 significant digits maps to exactly one key (the rule
:mod:`supervisor.book` already relies on). Sizes are kept as floats: they only feed analytics
(depth, imbalance, microprice); the exact decimals stay in the ring.

Nothing here allocates per level beyond the dict entry the level itself needs: a record's
levels come as one ``list`` of ints (``memoryview.tolist()``, a single C call).
"""

from __future__ import annotations

import struct
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from typing import Any

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


class BookSide:
    """One side: ``sizes`` maps key -> size, ``keys`` is sorted (bid keys negated).

    Index 0 of ``keys`` is the best level on both sides. Updating a level's size is one dict
    store; only inserts and removals touch the sorted list.
    """

    __slots__ = ("sizes", "keys")

    def __init__(self) -> None:
        self.sizes: dict[float, float] = {}
        self.keys: list[float] = []

    def clear(self) -> None:
        self.sizes = {}
        self.keys = []

    def load(self, vals: list[int], start: int, end: int, neg: bool, pdiv: int,
             sdiv: int) -> int:
        """Replace the side from ``vals[start:end]`` (price, size mantissa pairs).

        Returns how many levels had a size <= 0 (dropped: a snapshot never carries them).
        """
        sizes: dict[float, float] = {}
        bad = 0
        for i in range(start, end, 2):
            s = vals[i + 1]
            if s <= 0:
                bad += 1
                continue
            p = vals[i] / pdiv
            sizes[-p if neg else p] = s / sdiv
        self.sizes = sizes
        self.keys = sorted(sizes)
        return bad

    def apply(self, vals: list[int], start: int, end: int, neg: bool, pdiv: int,
              sdiv: int) -> int:
        """Apply absolute sizes; 0 removes; returns how many sizes were negative (skipped)."""
        sizes = self.sizes
        keys = self.keys
        bad = 0
        for i in range(start, end, 2):
            p = vals[i] / pdiv
            k = -p if neg else p
            s = vals[i + 1]
            if s > 0:
                if k not in sizes:
                    insort(keys, k)
                sizes[k] = s / sdiv
            elif s == 0:
                if sizes.pop(k, None) is not None:
                    del keys[bisect_left(keys, k)]
            else:
                bad += 1
        return bad

    def load_text(self, levels: Iterable[Sequence[str]], neg: bool) -> int:
        """Snapshot from decimal strings (ZeroMQ path); returns sizes <= 0 seen."""
        sizes: dict[float, float] = {}
        bad = 0
        for lv in levels:
            s = float(lv[1])
            if s <= 0.0:
                bad += 1
                continue
            p = float(lv[0])
            sizes[-p if neg else p] = s
        self.sizes = sizes
        self.keys = sorted(sizes)
        return bad

    def apply_text(self, levels: Iterable[Sequence[str]], neg: bool) -> int:
        sizes = self.sizes
        keys = self.keys
        bad = 0
        for lv in levels:
            p = float(lv[0])
            k = -p if neg else p
            s = float(lv[1])
            if s > 0.0:
                if k not in sizes:
                    insort(keys, k)
                sizes[k] = s
            elif s == 0.0:
                if sizes.pop(k, None) is not None:
                    del keys[bisect_left(keys, k)]
            else:
                bad += 1
        return bad

    def depth(self, n: int) -> float:
        """Total size of the best ``n`` levels."""
        sizes = self.sizes
        return sum(sizes[k] for k in self.keys[:n])

    def __len__(self) -> int:
        return len(self.keys)


class BookState:
    """The analyzer's copy of one symbol's book and the venue ``seq`` it is at.

    ``valid`` is False until a snapshot (ring ``BookSnapshot`` or the collector's snapshot
    service) is loaded, and again after a :class:`~supervisor.events.Gap` or a broken chain.

    Usage::

        book = BookState()
        rec = BookRecord(kind, payload)
        book.load_record(rec.levels.tolist(), rec.n_bids, rec.price_exp, rec.size_exp, rec.seq)
        book.best_bid(), book.best_ask(), book.cross_state()
    """

    __slots__ = ("bids", "asks", "seq", "valid")

    def __init__(self) -> None:
        self.bids = BookSide()
        self.asks = BookSide()
        self.seq = 0
        self.valid = False

    def load_record(self, vals: list[int], n_bids: int, price_exp: int, size_exp: int,
                    seq: int) -> int:
        pdiv = POW10[-price_exp]
        sdiv = POW10[-size_exp]
        mid = 2 * n_bids
        bad = self.bids.load(vals, 0, mid, True, pdiv, sdiv)
        bad += self.asks.load(vals, mid, len(vals), False, pdiv, sdiv)
        self.seq = seq
        self.valid = True
        return bad

    def apply_record(self, vals: list[int], n_bids: int, price_exp: int, size_exp: int,
                     seq: int) -> int:
        # BookSide.apply's loop, inlined over both sides: a delta carries a few levels, so
        # the two calls would cost as much as the work.
        pdiv = POW10[-price_exp]
        sdiv = POW10[-size_exp]
        mid = 2 * n_bids
        side = self.bids if n_bids else self.asks
        sizes = side.sizes
        keys = side.keys
        bad = 0
        for i in range(0, len(vals), 2):
            if i == mid:
                sizes = self.asks.sizes
                keys = self.asks.keys
            k = -(vals[i] / pdiv) if i < mid else vals[i] / pdiv
            s = vals[i + 1]
            if s > 0:
                if k not in sizes:
                    insort(keys, k)
                sizes[k] = s / sdiv
            elif s == 0:
                if sizes.pop(k, None) is not None:
                    del keys[bisect_left(keys, k)]
            else:
                bad += 1
        self.seq = seq
        return bad

    def load_text(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]],
                  seq: int) -> int:
        bad = self.bids.load_text(bids, True) + self.asks.load_text(asks, False)
        self.seq = seq
        self.valid = True
        return bad

    def apply_text(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]],
                   seq: int) -> int:
        bad = self.bids.apply_text(bids, True) + self.asks.apply_text(asks, False)
        self.seq = seq
        return bad

    def invalidate(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.valid = False

    def best_bid(self) -> float | None:
        keys = self.bids.keys
        return -keys[0] if keys else None

    def best_ask(self) -> float | None:
        keys = self.asks.keys
        return keys[0] if keys else None

    def cross_state(self) -> int:
        """``CROSSED`` (best bid > best ask), ``LOCKED`` (equal) or ``NORMAL``."""
        b = self.bids.keys
        a = self.asks.keys
        if not b or not a:
            return NORMAL
        bid = -b[0]
        if bid < a[0]:
            return NORMAL
        return LOCKED if bid == a[0] else CROSSED


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


__all__ = ["BookState", "BookSide", "delta_verdict", "read_header", "read_scalar",
           "read_trade", "APPLY", "STALE", "GAP", "NO_BOOK", "NORMAL", "LOCKED", "CROSSED",
           "POW10"]
