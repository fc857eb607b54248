"""The synthetic market: a seeded random-walk order book, trades and derivatives data.

One :class:`Market` per (venue, venue symbol), shared by every connection and by REST, so a
snapshot fetched over REST is always in sync with what the stream has sent. Venue modules
render its events; nothing here knows JSON.

The book lives in integer ticks and lots (never floats, never ``Decimal``). Each side is a
dict ``key -> lots`` plus an ascending key list, with bid keys negated (``key = -tick``) so
index 0 is the best level on both sides and one code path serves both. Price and size
strings are rendered once per distinct tick / lot count and cached, so the hot path is dict
lookups and string joins.

Sequencing, the part every adapter test leans on:

- every book change bumps ``update_id`` (Binance ``U``/``u`` count changes); changes
  accumulate in a *pending* window until the next event flushes them;
- every book event bumps ``seq`` by a random step of 2..9 (OKX ``seqId`` and Deribit
  ``change_id`` are not contiguous on the real venues either);
- :meth:`Market.rest_snapshot` makes sure one change is pending before it reads the book and
  adds one after, so the next event has ``U <= lastUpdateId < u``: it straddles the snapshot
  under both the spot rule (``U <= L+1 <= u``) and the USD-M rule (``U <= L <= u``).

The book never crosses: an insert on one side is clamped to stay strictly inside the
opposite best, and a mild pull toward the starting price keeps the walk (and the depth of
>= 100 levels a side) bounded over long runs. Not thread safe: the event loop owns it.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from bisect import bisect_left, insort
from collections.abc import Callable
from math import floor
from typing import NamedTuple

MIN_DEPTH = 120  # levels per side the walk keeps at least (>= 100 promised)
MAX_DEPTH = 200
START_DEPTH = 160

# Rough starting prices by base asset; others get a stable pseudo-random price.
BASE_PRICES = {
    "BTC": 30000.0, "ETH": 2000.0, "BNB": 300.0, "SOL": 100.0, "XRP": 0.5, "DOGE": 0.08,
    "ADA": 0.4, "LTC": 80.0, "DOT": 6.0, "LINK": 15.0, "AVAX": 30.0, "TRX": 0.1,
}
QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")


class SymbolSpec(NamedTuple):
    """Contract details of one synthetic instrument (all integers: no float drift)."""

    price_decimals: int  # decimals of the price grid
    tick: int  # tick size in units of 10**-price_decimals (5 with 1 decimal = 0.5)
    size_decimals: int
    lot: int  # lot size in units of 10**-size_decimals
    mid: int  # starting mid price, in ticks
    max_lots: int  # largest resting size, in lots


def base_asset(symbol: str) -> str:
    """``BTCUSDT`` / ``BTC-USDT-SWAP`` / ``BTC_USDC-PERPETUAL`` / ``btc_usd`` -> ``BTC``."""
    s = symbol.upper()
    for sep in ("-", "_"):
        if sep in s:
            return s.split(sep, 1)[0]
    for quote in QUOTES:
        if s.endswith(quote) and len(s) > len(quote):
            return s[: -len(quote)]
    return s


def spec_for(venue: str, symbol: str) -> SymbolSpec:
    """Deterministic contract spec from the symbol alone (same on every run and seed)."""
    base = base_asset(symbol)
    h = zlib.crc32(symbol.upper().encode())
    if venue == "deribit" and symbol.endswith(("-C", "-P")):
        # Options trade in coin: tick 0.0005, 0.1 contract lots, price ~0.5-1.0 coin.
        return SymbolSpec(4, 5, 1, 1, 1000 + h % 1000, 500)
    if venue == "deribit" and base == "BTC":  # USD amounts in multiples of 10, tick 0.5
        return SymbolSpec(1, 5, 0, 10, int(BASE_PRICES["BTC"] * 2), 5000)
    if venue == "deribit" and base == "ETH":  # USD amounts, tick 0.05
        return SymbolSpec(2, 5, 0, 1, int(BASE_PRICES["ETH"] * 20), 50000)
    price = BASE_PRICES.get(base) or 10 ** ((h % 5000) / 1000 - 2)  # 0.01 .. 1000
    mag = math.floor(math.log10(price))
    price_decimals = min(8, max(0, 5 - mag))  # relative tick ~1e-6..1e-5
    size_decimals = min(8, max(0, mag))
    mid = int(price * 10**price_decimals)
    return SymbolSpec(price_decimals, 1, size_decimals, 1, max(mid, 1000), 10000)


def fixed(units: int, decimals: int) -> str:
    """``fixed(12345, 2) == "123.45"``: an integer count of 10**-decimals as a decimal."""
    if decimals <= 0:
        return str(units)
    s = str(units).rjust(decimals + 1, "0")
    return f"{s[:-decimals]}.{s[-decimals:]}"


FMT_CACHE_MAX = 1 << 16  # texts one Fmt keeps (a soak run would otherwise keep every price)


class TextCache(dict[int, str]):
    """An :class:`Fmt`'s texts by integer; ``cache[n]`` renders (and keeps) a missing one.

    Renderers index it directly: one subscript per price or size, where ``.get(n) or
    render(n)`` cost a method call and a branch on the hottest lines of the replay.
    """

    __slots__ = ("render",)

    def __init__(self, render: Callable[[int], str]) -> None:
        super().__init__()
        self.render = render

    def __missing__(self, n: int) -> str:
        return self.render(n)


class Fmt:
    """Renders an integer (ticks or lots) as the venue's decimal text, cached.

    ``style`` is ``"fixed"`` (pad to ``decimals``, Binance), ``"trim"`` (no trailing zeros,
    OKX) or ``"number"`` (shortest float repr, the text of a JSON number, Deribit).
    """

    __slots__ = ("cache", "unit", "decimals", "style")

    def __init__(self, unit: int, decimals: int, style: str, out_decimals: int | None = None):
        out = decimals if out_decimals is None else max(out_decimals, decimals)
        self.unit = unit * 10 ** (out - decimals)
        self.decimals = out
        self.style = style
        self.cache = TextCache(self.render)

    def render(self, n: int) -> str:
        s = fixed(n * self.unit, self.decimals)
        if self.style == "trim" and "." in s:
            s = s.rstrip("0").rstrip(".")
        elif self.style == "number":
            s = repr(float(s))
        cache = self.cache
        if len(cache) >= FMT_CACHE_MAX:  # a random walk drifts: old prices rarely return
            cache.clear()  # in place: callers hold a reference to this dict
        cache[n] = s
        return s


class Side:
    """One side of the synthetic book; ``sign`` maps keys to ticks (bids: -1)."""

    __slots__ = ("levels", "keys", "touched", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, int] = {}  # key -> lots
        self.keys: list[int] = []  # ascending: index 0 is the best level
        self.touched: dict[int, bool] = {}  # pending window: key -> existed before

    def set(self, key: int, lots: int) -> None:
        """Absolute size at ``key`` (0 removes), remembered in the pending window."""
        levels = self.levels
        touched = self.touched
        if key not in touched:
            touched[key] = key in levels
        if lots:
            if key not in levels:
                insort(self.keys, key)
            levels[key] = lots
        elif levels.pop(key, None) is not None:
            del self.keys[bisect_left(self.keys, key)]

    def resize(self, key: int, lots: int) -> None:
        """:meth:`set` for a level that exists and stays (``lots`` > 0): no key list work."""
        touched = self.touched
        if key not in touched:
            touched[key] = True
        self.levels[key] = lots

    def remove(self, key: int) -> None:
        """:meth:`set` ``(key, 0)`` for a level that exists."""
        touched = self.touched
        if key not in touched:
            touched[key] = True
        del self.levels[key]
        keys = self.keys
        del keys[bisect_left(keys, key)]

    def flush(self) -> list[tuple[int, int, bool]]:
        """The pending window as (tick, lots now, existed before); clears it."""
        touched = self.touched
        out: list[tuple[int, int, bool]] = []
        if touched:  # a loop: on Python 3.11 cheaper than a comprehension for 0-3 changes
            self.touched = {}
            get = self.levels.get
            sign = self.sign
            for k, was in touched.items():
                out.append((sign * k, get(k, 0), was))
        return out

    def top(self, n: int) -> list[tuple[int, int]]:
        """(tick, lots) of the best ``n`` levels, best first."""
        levels = self.levels
        sign = self.sign
        return [(sign * k, levels[k]) for k in self.keys[:n]]


class Book:
    """Random-walk book: modify / insert / remove near the top, depth kept in bounds."""

    __slots__ = ("bids", "asks", "rng", "max_lots", "anchor", "_twice_anchor", "_pull_scale")

    def __init__(self, mid: int, max_lots: int, rng: random.Random) -> None:
        self.rng = rng
        self.max_lots = max_lots
        self.anchor = mid
        self._twice_anchor = 2 * mid  # up_bias terms, computed once
        self._pull_scale = mid * 0.16
        self.bids = Side(-1)
        self.asks = Side(1)
        rnd = rng.random
        bid, ask = mid - 1, mid + 1
        for _ in range(START_DEPTH):
            if bid >= 1:
                self.bids.set(-bid, self.lots())
            self.asks.set(ask, self.lots())
            bid -= 1 + int(rnd() * 2)
            ask += 1 + int(rnd() * 2)
        self.bids.touched = {}
        self.asks.touched = {}

    def lots(self) -> int:
        return int(self.max_lots ** self.rng.random())  # log-uniform in [1, max_lots]

    def pending(self) -> bool:
        return bool(self.bids.touched or self.asks.touched)

    def up_bias(self) -> float:
        """Probability that a price-moving change moves the mid up: a pull toward the
        anchor (at 2% away, moves toward it are 75% likely) keeps the walk bounded."""
        drift = (self.asks.keys[0] - self.bids.keys[0] - self._twice_anchor) / self._pull_scale
        if drift > 0.25:
            return 0.25
        if drift < -0.25:
            return 0.75
        return 0.5 - drift

    def step(self, up: float, n: int = 1) -> None:
        """``n`` book changes, each possibly plus a depth-keeping change at the far end.

        One call per event rather than per change: the locals below are looked up once.
        Levels picked from ``keys`` exist, so they take the cheaper ``resize`` / ``remove``
        (sizes are ``floor(max_lots ** r)`` >= 1: a resize never removes). ``floor`` is
        ``int`` on the non-negative floats here, and a much cheaper call.
        """
        rnd = self.rng.random
        max_lots = self.max_lots
        bids, asks = self.bids, self.asks
        for _ in range(n):
            r = rnd()
            if r < 0.55:  # resize a level near the top (the common case)
                side = bids if r < 0.275 else asks
                keys = side.keys
                side.resize(keys[floor(len(keys) * rnd() ** 3)], floor(max_lots ** rnd()))
            elif r < 0.78:  # insert near the top: improving bids / asks moves the mid up / down
                side, other = (bids, asks) if rnd() < up else (asks, bids)
                keys = side.keys
                best = keys[0]
                room = best + other.keys[0] - 1  # free ticks strictly inside the spread
                if room > 0 and rnd() < 0.5:  # improve the best, never crossing
                    key = best - 1 - floor(rnd() * room)
                else:  # a new level behind the best, as top-heavy as removals are
                    key = best + 1 + floor((keys[-1] - best) * rnd() ** 3)
                if key in side.levels or (side.sign < 0 and key > -1):
                    key = keys[floor(len(keys) * rnd() ** 3)]  # taken (or below 0): resize one
                side.set(key, floor(max_lots ** rnd()))
            else:  # remove near the top: removing asks / bids moves the mid up / down
                side = asks if rnd() < up else bids
                keys = side.keys  # the best level goes 20% of the time; depth is refilled below
                side.remove(keys[0 if rnd() < 0.2 else floor(len(keys) * rnd() ** 3)])
            depth = len(keys)  # side.keys: the list is updated in place
            if depth > MAX_DEPTH:
                side.remove(keys[-1])
            elif depth < MIN_DEPTH:
                self._refill(side)

    def _refill(self, side: Side) -> None:
        """Add a level behind the worst one (a bid hole instead at the one-tick floor)."""
        rnd = self.rng.random
        keys = side.keys
        key = keys[-1] + 1 + floor(rnd() * 2)
        if side.sign < 0 and key > -1:  # bids cannot go below one tick: fill a hole
            key = keys[0] + 1 + floor((keys[-1] - keys[0]) * rnd())
        if key not in side.levels:
            side.set(key, floor(self.max_lots ** rnd()))


# ``_new_tuple(BookEvent, values)`` builds a NamedTuple without its Python-level __new__
# (about half the cost of ``BookEvent(*values)``); the hot paths build one per message.
_new_tuple = tuple.__new__


class BookEvent(NamedTuple):
    """One book push: the changes since the previous one plus every id scheme's view."""

    first_id: int  # Binance U: first change in this event
    last_id: int  # Binance u: last change in this event
    prev_last_id: int  # Binance USD-M pu: u of the previous event
    seq: int  # OKX seqId / Deribit change_id
    prev_seq: int  # OKX prevSeqId / Deribit prev_change_id
    bids: list[tuple[int, int, bool]]  # (tick, lots now (0 = removed), existed before)
    asks: list[tuple[int, int, bool]]
    ts_ms: int


