"""Built-in per-symbol analysis: what one symbol's recent data says, computed on demand.

The hot path only records (a few list appends per trade, one comparison per book update);
the figures are computed when a result is published (at most every ``publish_interval`` per
symbol) or the stats block is refreshed, so their cost does not scale with the event rate.

Time is the data's own clock: ``ts_recv`` of the events (ns since the epoch, set by the
collector), so a replayed or backlogged stream gives the same figures as a live one, and tests
are deterministic. Rolling windows end at ``now`` (the newest ``ts_recv`` of the instance).

Figures (``None`` when the data needed is absent):

- ``mid``, ``spread``, ``spread_bps``, ``best_bid``, ``best_ask``;
- ``imbalance``: (bid depth - ask depth) / (bid depth + ask depth) over the best N levels;
- ``microprice``: best bid/ask weighted by the opposite side's size;
- per window: trade ``vwap``, ``volume``, ``buy_volume``, ``trades`` (window edges rounded
  to a tenth of the shortest window);
- ``realized_vol``: sqrt of the sum of squared log returns of the mid sampled every
  ``vol_sample`` seconds over ``vol_window`` (not annualized), with its sample count;
- ``funding_rate`` and its change since the previous update and over ``change_window``;
  ``open_interest`` likewise (absolute and relative change);
- liquidations within ``liquidation_window`` (count, notional), ``liquidation_burst`` while
  the count is at or above the burst threshold, and how many bursts began so far.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from supervisor.analyzer.settings import Settings
from supervisor.analyzer.state import BookState

NS = 1_000_000_000


class TradeWindows:
    """Trade VWAP / volume over several rolling windows, from time buckets.

    Trades are summed into buckets a tenth of the shortest window wide, so memory is bounded
    by the window length, not the trade rate (a 60 s window of a 10k trades/s symbol is 600
    buckets, not 600,000 trades); window edges are rounded to the bucket width. ``add`` is a
    few float additions; :meth:`advance` folds sealed buckets into each window's sums and
    evicts the buckets that left it. The bucket log is trimmed once no window needs its head.
    """

    __slots__ = ("spans", "width", "cur", "cpv", "cv", "cbuy", "cn", "starts", "pv", "v",
                 "buy", "n", "heads", "added", "spv", "sv", "sbuy", "sn")

    def __init__(self, spans_s: tuple[float, ...]) -> None:
        self.spans = tuple(int(s * NS) for s in spans_s)
        self.width = max(1, min(self.spans) // 10)
        self.cur = -1  # start of the open bucket
        self.cpv = self.cv = self.cbuy = 0.0
        self.cn = 0
        self.starts: list[int] = []  # sealed buckets
        self.pv: list[float] = []
        self.v: list[float] = []
        self.buy: list[float] = []
        self.n: list[int] = []
        k = len(self.spans)
        self.heads = [0] * k  # first bucket inside window j
        self.added = 0  # buckets already folded into the sums
        self.spv = [0.0] * k
        self.sv = [0.0] * k
        self.sbuy = [0.0] * k
        self.sn = [0] * k

    def add(self, ts: int, price: float, size: float, is_buy: bool) -> None:
        start = ts - ts % self.width
        if start != self.cur:
            self._seal()
            self.cur = start
        self.cpv += price * size
        self.cv += size
        self.cn += 1
        if is_buy:
            self.cbuy += size

    def _seal(self) -> None:
        if self.cn:
            self.starts.append(self.cur)
            self.pv.append(self.cpv)
            self.v.append(self.cv)
            self.buy.append(self.cbuy)
            self.n.append(self.cn)
            self.cpv = self.cv = self.cbuy = 0.0
            self.cn = 0

    @property
    def empty(self) -> bool:
        return not self.cn and not self.starts

    def advance(self, now: int) -> None:
        self._seal()
        starts, pv, v, buy, n = self.starts, self.pv, self.v, self.buy, self.n
        end = len(starts)
        a = self.added
        new = (sum(pv[a:end]), sum(v[a:end]), sum(buy[a:end]), sum(n[a:end]))
        self.added = end
        for j, span in enumerate(self.spans):
            self.spv[j] += new[0]
            self.sv[j] += new[1]
            self.sbuy[j] += new[2]
            self.sn[j] += new[3]
            h = first = self.heads[j]
            cutoff = now - span
            while h < end and starts[h] <= cutoff:
                h += 1
            if h != first:
                self.spv[j] -= sum(pv[first:h])
                self.sv[j] -= sum(v[first:h])
                self.sbuy[j] -= sum(buy[first:h])
                self.sn[j] -= sum(n[first:h])
                if h == end:  # empty window: drop the rounding residue
                    self.spv[j] = self.sv[j] = self.sbuy[j] = 0.0
            self.heads[j] = h
        head = min(self.heads)
        if head > 256 and head * 2 > end:
            del starts[:head], pv[:head], v[:head], buy[:head], n[:head]
            self.heads = [h - head for h in self.heads]
            self.added -= head
            for j, h in enumerate(self.heads):  # exact sums again after the trim
                self.spv[j] = math.fsum(pv[h:])
                self.sv[j] = math.fsum(v[h:])
                self.sbuy[j] = math.fsum(buy[h:])

    def figures(self, labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for j, label in enumerate(labels):
            count = self.sn[j]
            sv = self.sv[j]
            out[label] = {"trades": count, "volume": sv if count else 0.0,
                          "buy_volume": self.sbuy[j] if count else 0.0,
                          "vwap": self.spv[j] / sv if count and sv > 0 else None}
        return out


class History:
    """(ts, value) samples kept for ``span`` ns: latest, previous, and change over the span."""

    __slots__ = ("span", "items", "prev")

    def __init__(self, span_s: float) -> None:
        self.span = int(span_s * NS)
        self.items: deque[tuple[int, float]] = deque()
        self.prev: float | None = None

    def add(self, ts: int, value: float) -> None:
        items = self.items
        if items:
            self.prev = items[-1][1]
        items.append((ts, value))

    def figures(self, now: int) -> tuple[float | None, float | None, float | None]:
        """(latest, change since previous sample, change over the span)."""
        items = self.items
        while len(items) > 1 and items[0][0] < now - self.span:
            items.popleft()
        if not items:
            return None, None, None
        last = items[-1][1]
        since_prev = None if self.prev is None else last - self.prev
        return last, since_prev, last - items[0][1]


class Liquidations:
    """Liquidations inside a window; a burst starts when the count reaches a threshold."""

    __slots__ = ("span", "threshold", "items", "notional", "bursts", "in_burst")

    def __init__(self, span_s: float, threshold: int) -> None:
        self.span = int(span_s * NS)
        self.threshold = threshold
        self.items: deque[tuple[int, float]] = deque()
        self.notional = 0.0
        self.bursts = 0
        self.in_burst = False

    def _evict(self, now: int) -> None:
        items = self.items
        while items and items[0][0] <= now - self.span:
            self.notional -= items.popleft()[1]
        if not items:
            self.notional = 0.0

    def add(self, ts: int, price: float, size: float) -> bool:
        """Record one; True when this liquidation starts a burst."""
        self._evict(ts)
        self.items.append((ts, price * size))
        self.notional += price * size
        burst = len(self.items) >= self.threshold
        started = burst and not self.in_burst
        if started:
            self.bursts += 1
        self.in_burst = burst
        return started

    def figures(self, now: int) -> dict[str, Any]:
        self._evict(now)
        self.in_burst = len(self.items) >= self.threshold
        return {"count": len(self.items), "notional": self.notional,
                "burst": self.in_burst, "bursts": self.bursts}


class RealizedVol:
    """Mid sampled on a fixed grid of ``sample`` ns; sum of squared log returns in a window."""

    __slots__ = ("sample", "span", "next_ts", "last_mid", "ts", "r2", "head", "sum")

    def __init__(self, sample_s: float, span_s: float) -> None:
        self.sample = int(sample_s * NS)
        self.span = int(span_s * NS)
        self.next_ts = 0
        self.last_mid = 0.0
        self.ts: list[int] = []
        self.r2: list[float] = []
        self.head = 0
        self.sum = 0.0

    def sample_mid(self, ts: int, mid: float) -> None:
        """Called when ``ts`` reached ``next_ts`` (the caller checks, it is the hot path)."""
        if self.last_mid > 0.0 and mid > 0.0:
            r = math.log(mid / self.last_mid)
            self.ts.append(ts)
            self.r2.append(r * r)
            self.sum += r * r
        self.last_mid = mid
        self.next_ts = ts - ts % self.sample + self.sample

    def reset(self) -> None:
        """The book broke: the next sample starts a new series (no return across a gap)."""
        self.last_mid = 0.0

    def figures(self, now: int) -> tuple[float | None, int]:
        ts, r2 = self.ts, self.r2
        h = self.head
        while h < len(ts) and ts[h] <= now - self.span:
            self.sum -= r2[h]
            h += 1
        if h > 1024 and h * 2 > len(ts):
            del ts[:h], r2[:h]
            h = 0
            self.sum = math.fsum(r2)
        self.head = h
        n = len(ts) - h
        if n == 0:
            self.sum = 0.0
            return None, 0
        return math.sqrt(max(self.sum, 0.0)), n


class SymbolAnalytics:
    """Everything the built-in analysis keeps for one symbol."""

    __slots__ = ("symbol", "book", "trades", "vol", "funding", "mark_price", "oi", "oi_value",
                 "liq", "long_short", "vol_index", "ring_seq", "ts", "dirty", "published",
                 "last_trade")

    def __init__(self, symbol: str, settings: Settings) -> None:
        self.symbol = symbol
        self.book = BookState()
        self.trades = TradeWindows(settings.windows)
        self.vol = RealizedVol(settings.vol_sample, settings.vol_window)
        self.funding = History(settings.change_window)
        self.mark_price: float | None = None
        self.oi = History(settings.change_window)
        self.oi_value: float | None = None
        self.liq = Liquidations(settings.liquidation_window, settings.liquidation_burst)
        self.long_short: float | None = None
        self.vol_index: float | None = None
        self.last_trade: float | None = None
        self.ring_seq = 0  # ring sequence of the newest event applied
        self.ts = 0  # ts_recv of the newest event applied
        self.dirty = False  # changed since the last published result
        self.published = 0.0  # monotonic time of the last published result

    def result(self, now: int, depth_levels: int, labels: tuple[str, ...]) -> dict[str, Any]:
        """The symbol's figures now (a JSON-ready dict; see the module docstring)."""
        out: dict[str, Any] = {"symbol": self.symbol, "ring_seq": self.ring_seq,
                               "ts": self.ts}
        book = self.book
        state, bid, bsz, ask, asz = book.top()
        if book.valid and state:
            mid = (bid + ask) / 2
            bd = book.depth(0, depth_levels)
            ad = book.depth(1, depth_levels)
            out.update(best_bid=bid, best_ask=ask, mid=mid, spread=ask - bid,
                       spread_bps=(ask - bid) / mid * 1e4 if mid > 0 else None,
                       imbalance=(bd - ad) / (bd + ad) if bd + ad > 0 else None,
                       microprice=(bid * asz + ask * bsz) / (bsz + asz),
                       book_levels=book.level_count())
        out["book_valid"] = book.valid
        if not self.trades.empty:
            self.trades.advance(now)
            out["trades"] = self.trades.figures(labels)
            out["last_trade"] = self.last_trade
        rv, n = self.vol.figures(now)
        if n:
            out["realized_vol"] = rv
            out["realized_vol_samples"] = n
        if self.funding.items:
            rate, d_prev, d_span = self.funding.figures(now)
            out.update(funding_rate=rate, funding_rate_change=d_prev,
                       funding_rate_change_window=d_span, mark_price=self.mark_price)
        if self.oi.items:
            oi, d_prev, d_span = self.oi.figures(now)
            base = oi - d_span if oi is not None and d_span is not None else None
            out.update(open_interest=oi, open_interest_change=d_prev,
                       open_interest_change_window=d_span,
                       open_interest_change_window_pct=(d_span / base * 100
                                                        if base else None),
                       open_interest_value=self.oi_value)
        if self.liq.items or self.liq.bursts:
            out["liquidations"] = self.liq.figures(now)
        if self.long_short is not None:
            out["long_short_ratio"] = self.long_short
        if self.vol_index is not None:
            out["volatility_index"] = self.vol_index
        return out


def window_labels(windows: tuple[float, ...]) -> tuple[str, ...]:
    """``(1.0, 10.0, 0.5)`` -> ``("1s", "10s", "0.5s")``: keys of the per-window figures."""
    return tuple(f"{w:g}s" for w in windows)


__all__ = ["SymbolAnalytics", "TradeWindows", "History", "Liquidations", "RealizedVol",
           "window_labels"]
