"""Binance REST as the replay exchange serves it, and every Binance route.

Spot ``/api/v3/depth``; USD-M ``/fapi/v1/depth``, ``/fapi/v1/openInterest``,
``/fapi/v1/premiumIndex`` and ``/futures/data/globalLongShortAccountRatio``, each under the
endpoint's prefix (``/binance/spot``, ``/binance/derivatives``). Errors use Binance's body
``{"code": -1121, "msg": "Invalid symbol."}``; the REST faults (``rate_limit``,
``fail_snapshot``, ``slow_snapshot``, ``huge_book``) apply here. With a recording
configured, recorded bodies are served by path and symbol first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from supervisor.replay.binance import SYMBOL_RE, BinanceSpotSession, BinanceUsdmSession
from supervisor.replay.market import Market, next_funding_time_ms, rate_text
from supervisor.replay.rest import json_response, rest_faults

PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
PERIOD_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _book(m: Market, levels: list[tuple[int, int]]) -> str:
    """Snapshot levels (tick, lots) as ``["price","size"]`` pairs."""
    px, sz = m.px.cache, m.sz.cache  # TextCache: a miss renders
    return ",".join([f'["{px[t]}","{sz[n]}"]' for t, n in levels])


def _error(status: int, retry_after: float) -> web.Response:
    if status == 429:
        return json_response({"code": -1003, "msg": "Too many requests; current limit of IP is "
                              "2400 requests per minute."}, 429,
                             {"Retry-After": f"{retry_after:g}"})
    return json_response({"code": -1001, "msg": "Internal error; unable to process your "
                          "request. Please try again."}, status)


def _bad(code: int, msg: str) -> web.Response:
    return json_response({"code": code, "msg": msg}, 400)


class BinanceRest:
    """REST handlers of one Binance endpoint (spot or USD-M)."""

    def __init__(self, rx: Any, session_cls: type[BinanceSpotSession], prefix: str) -> None:
        self.rx = rx
        self.prefix = prefix
        self.venue = session_cls.venue
        self.style = session_cls.price_style
        self.usdm = self.venue == "binance_derivatives"

    def market(self, symbol: str) -> Market:
        return self.rx.markets.get(self.venue, symbol, *self.style)

    def _symbol(self, request: web.Request) -> str | None:
        sym = request.query.get("symbol", "")
        return sym if SYMBOL_RE.match(sym.lower()) and sym == sym.upper() else None

    def _recorded(self, request: web.Request, symbol: str) -> web.Response | None:
        rec = self.rx.recordings.get(self.venue)
        if rec is None:
            return None
        body = rec.rest_body(request.path[len(self.prefix):], symbol)
        return None if body is None else web.Response(text=body,
                                                      content_type="application/json")

    async def depth(self, request: web.Request) -> web.Response:
        """``GET /api/v3/depth`` / ``/fapi/v1/depth?symbol=BTCUSDT&limit=1000``::

            {"lastUpdateId": 1027024,
             "E": 1700000000000, "T": 1700000000000,   # USD-M only
             "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.00000000"]]}
        """
        symbol = self._symbol(request)
        outcome = await rest_faults(self.rx, self.venue, symbol, True, _error)
        if isinstance(outcome, web.Response):
            return outcome
        if symbol is None:
            return _bad(-1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", "500" if self.usdm else "100"))
        except ValueError:
            return _bad(-1100, "Illegal characters found in parameter 'limit'.")
        limit = max(1, min(limit, 1000 if self.usdm else 5000))
        recorded = self._recorded(request, symbol)
        if recorded is not None:
            body: bytes | web.Response = recorded
        else:
            body = self._snapshot(symbol, limit)
        if outcome:
            await asyncio.sleep(outcome)
        return body if isinstance(body, web.Response) else web.Response(
            body=body, content_type="application/json")

    def _snapshot(self, symbol: str, limit: int) -> bytes:
        m = self.market(symbol)
        last, bids, asks = m.rest_snapshot(limit)
        fault = self.rx.faults.take(self.venue, "huge_book", symbol) \
            if self.venue in self.rx.faults.armed else None
        if fault is not None:
            far_b, far_a = m.far_levels(fault.params["levels"])
            bids, asks = bids + far_b, asks + far_a
        now = time.time_ns() // 1000000
        times = f'"E":{now},"T":{now},' if self.usdm else ""
        return (f'{{"lastUpdateId":{last},{times}"bids":[{_book(m, bids)}],'
                f'"asks":[{_book(m, asks)}]}}').encode()

    async def open_interest(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/openInterest?symbol=`` ->
        ``{"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}``."""
        symbol = self._symbol(request)
        outcome = await rest_faults(self.rx, self.venue, symbol, False, _error)
        if isinstance(outcome, web.Response):
            return outcome
        if symbol is None:
            return _bad(-1121, "Invalid symbol.")
        m = self.market(symbol)
        return json_response({"openInterest": m.size_text(m.next_open_interest()),
                              "symbol": symbol, "time": time.time_ns() // 1000000})

    async def premium_index(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/premiumIndex?symbol=``: mark price and the current funding rate."""
        symbol = self._symbol(request)
        outcome = await rest_faults(self.rx, self.venue, symbol, False, _error)
        if isinstance(outcome, web.Response):
            return outcome
        if symbol is None:
            return _bad(-1121, "Invalid symbol.")
        m = self.market(symbol)
        mark, now = m.mark_price(), time.time_ns() // 1000000
        return json_response({"symbol": symbol, "markPrice": mark, "indexPrice": mark,
                              "estimatedSettlePrice": mark,
                              "lastFundingRate": rate_text(m.funding_e8, 8),
                              "interestRate": "0.00010000",
                              "nextFundingTime": next_funding_time_ms(now), "time": now})

    async def long_short(self, request: web.Request) -> web.Response:
        """``GET /futures/data/globalLongShortAccountRatio?symbol=&period=5m&limit=30``::

            [{"symbol": "BTCUSDT", "longShortRatio": "1.8105",
              "longAccount": "0.6442", "shortAccount": "0.3558",
              "timestamp": 1583139600000}, ...]          # oldest first
        """
        symbol = self._symbol(request)
        outcome = await rest_faults(self.rx, self.venue, symbol, False, _error)
        if isinstance(outcome, web.Response):
            return outcome
        if symbol is None:
            return _bad(-1121, "Invalid symbol.")
        period = request.query.get("period", "")
        if period not in PERIODS:
            return _bad(-1102, "Mandatory parameter 'period' was not sent, was empty/null, "
                               "or malformed.")
        try:
            limit = max(1, min(500, int(request.query.get("limit", "30"))))
        except ValueError:
            return _bad(-1100, "Illegal characters found in parameter 'limit'.")
        m = self.market(symbol)
        step = int(period[:-1]) * PERIOD_MS[period[-1]]
        last = time.time_ns() // 1000000 // step * step
        rows = []
        for i in range(limit):
            ratio = m.next_ratio()
            long_e4 = ratio * 10000 // (ratio + 10000)
            rows.append({"symbol": symbol, "longShortRatio": rate_text(ratio, 4),
                         "longAccount": rate_text(long_e4, 4),
                         "shortAccount": rate_text(10000 - long_e4, 4),
                         "timestamp": last - (limit - 1 - i) * step})
        return json_response(rows)


def routes(rx: Any) -> list[web.RouteDef]:
    """Both Binance endpoints under ``/binance/spot`` and ``/binance/derivatives``."""
    out = []
    for prefix, cls, depth_path in (("/binance/spot", BinanceSpotSession, "/api/v3/depth"),
                                    ("/binance/derivatives", BinanceUsdmSession,
                                     "/fapi/v1/depth")):
        rest = BinanceRest(rx, cls, prefix)
        out += [web.get(prefix + "/stream", rx.ws_handler(cls)),
                web.get(prefix + depth_path, rest.depth)]
        if cls is BinanceUsdmSession:
            out += [web.get(prefix + "/fapi/v1/openInterest", rest.open_interest),
                    web.get(prefix + "/fapi/v1/premiumIndex", rest.premium_index),
                    web.get(prefix + "/futures/data/globalLongShortAccountRatio",
                            rest.long_short)]
    return out
