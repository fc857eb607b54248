"""Local order book: one per (instance, symbol), fed by a venue adapter's sync logic.

Levels are kept exactly as the venue sent them (``[price, size, ...]`` string lists, never
copied or rounded), indexed by ``float(price)``: a decimal string with at most 15
significant digits maps to a unique double, so the float is a safe ordering key while the
string stays the published value. Each side is a dict (key -> level) plus a sorted key list
(``bisect``), with bid keys negated so index 0 is the best level on both sides.

Updating an existing level is one dict store; only inserts and removals touch the sorted
list (a C-level memmove). Not thread safe: one adapter task owns each book.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence

from supervisor.events import Level


class BookSide:
    """One side of a book. ``sign`` is -1.0 for bids (best = highest), 1.0 for asks."""

    __slots__ = ("levels", "keys", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.levels: dict[float, Level] = {}
        self.keys: list[float] = []

    def load(self, levels: Iterable[Level]) -> None:
        """Replace the side with a snapshot (zero-size levels are dropped)."""
        sign = self.sign
        book = {sign * float(lv[0]): lv for lv in levels if float(lv[1]) != 0.0}
        for k in book:
            if k - k != 0.0:  # nan or inf: would corrupt the ordering
                raise ValueError(f"non-finite price level {book[k][0]!r}")
        self.levels = book
        self.keys = sorted(book)

    def apply(self, levels: Iterable[Level]) -> None:
        """Apply absolute-size updates; size 0 removes (removing an absent level is fine)."""
        book = self.levels
        keys = self.keys
        sign = self.sign
        for lv in levels:
            k = sign * float(lv[0])
            if float(lv[1]) == 0.0:
                if book.pop(k, None) is not None:
                    del keys[bisect_left(keys, k)]
            else:
                if k not in book:
                    if k - k != 0.0:  # nan or inf: would corrupt the ordering
                        raise ValueError(f"non-finite price level {lv[0]!r}")
                    insort(keys, k)
                book[k] = lv

    def best(self) -> Level | None:
        return self.levels[self.keys[0]] if self.keys else None

    def top(self, n: int) -> list[Level]:
        levels = self.levels
        return [levels[k] for k in self.keys[:n]]

    def __len__(self) -> int:
        return len(self.keys)


class OrderBook:
    """A local book plus the sequence it is at.

    Usage::

        book = OrderBook("BTC-USDT")
        book.load(bids, asks, seq=100)
        book.apply(delta_bids, delta_asks, seq=101)
        if book.crossed(): ...  # never publish this state: resync
    """

    __slots__ = ("symbol", "bids", "asks", "seq", "synced")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(-1.0)
        self.asks = BookSide(1.0)
        self.seq = 0  # venue sequence of the current state
        self.synced = False  # False until a snapshot is loaded; False again after a break

    def load(self, bids: Iterable[Level], asks: Iterable[Level], seq: int) -> None:
        self.bids.load(bids)
        self.asks.load(asks)
        self.seq = seq
        self.synced = True

    def apply(self, bids: Iterable[Level], asks: Iterable[Level], seq: int) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)
        self.seq = seq

    def invalidate(self) -> None:
        """Forget the state (a break was detected); the adapter resyncs."""
        self.bids = BookSide(-1.0)
        self.asks = BookSide(1.0)
        self.synced = False

    def crossed(self) -> bool:
        """True when best bid >= best ask (a state known to be wrong)."""
        b = self.bids.keys
        a = self.asks.keys
        return bool(b) and bool(a) and -b[0] >= a[0]

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        return self.bids.top(n), self.asks.top(n)

    def snapshot_levels(self) -> tuple[Sequence[Level], Sequence[Level]]:
        """Every level, best first (for BookSnapshot events and the snapshot service)."""
        return self.bids.top(len(self.bids)), self.asks.top(len(self.asks))
