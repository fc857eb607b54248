"""Normalized market-data events: the one schema every adapter emits.

Nothing downstream of an adapter sees venue JSON. Every event starts with the same five
fields so consumers can treat them uniformly:

- ``symbol``: normalized symbol (``BTC-USDT`` spot, ``BTC-USDT-PERP`` linear perpetual,
  ``BTC-USD-PERP`` inverse perpetual, dated futures and options keep the venue id, e.g.
  ``BTC-24SEP21-8000-P``); the instance (``okx_spot``) is the ring / topic the event travels on.
- ``seq``: the venue's own sequence for the stream (Binance ``u``, OKX ``seqId``, Deribit
  ``change_id``, trade id where numeric), 0 when the venue has none.
- ``ts_exchange``: venue event time, ns since the epoch (0 if the venue gives none).
- ``ts_recv``: wall-clock receive time, ns since the epoch.
- ``ts_recv_mono``: ``CLOCK_MONOTONIC`` receive time, ns (for latency, immune to clock steps).

Prices, sizes and rates are the venue's decimal strings exactly as sent (never rounded
through binary floats). Venues that send JSON numbers (Deribit) are carried as the shortest
round-trip ``repr`` of the number, which is the text they sent. Book levels are
``(price, size)`` pairs, best first; size ``"0"`` (any zero) in a delta removes the level.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple, Union

Level = Sequence[str]  # [price, size] (venue lists may carry extra trailing fields)


class Kind(IntEnum):
    """Event kind; also the ring record type id (always > 0)."""

    BOOK_SNAPSHOT = 1
    BOOK_DELTA = 2
    TRADE = 3
    FUNDING = 4
    OPEN_INTEREST = 5
    LIQUIDATION = 6
    LONG_SHORT_RATIO = 7
    VOLATILITY_INDEX = 8
    GAP = 9


class BookSnapshot(NamedTuple):
    """Full book after a (re)sync; deltas with ``prev_seq == seq`` follow."""

    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    bids: Sequence[Level]  # best (highest) first
    asks: Sequence[Level]  # best (lowest) first


class BookDelta(NamedTuple):
    """Changed levels; absolute sizes, zero size removes the level."""

    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    prev_seq: int  # seq of the book state this delta applies to
    bids: Sequence[Level]
    asks: Sequence[Level]


class Trade(NamedTuple):
    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    trade_id: str
    side: str  # taker side: "buy" or "sell"
    price: str
    size: str


class Funding(NamedTuple):
    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    rate: str
    next_funding_ts: int  # ns, 0 if unknown
    mark_price: str  # "" if the venue did not send one


class OpenInterest(NamedTuple):
    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    open_interest: str  # contracts (venue unit)
    open_interest_value: str  # quote-currency value, "" if not sent


class Liquidation(NamedTuple):
    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    side: str  # side of the liquidation order: "buy" or "sell"
    price: str
    size: str


class LongShortRatio(NamedTuple):
    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    ratio: str  # long accounts / short accounts
    period: str  # venue aggregation period, e.g. "5m"


class VolatilityIndex(NamedTuple):
    symbol: str  # index name, e.g. "BTC-DVOL"
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    value: str


class Gap(NamedTuple):
    """Data is missing for ``symbol`` from here on until the next ``BookSnapshot``.

    Emitted when a book is invalidated (sequence gap, reset, checksum mismatch, crossed
    book, disconnect); ``seq`` is the last good sequence, ``reason`` a short token.
    """

    symbol: str
    seq: int
    ts_exchange: int
    ts_recv: int
    ts_recv_mono: int
    reason: str
    detail: str


Event = Union[  # noqa: UP007 - a runtime alias, kept readable
    BookSnapshot, BookDelta, Trade, Funding, OpenInterest, Liquidation, LongShortRatio,
    VolatilityIndex, Gap,
]

KIND_OF: dict[type, Kind] = {
    BookSnapshot: Kind.BOOK_SNAPSHOT,
    BookDelta: Kind.BOOK_DELTA,
    Trade: Kind.TRADE,
    Funding: Kind.FUNDING,
    OpenInterest: Kind.OPEN_INTEREST,
    Liquidation: Kind.LIQUIDATION,
    LongShortRatio: Kind.LONG_SHORT_RATIO,
    VolatilityIndex: Kind.VOLATILITY_INDEX,
    Gap: Kind.GAP,
}
TYPE_OF: dict[Kind, type] = {kind: cls for cls, kind in KIND_OF.items()}

# Gap reasons (the label values of the resync counter).
GAP_SEQUENCE = "sequence_gap"
GAP_RESET = "sequence_reset"
GAP_CHECKSUM = "checksum_mismatch"
GAP_CROSSED = "crossed_book"
GAP_DISCONNECT = "disconnect"
GAP_SNAPSHOT = "snapshot_failed"
GAP_RESUBSCRIBE = "resubscribe"
GAP_RESTART = "collector_restart"  # the collector was down: nothing was collected meanwhile
GAP_REASONS = (
    GAP_SEQUENCE, GAP_RESET, GAP_CHECKSUM, GAP_CROSSED, GAP_DISCONNECT, GAP_SNAPSHOT,
    GAP_RESUBSCRIBE, GAP_RESTART,
)

__all__ = [
    "Kind", "Level", "Event", "BookSnapshot", "BookDelta", "Trade", "Funding", "OpenInterest",
    "Liquidation", "LongShortRatio", "VolatilityIndex", "Gap", "KIND_OF", "TYPE_OF",
    "GAP_REASONS",
]