class TradeEvent(NamedTuple):
    trade_id: int
    first_id: int  # aggregate trades: first and last trade id folded in
    last_id: int
    tick: int
    lots: int
    buy: bool  # taker side
    ts_ms: int


class Market:
    """Shared state of one synthetic instrument on one venue (see module docstring)."""

    def __init__(self, venue: str, symbol: str, seed: int, style: str,
                 out_decimals: int | None = None) -> None:
        self.venue = venue
        self.symbol = symbol  # venue id
        self.spec = spec = spec_for(venue, symbol)
        self.rng = rng = random.Random(zlib.crc32(f"{seed}:{venue}:{symbol}".encode()))
        self.book = Book(spec.mid, spec.max_lots, rng)
        self.trade_max = spec.max_lots // 10  # largest trade, in lots
        self.px = Fmt(spec.tick, spec.price_decimals, style, out_decimals)
        self.sz = Fmt(spec.lot, spec.size_decimals, style, out_decimals)
        self.update_id = rng.randrange(10**9, 2 * 10**9)
        self.first_pending = self.update_id + 1
        self.last_u = self.update_id
        self.seq = rng.randrange(10**9, 2 * 10**9)
        self.trade_id = rng.randrange(10**8, 10**9)
        self.agg_id = rng.randrange(10**8, 10**9)
        self.funding_e8 = 10000 + rng.randrange(-5000, 5000)  # rate in 1e-8: 0.0001 +- 0.00005
        self.oi_lots = spec.max_lots * 1000 * (1 + rng.randrange(100))
        self.ratio_e4 = 10000 + rng.randrange(-3000, 3000)  # long/short accounts, 1e-4
        self.vol_e2 = 6000 + rng.randrange(-2000, 2000)  # volatility index, 1e-2
        self.streams: dict[str, list] = {}  # kind -> subscribed session streams

    # ----- book ---------------------------------------------------------------------------
    def _change(self) -> None:
        book = self.book
        if not book.pending():
            self.first_pending = self.update_id + 1
        self.update_id += 1
        book.step(book.up_bias())

    def next_book_event(self, reset: bool = False) -> BookEvent:
        """Advance the book by 1-3 changes and flush them as one event.

        ``reset`` makes this event's ``seq`` lower than its ``prev_seq`` (OKX's sequence
        reset after maintenance); later events chain from the lower value.
        """
        book = self.book
        bids, asks = book.bids, book.asks
        if not book.pending():
            self.first_pending = self.update_id + 1
        rnd = self.rng.random
        n = 1 + floor(rnd() * 3)
        book.step(book.up_bias(), n)
        self.update_id = last = self.update_id + n
        prev_seq = self.seq
        self.seq = seq = max(1, prev_seq // 3) if reset else prev_seq + 2 + floor(rnd() * 8)
        ev = _new_tuple(BookEvent, (self.first_pending, last, self.last_u, seq, prev_seq,
                                    bids.flush(), asks.flush(), time.time_ns() // 1000000))
        self.last_u = last
        return ev

    def rest_snapshot(self, limit: int) -> tuple[int, list[tuple[int, int]],
                                                  list[tuple[int, int]]]:
        """(lastUpdateId, bids, asks) straddled by the next event (module docstring)."""
        if not self.book.pending():
            self._change()
        last = self.update_id
        bids, asks = self.book.bids.top(limit), self.book.asks.top(limit)
        self._change()
        return last, bids, asks

    def top(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The book as last pushed (WS snapshots; no pending changes outside events)."""
        return self.book.bids.top(n), self.book.asks.top(n)

    def okx_checksum(self) -> int:
        """OKX's CRC32: top 25 levels, ``bid:ask`` interleaved ``price:size``, signed 32-bit."""
        px, sz = self.px.cache, self.sz.cache
        bids, asks = self.book.bids, self.book.asks
        bid_text = [f"{px[-k]}:{sz[bids.levels[k]]}" for k in bids.keys[:25]]
        ask_text = [f"{px[k]}:{sz[asks.levels[k]]}" for k in asks.keys[:25]]
        n = min(len(bid_text), len(ask_text))
        parts = [text for pair in zip(bid_text[:n], ask_text[:n], strict=True) for text in pair]
        parts += bid_text[n:] + ask_text[n:]  # the longer side's remaining levels
        crc = zlib.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc

    def far_levels(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``n`` extra levels a side beyond the book (the ``huge_book`` fault)."""
        worst_bid = -self.book.bids.keys[-1]
        worst_ask = self.book.asks.keys[-1]
        bids = [(t, 1 + t % 97) for t in range(worst_bid - 1, max(0, worst_bid - 1 - n), -1)]
        asks = [(t, 1 + t % 89) for t in range(worst_ask + 1, worst_ask + 1 + n)]
        return bids, asks

    # ----- everything else ---------------------------------------------------------------------
    def best(self) -> tuple[int, int]:
        """(best bid tick, best ask tick)."""
        return -self.book.bids.keys[0], self.book.asks.keys[0]

    def next_trade(self, aggregate: bool = False) -> TradeEvent:
        """One trade at the touch (aggregate: folding 1-3 trade ids); the taker side is random."""
        rnd = self.rng.random
        buy = rnd() < 0.5
        tick = self.book.asks.keys[0] if buy else -self.book.bids.keys[0]
        first = self.trade_id + 1
        if aggregate:
            self.trade_id = last = first + floor(rnd() * 3)
            self.agg_id += 1
        else:
            self.trade_id = last = first
        lots = 1 + floor(self.trade_max ** rnd())
        return _new_tuple(TradeEvent, (self.agg_id if aggregate else last, first, last, tick,
                                       lots, buy, time.time_ns() // 1000000))

    def mark_price(self) -> str:
        bid, ask = self.best()
        return self.price_text((bid + ask) // 2)

    def next_funding(self) -> int:
        """Funding rate in 1e-8 after one random-walk step, kept within +-0.00375."""
        self.funding_e8 = max(-375000, min(375000, self.funding_e8 + int(self.rng.random() * 41)
                                           - 20))
        return self.funding_e8

    def next_open_interest(self) -> int:
        """Open interest in lots after one random-walk step (always positive)."""
        step = self.spec.max_lots * (int(self.rng.random() * 21) - 10)
        self.oi_lots = max(self.spec.max_lots, self.oi_lots + step)
        return self.oi_lots

    def next_ratio(self) -> int:
        """Long/short account ratio in 1e-4 (between 0.3 and 3)."""
        self.ratio_e4 = max(3000, min(30000, self.ratio_e4 + int(self.rng.random() * 201) - 100))
        return self.ratio_e4

    def next_volatility(self) -> int:
        """Volatility index in 1e-2 (between 20 and 200)."""
        self.vol_e2 = max(2000, min(20000, self.vol_e2 + int(self.rng.random() * 41) - 20))
        return self.vol_e2

    def size_text(self, lots: int) -> str:
        return self.sz.cache[lots]

    def price_text(self, tick: int) -> str:
        return self.px.cache[tick]


def rate_text(value: int, decimals: int) -> str:
    """A signed fixed-point integer as decimal text: ``rate_text(-12, 4) == "-0.0012"``."""
    return ("-" if value < 0 else "") + fixed(abs(value), decimals)


def next_funding_time_ms(now_ms: int | None = None, period_h: int = 8) -> int:
    """The next funding settlement (every ``period_h`` hours from 00:00 UTC), in ms."""
    now = time.time_ns() // 1000000 if now_ms is None else now_ms
    period = period_h * 3600 * 1000
    return (now // period + 1) * period


class Markets:
    """Registry of the synthetic markets, created on first use, all from one seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._markets: dict[tuple[str, str], Market] = {}

    def get(self, venue: str, symbol: str, style: str, out_decimals: int | None = None) -> Market:
        m = self._markets.get((venue, symbol))
        if m is None:
            m = self._markets[(venue, symbol)] = Market(venue, symbol, self.seed, style,
                                                        out_decimals)
        return m

    def find(self, venue: str, symbol: str) -> Market | None:
        return self._markets.get((venue, symbol))

    def __len__(self) -> int:
        return len(self._markets)
