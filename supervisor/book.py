"""Local order book: one per (instance, symbol), fed by a venue adapter's sync logic.

The levels live in a C kernel (``native/mp_book.c``, in ``supervisor._kernels``): applying
a diff in Python cost two ``float()`` calls plus a dict and a sorted-list operation per
level, about half of all the work per Binance message. An update goes to C as the compact
JSON of ``(bids, asks)`` (one ``orjson.dumps`` and one call per event, both sides).

Prices are exact keys there (decimal text -> price x 10^18 in 128 bits; no float ever
orders the book, "1.10" and "1.1" are one level), and each level's JSON text is stored as
the venue sent it: :meth:`BookSide.top` and :meth:`OrderBook.snapshot_levels` give back the
venue's own strings (fresh lists), never rounded. Bad input (nan/inf or garbage prices,
malformed levels) raises ``ValueError`` naming the level, with the book left unchanged.
Not thread safe: one adapter task owns each book.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from supervisor import jsonlib
from supervisor._kernels import ffi as _ffi
from supervisor._kernels import lib as _C
from supervisor.events import Level

try:
    from orjson import dumps as _dumps  # the hot path: no jsonlib wrapper call
except ImportError:  # pragma: no cover - jsonlib's stdlib fallback (same compact text)
    _dumps = jsonlib.dumps

_loads = jsonlib.loads
_apply = _C.mp_book_apply
_load = _C.mp_book_load
_BIDS = _C.MP_BOOK_BIDS
_ASKS = _C.MP_BOOK_ASKS
_U32 = 0xFFFFFFFF

_ERRORS = {
    _C.MP_BOOK_ESHAPE: "malformed levels (want [price, size, ...] arrays of strings or numbers)",
    _C.MP_BOOK_EPRICE: "bad price in level",
    _C.MP_BOOK_ENONFINITE: "non-finite price level",
    _C.MP_BOOK_ERANGE: "price beyond exact range (over 18 decimals or 20 integer digits) in level",
    _C.MP_BOOK_ESIZE: "bad size in level",
    _C.MP_BOOK_ETOOBIG: f"more than {_C.MP_BOOK_MAX_LEVELS} levels on a side",
}


def _error(rc: int, c: object, text: bytes) -> Exception:
    """The exception for a negative kernel result, quoting the offending level."""
    if rc == _C.MP_BOOK_ENOMEM:
        return MemoryError("order book: out of memory")
    off = _C.mp_book_error_offset(c)
    where = text[off:off + 100] if off >= 0 else text[:100]
    end = where.find(b"]")
    if end >= 0:
        where = where[:end + 1]
    return ValueError(f"{_ERRORS.get(rc, f'error {rc}')}: {where.decode('utf-8', 'replace')}")


class _Scratch(threading.local):
    """The buffer :func:`_top` reads levels into, grown on demand: one per thread, since
    cffi runs the kernel without the GIL (books themselves are never shared)."""

    def __init__(self) -> None:
        self.cap = 1 << 16
        self.buf = _ffi.new("char[]", self.cap)


_scratch = _Scratch()


def _top(c: object, side: int, n: int) -> list[Level]:
    n = max(0, min(n, _U32))
    scratch = _scratch
    need = _C.mp_book_top(c, side, n, scratch.buf, scratch.cap)
    if need > scratch.cap:
        scratch.cap = max(need, 2 * scratch.cap)
        scratch.buf = _ffi.new("char[]", scratch.cap)
        need = _C.mp_book_top(c, side, n, scratch.buf, scratch.cap)
    return _loads(_ffi.unpack(scratch.buf, need))


class BookSide:
    """One side of an :class:`OrderBook` (a view: the levels are in the book's kernel)."""

    __slots__ = ("_c", "_side", "_given")

    def __init__(self, c: object, side: int, given: list[Sequence[Level] | None]) -> None:
        self._c = c
        self._side = side
        self._given = given  # shared with the book: see OrderBook._given

    def _pair(self, levels: Sequence[Level]) -> bytes:
        return _dumps((levels, ()) if self._side == _BIDS else ((), levels))

    def load(self, levels: Sequence[Level]) -> None:
        """Replace the side with a snapshot (zero-size levels are dropped)."""
        text = self._pair(levels)
        rc = _load(self._c, text, len(text), 1 << self._side)
        if rc < 0:
            raise _error(rc, self._c, text)
        given = self._given
        if not given:
            given += (None, None)
        given[self._side] = levels if rc & (2 << self._side) else None

    def apply(self, levels: Sequence[Level]) -> None:
        """Apply absolute-size updates; size 0 removes (removing an absent level is fine)."""
        text = self._pair(levels)
        if self._given:
            self._given.clear()
        rc = _apply(self._c, text, len(text))
        if rc < 0:
            raise _error(rc, self._c, text)

    def best(self) -> Level | None:
        top = _top(self._c, self._side, 1)
        return top[0] if top else None

    def top(self, n: int) -> list[Level]:
        """The best ``n`` levels, best first (fresh lists of the venue's values)."""
        return _top(self._c, self._side, n)

    def __len__(self) -> int:
        return _C.mp_book_len(self._c, self._side)


class OrderBook:
    """A local book plus the sequence it is at.

    Usage::

        book = OrderBook("BTC-USDT")
        book.load(bids, asks, seq=100)
        if book.apply(delta_bids, delta_asks, seq=101):  # True: the result is crossed
            ...  # never publish this state: resync
    """

    __slots__ = ("symbol", "bids", "asks", "seq", "synced", "_c", "_given")

    def __init__(self, symbol: str) -> None:
        c = _C.mp_book_new()
        if c == _ffi.NULL:
            raise MemoryError("order book: out of memory")
        self._c = _ffi.gc(c, _C.mp_book_free)
        # [bids, asks] as last loaded, for a side the kernel stored exactly as given (best
        # first, nothing dropped) and untouched since, else None; [] after any change. The
        # snapshot published right after a load is then the venue's own lists, not a read-back.
        self._given: list[Sequence[Level] | None] = []
        self.symbol = symbol
        self.bids = BookSide(self._c, _BIDS, self._given)
        self.asks = BookSide(self._c, _ASKS, self._given)
        self.seq = 0  # venue sequence of the current state
        self.synced = False  # False until a snapshot is loaded; False again after a break

    def load(self, bids: Sequence[Level], asks: Sequence[Level], seq: int) -> bool:
        """Replace both sides (all or nothing); returns True if the result is crossed."""
        text = _dumps((bids, asks))
        rc = _load(self._c, text, len(text), 3)
        if rc < 0:
            raise _error(rc, self._c, text)
        self._given[:] = (bids if rc & 2 else None, asks if rc & 4 else None)
        self.seq = seq
        self.synced = True
        return bool(rc & 1)

    def apply(self, bids: Sequence[Level], asks: Sequence[Level], seq: int) -> bool:
        """Apply a delta (all or nothing on bad input); returns True if the result is crossed.

        One kernel call for both sides, the crossed check included (the hot path).
        """
        text = _dumps((bids, asks))
        if self._given:
            self._given.clear()
        rc = _apply(self._c, text, len(text))
        if rc < 0:
            raise _error(rc, self._c, text)
        self.seq = seq
        return rc > 0

    def check(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Raise ``ValueError`` where :meth:`apply` would; the book is not touched."""
        text = _dumps((bids, asks))
        rc = _C.mp_book_check(self._c, text, len(text))
        if rc < 0:
            raise _error(rc, self._c, text)

    def invalidate(self) -> None:
        """Forget the state (a break was detected); the adapter resyncs."""
        _C.mp_book_clear(self._c)
        self._given.clear()
        self.synced = False

    def crossed(self) -> bool:
        """True when best bid >= best ask (a state known to be wrong)."""
        return bool(_C.mp_book_crossed(self._c))

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        return self._side_top(_BIDS, n), self._side_top(_ASKS, n)

    def snapshot_levels(self) -> tuple[Sequence[Level], Sequence[Level]]:
        """Every level, best first (for BookSnapshot events and the snapshot service)."""
        return self._side_top(_BIDS, _U32), self._side_top(_ASKS, _U32)

    def _side_top(self, side: int, n: int) -> list[Level]:
        given = self._given
        if given and given[side] is not None:
            return list(given[side][:max(0, n)])  # as loaded: the caller's own level objects
        return _top(self._c, side, n)
