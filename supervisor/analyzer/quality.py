"""Data-quality checks: counted per instance and symbol, logged with rate limiting, exported.

The previous system trusted whatever arrived. Each check below has a bound in
:mod:`supervisor.analyzer.settings` (documented defaults) and a name used as the counter key
in the stats block (``quality: {check: {symbol: count}}``) and in the log lines.

Per-event checks count every offending event; state checks count *episodes* (a book that
stays crossed for 50 updates is one crossed episode, counted when it starts):

=================== ======= ===================================================================
check               counts  fires when
=================== ======= ===================================================================
time_gap            events  two consecutive events of a symbol are more than ``time_gap``
                            apart (receive time): data was missing for a while
crossed_book        episode best bid > best ask after an update
locked_book         episode best bid == best ask after an update
nonpositive_size    levels  a snapshot level with size <= 0, or a delta level with size < 0
                            (size 0 in a delta is a removal, the normal case)
price_jump          events  a log return of the mid (on change) or of the trade price exceeds
                            ``jump_sigma`` standard deviations (EWMA variance, armed after
                            ``jump_min_samples`` returns) and ``jump_min_move``
stale_symbol        episode a symbol had no event for ``stale_after`` while the instance's
                            clock moved on (newest receive time; wall clock once caught up)
clock_skew          events  abs(receive time - exchange time) > ``clock_skew`` on streamed
                            kinds (book deltas, trades, funding, liquidations, volatility
                            index; REST-polled and snapshot timestamps are not event times)
misalignment        episode a symbol's smoothed exchange->receive offset differs from the
                            median over the instance's recently active symbols by more than
                            ``misalignment`` (one symbol's stream lags or replays old data)
=================== ======= ===================================================================
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from supervisor.analyzer.settings import Settings

TIME_GAP = "time_gap"
CROSSED_BOOK = "crossed_book"
LOCKED_BOOK = "locked_book"
NONPOSITIVE_SIZE = "nonpositive_size"
PRICE_JUMP = "price_jump"
STALE_SYMBOL = "stale_symbol"
CLOCK_SKEW = "clock_skew"
MISALIGNMENT = "misalignment"
CHECKS = (TIME_GAP, CROSSED_BOOK, LOCKED_BOOK, NONPOSITIVE_SIZE, PRICE_JUMP, STALE_SYMBOL,
          CLOCK_SKEW, MISALIGNMENT)

NS = 1_000_000_000
OFFSET_ALPHA = 0.05  # smoothing of the exchange->receive offset (misalignment)
ACTIVE_WINDOW = 30 * NS  # a symbol counts for the median if it had a timed event this recently


class JumpDetector:
    """Log returns of one price series against an EWMA of their variance.

    Zero returns are ignored (most book updates change sizes, not the mid): the variance is
    that of actual price moves, so a one-tick move is normal and a ten-sigma move is not.
    """

    __slots__ = ("last", "var", "n", "alpha", "k2", "floor", "min_samples")

    def __init__(self, settings: Settings) -> None:
        self.last = 0.0
        self.var = 0.0
        self.n = 0
        self.alpha = 1.0 - 0.5 ** (1.0 / settings.jump_halflife)
        self.k2 = settings.jump_sigma ** 2
        self.floor = math.log1p(settings.jump_min_move)
        self.min_samples = settings.jump_min_samples

    def update(self, price: float) -> float:
        """Feed a price; returns the return if it is a jump, else 0.0."""
        last = self.last
        self.last = price
        if last <= 0.0 or price == last or price <= 0.0:
            return 0.0
        r = math.log(price / last)
        r2 = r * r
        jump = (self.n >= self.min_samples and r2 > self.k2 * self.var
                and abs(r) > self.floor)
        self.n += 1
        self.var += self.alpha * (r2 - self.var) if self.n > 1 else r2 - self.var
        return r if jump else 0.0

    def reset(self) -> None:
        """Forget the last price (after a gap the next move is not a single step)."""
        self.last = 0.0


class SymbolQuality:
    """Per-symbol check state; the engine calls it on every event of the symbol."""

    __slots__ = ("symbol", "monitor", "last_recv", "offset", "offset_ts", "mid_jumps",
                 "trade_jumps", "crossed", "locked", "stale", "misaligned")

    def __init__(self, symbol: str, monitor: QualityMonitor) -> None:
        self.symbol = symbol
        self.monitor = monitor
        self.last_recv = 0
        self.offset = 0.0  # smoothed ts_recv - ts_exchange, ns
        self.offset_ts = 0  # ts_recv of the last offset sample (0: none yet)
        self.mid_jumps = JumpDetector(monitor.settings)
        self.trade_jumps = JumpDetector(monitor.settings)
        self.crossed = False
        self.locked = False
        self.stale = False
        self.misaligned = False

    def event(self, ts_recv: int, ts_exchange: int, timed: bool) -> None:
        """Time gap, clock skew and the misalignment offset for one event.

        ``timed``: the kind's ``ts_exchange`` is an event time (streamed kinds).
        """
        m = self.monitor
        last = self.last_recv
        if ts_recv - last > m.gap_ns and last:
            m.hit(TIME_GAP, self.symbol, lambda: f"no update for {(ts_recv - last) / NS:.3f}s "
                  f"(bound {m.settings.time_gap:g}s)")
        if ts_recv > last:
            self.last_recv = ts_recv
        if self.stale:
            self.stale = False
            m.log.info("quality: %s %s: updates again", STALE_SYMBOL, self.symbol)
        if timed and ts_exchange:
            d = ts_recv - ts_exchange
            if d > m.skew_ns or -d > m.skew_ns:  # a skewed clock skews every event: format lazily
                m.hit(CLOCK_SKEW, self.symbol, lambda: f"receive - exchange time = "
                      f"{d / NS:+.3f}s (bound {m.settings.clock_skew:g}s)")
            if self.offset_ts:
                self.offset += (d - self.offset) * OFFSET_ALPHA
            else:
                self.offset = float(d)
            self.offset_ts = ts_recv

    def book(self, state: int, bid: float | None, ask: float | None) -> None:
        """After a book update: ``state`` is BookState.cross_state() (0 normal)."""
        if state == 0:
            self.crossed = self.locked = False
            return
        if state == 2:
            if not self.crossed:
                self.monitor.hit(CROSSED_BOOK, self.symbol, f"best bid {bid!r} > best ask "
                                 f"{ask!r}")
            self.crossed, self.locked = True, False
        else:
            if not self.locked:
                self.monitor.hit(LOCKED_BOOK, self.symbol, f"best bid == best ask == {bid!r}")
            self.locked, self.crossed = True, False

    def sizes(self, bad: int, snapshot: bool) -> None:
        self.monitor.hit(NONPOSITIVE_SIZE, self.symbol,
                         f"{bad} level(s) with size {'<= 0 in a snapshot' if snapshot else '< 0'}",
                         bad)

    def mid(self, mid: float) -> None:
        r = self.mid_jumps.update(mid)
        if r:
            self._jump("mid", r, mid, self.mid_jumps)

    def trade(self, price: float) -> None:
        r = self.trade_jumps.update(price)
        if r:
            self._jump("trade price", r, price, self.trade_jumps)

    def _jump(self, what: str, r: float, price: float, det: JumpDetector) -> None:
        sigma = math.sqrt(det.var)
        self.monitor.hit(PRICE_JUMP, self.symbol, f"{what} moved {math.expm1(r) * 100:+.3f}% "
                         f"to {price!r} ({abs(r) / sigma if sigma else math.inf:.1f} sigma, "
                         f"bound {self.monitor.settings.jump_sigma:g})")


class QualityMonitor:
    """Counters and rate-limited log lines of every check, for one instance.

    ``clock`` is the instance's data clock: the newest ``ts_recv`` seen (ns; the engine keeps
    it current). Periodic
    checks (:meth:`check_stale`, :meth:`check_alignment`) take ``now`` explicitly, so
    the daemon passes the wall clock once caught up and tests pass whatever they replay.
    """

    def __init__(self, instance: str, settings: Settings, log: logging.Logger,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.instance = instance
        self.settings = settings
        self.log = log
        self.gap_ns = int(settings.time_gap * NS)
        self.skew_ns = int(settings.clock_skew * NS)
        self.stale_ns = int(settings.stale_after * NS)
        self.misalign_ns = settings.misalignment * NS
        self.clock = 0
        self.symbols: dict[str, SymbolQuality] = {}
        self.counts: dict[str, dict[str, int]] = {c: {} for c in CHECKS}
        self.totals: dict[str, int] = dict.fromkeys(CHECKS, 0)
        self._monotonic = monotonic
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def symbol(self, symbol: str) -> SymbolQuality:
        sq = self.symbols.get(symbol)
        if sq is None:
            sq = self.symbols[symbol] = SymbolQuality(symbol, self)
        return sq

    def expect(self, symbols: tuple[str, ...] | list[str], now: int) -> None:
        """Configured symbols count as seen at ``now``: silence from then on is staleness."""
        for s in symbols:
            sq = self.symbol(s)
            if not sq.last_recv:
                sq.last_recv = now

    def hit(self, check: str, symbol: str, detail: str | Callable[[], str], n: int = 1) -> None:
        """Count ``n`` violations; log the first, then one summary line per log_interval.

        ``detail`` may be a function returning the text, called only when a line is logged.
        """
        per = self.counts[check]
        per[symbol] = per.get(symbol, 0) + n
        self.totals[check] += n
        key = (check, symbol)
        now = self._monotonic()
        last = self._last_log.get(key)
        if last is not None and now - last < self.settings.log_interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + n
            return
        more = self._suppressed.pop(key, 0)
        self._last_log[key] = now
        tail = f" (+{more} more since the last report)" if more else ""
        if callable(detail):
            detail = detail()
        self.log.warning("quality: %s %s: %s%s", check, symbol, detail, tail)

    def check_stale(self, now: int) -> list[str]:
        """Start a stale episode for every symbol silent for ``stale_after`` at ``now``."""
        started = []
        for sq in self.symbols.values():
            if not sq.stale and sq.last_recv and now - sq.last_recv > self.stale_ns:
                sq.stale = True
                started.append(sq.symbol)
                self.hit(STALE_SYMBOL, sq.symbol, f"no update for "
                         f"{(now - sq.last_recv) / NS:.1f}s (bound "
                         f"{self.settings.stale_after:g}s)")
        return started

    def check_alignment(self) -> list[str]:
        """Start a misalignment episode for symbols whose offset is off the median."""
        clock = self.clock
        active = [sq for sq in self.symbols.values()
                  if sq.offset_ts and clock - sq.offset_ts <= ACTIVE_WINDOW]
        started = []
        if len(active) < 2:
            return started
        offsets = sorted(sq.offset for sq in active)
        n = len(offsets)
        median = offsets[n // 2] if n % 2 else (offsets[n // 2 - 1] + offsets[n // 2]) / 2
        for sq in active:
            off = abs(sq.offset - median) > self.misalign_ns
            if off and not sq.misaligned:
                started.append(sq.symbol)
                self.hit(MISALIGNMENT, sq.symbol, f"exchange->receive offset "
                         f"{sq.offset / NS:+.3f}s vs instance median {median / NS:+.3f}s "
                         f"(bound {self.settings.misalignment:g}s)")
            sq.misaligned = off
        return started

    def flush_logs(self) -> None:
        """Report suppressed counts whose interval has passed (called periodically)."""
        now = self._monotonic()
        for key, more in list(self._suppressed.items()):
            if now - self._last_log.get(key, 0.0) >= self.settings.log_interval:
                del self._suppressed[key]
                self._last_log[key] = now
                self.log.warning("quality: %s %s: %d more since the last report", key[0],
                                 key[1], more)

    def to_dict(self) -> dict[str, Any]:
        """``{"totals": {check: n}, "by_symbol": {check: {symbol: n}}, "stale": [...]}``."""
        return {"totals": dict(self.totals),
                "by_symbol": {c: dict(v) for c, v in self.counts.items() if v},
                "stale": sorted(s.symbol for s in self.symbols.values() if s.stale),
                "crossed": sorted(s.symbol for s in self.symbols.values() if s.crossed),
                "misaligned": sorted(s.symbol for s in self.symbols.values() if s.misaligned)}


__all__ = ["QualityMonitor", "SymbolQuality", "JumpDetector", "CHECKS", "TIME_GAP",
           "CROSSED_BOOK", "LOCKED_BOOK", "NONPOSITIVE_SIZE", "PRICE_JUMP", "STALE_SYMBOL",
           "CLOCK_SKEW", "MISALIGNMENT"]
