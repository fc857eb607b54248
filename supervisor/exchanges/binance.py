"""Binance public market data: spot (``binance_spot``) and USD-M futures (``binance_derivatives``).

The two venue classes and their declarative headers. The rest is split by concern:
:mod:`~supervisor.exchanges.binance_feed` (stream protocol, dispatch, trades),
:mod:`~supervisor.exchanges.binance_book` (diff events and snapshots into the books),
:mod:`~supervisor.exchanges.binance_sync` (each market's sequencing rule, pure),
:mod:`~supervisor.exchanges.binance_symbols` (``BTC-USDT-PERP`` <-> ``BTCUSDT``).

=================  ==================================  ======================================
our channel        spot                                USD-M
=================  ==================================  ======================================
books              ``<sym>@depth@100ms`` +             ``<sym>@depth@100ms`` +
                   ``GET /api/v3/depth``               ``GET /fapi/v1/depth``
trades             ``<sym>@aggTrade``                  ``<sym>@aggTrade``
funding            -                                   ``<sym>@markPrice@1s``
liquidations       -                                   ``<sym>@forceOrder``
open_interest      -                                   poll ``GET /fapi/v1/openInterest``
long_short_ratio   -                                   poll ``GET /futures/data/
                                                       globalLongShortAccountRatio``
=================  ==================================  ======================================

Trades use ``aggTrade`` on both markets: one record per taker order and price, the same
stream on both, and the one cryptofeed records (the shared recordings carry it); spot
``<sym>@trade`` frames are handled as well if a deployment subscribes to them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from supervisor.events import Funding, Liquidation, LongShortRatio, OpenInterest
from supervisor.exchanges.base import (
    FUNDING,
    LIQUIDATIONS,
    LONG_SHORT_RATIO,
    OPEN_INTEREST,
    FeedConfig,
    Sink,
)
from supervisor.exchanges.binance_book import _ns
from supervisor.exchanges.binance_feed import BinanceFeed, _dec
from supervisor.exchanges.binance_symbols import QUOTE_ASSETS, binance_symbol, std_symbol
from supervisor.exchanges.binance_sync import BinanceFuturesSync, BinanceSpotSync


class BinanceSpotFeed(BinanceFeed):
    """Binance spot (instance ``binance_spot``): books and trades.

    Usage::

        cfg = FeedConfig("binance_spot", "binance", "spot", ("BTC-USDT", "ETH-BTC"))
        feed = BinanceSpotFeed(cfg, sink=publisher.publish)
        await feed.run()   # reconnects forever; cancel to stop
    """

    market = "spot"
    ws_endpoints = {"spot": "wss://stream.binance.com:9443/stream"}
    rest_endpoints = {"spot": "https://api.binance.com"}
    depth_path = "/api/v3/depth"
    depth_max = 5000  # any limit 1..5000
    sync_class = BinanceSpotSync
    has_pu = False
    requests_per_second = 5.0  # spot: 5 incoming messages per second per connection


class BinanceFuturesFeed(BinanceFeed):
    """Binance USD-M futures (instance ``binance_derivatives``): books, trades, funding,
    liquidations, and REST-polled open interest and long/short account ratio.

    Symbols are linear perpetuals (``BTC-USDT-PERP``) or dated contracts by venue id
    (``BTCUSDT_240628``). Usage as :class:`BinanceSpotFeed` with market ``derivatives``.
    """

    market = "derivatives"
    ws_endpoints = {"derivatives": "wss://fstream.binance.com/stream"}
    rest_endpoints = {"derivatives": "https://fapi.binance.com"}
    websocket_channels: ClassVar[dict[str, str]] = {
        **BinanceFeed.websocket_channels,
        FUNDING: "markPrice@1s",
        LIQUIDATIONS: "forceOrder",
    }
    rest_channels = frozenset({OPEN_INTEREST, LONG_SHORT_RATIO})
    depth_path = "/fapi/v1/depth"
    depth_max = 1000
    depth_limits = (5, 10, 20, 50, 100, 500, 1000)
    open_interest_path = "/fapi/v1/openInterest"
    long_short_path = "/futures/data/globalLongShortAccountRatio"
    long_short_period = "5m"
    sync_class = BinanceFuturesSync
    has_pu = True
    requests_per_second = 10.0  # USD-M: 10 incoming messages per second per connection

    def __init__(self, cfg: FeedConfig, sink: Sink, log: logging.Logger | None = None) -> None:
        super().__init__(cfg, sink, log)
        if FUNDING in cfg.channels:
            self._handlers["markPriceUpdate"] = self._on_mark_price
        if LIQUIDATIONS in cfg.channels:
            self._handlers["forceOrder"] = self._on_force_order
        self._last_ratio_ts: dict[str, int] = {}

    def _on_mark_price(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Mark price and funding -> :class:`Funding`.

        ::

            {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT",
             "p": "11794.15000000",     # mark price
             "i": "11784.62659091",     # index price
             "P": "11784.25641265",     # estimated settle price
             "r": "0.00038167",         # funding rate ("" on dated contracts)
             "T": 1562306400000}        # next funding time, ms (0 on dated contracts)
        """
        symbol = self._std_by_venue.get(d["s"])
        if symbol is None:
            self.ignored += 1
            return
        self.emit(Funding(symbol, 0, _ns(d["E"]), ts_recv, ts_mono, _dec(d["r"]), _ns(d["T"]),
                          _dec(d["p"])))

    def _on_force_order(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Forced liquidation -> :class:`Liquidation` (price and size as executed).

        ::

            {"e": "forceOrder", "E": 1568014460893,
             "o": {"s": "BTCUSDT", "S": "SELL",       # side of the liquidation order
                   "o": "LIMIT", "f": "IOC",
                   "q": "0.014", "p": "9910",         # order quantity and limit price
                   "ap": "9910",                      # average fill price -> price
                   "X": "FILLED", "l": "0.014",
                   "z": "0.014",                      # filled accumulated qty -> size
                   "T": 1568014460893}}

        Binance pushes at most the latest liquidation per symbol and second.
        """
        o = d["o"]
        symbol = self._std_by_venue.get(o["s"])
        if symbol is None:
            self.ignored += 1
            return
        side = o["S"]
        if side not in ("BUY", "SELL"):
            raise ValueError(f"liquidation side {side!r}")
        self.emit(Liquidation(symbol, 0, _ns(d["E"]), ts_recv, ts_mono, side.lower(),
                              _dec(o["ap"]), _dec(o["z"])))

    # ----- REST polls -------------------------------------------------------------------------
    def pollers(self) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        polls: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        interval = self.cfg.rest_poll_interval
        if OPEN_INTEREST in self.cfg.channels:
            polls.append((interval, self.poll_open_interest))
        if LONG_SHORT_RATIO in self.cfg.channels:
            polls.append((interval, self.poll_long_short_ratio))
        return polls

    async def poll_open_interest(self) -> None:
        """One open-interest request per symbol; one failing symbol does not stop the rest."""
        for symbol in self.symbols:
            await self._poll_one(symbol, self.open_interest_path,
                                 {"symbol": binance_symbol(symbol)}, self.on_open_interest)

    async def poll_long_short_ratio(self) -> None:
        """The latest global long/short account ratio of each symbol."""
        for symbol in self.symbols:
            params = {"symbol": binance_symbol(symbol), "period": self.long_short_period,
                      "limit": 1}
            await self._poll_one(symbol, self.long_short_path, params,
                                 self.on_long_short_ratio)

    async def _poll_one(self, symbol: str, path: str, params: dict[str, Any],
                        handle: Callable[[str, Any, int, int], None]) -> None:
        try:
            body = await self.rest_get(path, params)
            handle(symbol, body, 0, 0)
        except Exception as exc:  # noqa: BLE001 - counted, logged; the next poll retries
            self.stats.rest_errors += 1
            self.log.warning("poll %s %s failed: %s: %s", path, symbol, type(exc).__name__, exc)

    def on_open_interest(self, symbol: str, body: Any, ts_recv: int = 0,
                         ts_mono: int = 0) -> None:
        """``GET /fapi/v1/openInterest`` body -> :class:`OpenInterest`.

        ::

            {"openInterest": "10659.509",   # contracts (base asset units)
             "symbol": "BTCUSDT",
             "time": 1589437530011}         # ms
        """
        ts_recv, ts_mono = _now(ts_recv, ts_mono)
        self.emit(OpenInterest(symbol, 0, _ns(int(body["time"])), ts_recv, ts_mono,
                               _dec(body["openInterest"]), ""))

    def on_long_short_ratio(self, symbol: str, body: Any, ts_recv: int = 0,
                            ts_mono: int = 0) -> None:
        """``GET /futures/data/globalLongShortAccountRatio`` body -> :class:`LongShortRatio`.

        ::

            [{"symbol": "BTCUSDT",
              "longShortRatio": "1.8105",   # long accounts / short accounts
              "longAccount": "0.6442", "shortAccount": "0.3558",
              "timestamp": 1583139600000}]  # start of the 5m period, ms (a string on some
                                            # deployments)

        A period is emitted once: polls inside the same period repeat the same row.
        """
        if not isinstance(body, list):
            raise TypeError(f"long/short ratio body is {type(body).__name__}, not a list")
        if not body:
            return  # no data for this symbol yet
        row = body[-1]
        ts_ms = int(row["timestamp"])
        if self._last_ratio_ts.get(symbol) == ts_ms:
            return
        ratio = _dec(row["longShortRatio"])
        self._last_ratio_ts[symbol] = ts_ms
        ts_recv, ts_mono = _now(ts_recv, ts_mono)
        self.emit(LongShortRatio(symbol, 0, ts_ms * 1_000_000, ts_recv, ts_mono, ratio,
                                 self.long_short_period))


def _now(ts_recv: int, ts_mono: int) -> tuple[int, int]:
    """Receive times for REST bodies: the caller's, or now."""
    return ts_recv or time.time_ns(), ts_mono or time.monotonic_ns()


FEEDS: dict[str, type[BinanceFeed]] = {"spot": BinanceSpotFeed, "derivatives": BinanceFuturesFeed}

__all__ = ["binance_symbol", "std_symbol", "QUOTE_ASSETS", "BinanceFeed", "BinanceSpotFeed",
           "BinanceFuturesFeed", "FEEDS"]
