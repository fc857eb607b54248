"""Binance spot and USD-M futures, as the replay exchange speaks them.

WebSocket (this module): the combined-stream endpoint ``/stream`` (optionally
``?streams=a/b``), live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
``SET_PROPERTY`` / ``GET_PROPERTY`` requests, every push wrapped as ``{"stream": name,
"data": event}``, and a server ping frame every ``ping_interval`` seconds (the connection is
dropped when no pong comes back within ``pong_timeout``, as Binance does). REST
(:mod:`supervisor.replay.binance_rest`): the depth snapshot, and on USD-M open interest,
premium index and the global long/short account ratio.

Decimals are strings: spot pads to 8 decimals (``"0.35210000"``), USD-M uses the symbol's
own precision (``"7.6110"``). Book ids follow :mod:`supervisor.replay.market`: a REST
snapshot is always straddled by a later ``depthUpdate``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, ClassVar

from supervisor import jsonlib
from supervisor.replay.market import Market, next_funding_time_ms, rate_text
from supervisor.replay.session import BOOK_UPDATE, DATA, Session, Stream, broadcast

SYMBOL_RE = re.compile(r"^[a-z0-9]{2,30}$")  # stream names carry lowercase symbols
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def err(code: int, msg: str, req_id: Any) -> dict[str, Any]:
    """Binance's WebSocket error answer: ``{"error": {"code", "msg"}, "id"}``."""
    return {"error": {"code": code, "msg": msg}, "id": req_id}


# ----- renderers: (stream, event) -> frame bytes -----------------------------------------
def _levels(m: Market, changes: list[tuple[int, int, bool]]) -> str:
    """Event changes (tick, lots, existed) as ``["price","size"]`` pairs.

    A plain loop, not a comprehension: an event side has 0-3 changes, and on Python 3.11
    building the comprehension's function costs more than the loop does.
    """
    px, sz = m.px.cache, m.sz.cache  # TextCache: a miss renders
    out = []
    for t, n, _ in changes:
        out.append(f'["{px[t]}","{sz[n]}"]')
    return ",".join(out)


def render_depth_spot(st: Stream, ev: Any) -> bytes:
    """Spot diff depth::

        {"stream": "btcusdt@depth@100ms",
         "data": {"e": "depthUpdate", "E": 1700000000000,   # event time, ms
                  "s": "BTCUSDT",
                  "U": 1000001, "u": 1000003,   # first / last update id in this event
                  "b": [["30000.10000000", "0.52000000"]],   # absolute sizes, "0.0..." removes
                  "a": [["30001.00000000", "0.00000000"]]}}
    """
    m = st.market
    return (f'{{"stream":"{st.key}","data":{{"e":"depthUpdate","E":{ev.ts_ms},"s":"{m.symbol}",'
            f'"U":{ev.first_id},"u":{ev.last_id},"b":[{_levels(m, ev.bids)}],'
            f'"a":[{_levels(m, ev.asks)}]}}}}').encode()


def render_depth_usdm(st: Stream, ev: Any) -> bytes:
    """USD-M diff depth: as spot plus ``T`` (transaction time) and ``pu``::

        {"e": "depthUpdate", "E": 1700000000000, "T": 1700000000000, "s": "BTCUSDT",
         "U": 1000004, "u": 1000006,
         "pu": 1000003,              # u of the previous event: must equal the last u applied
         "b": [["30000.1", "0.520"]], "a": []}
    """
    m = st.market
    return (f'{{"stream":"{st.key}","data":{{"e":"depthUpdate","E":{ev.ts_ms},"T":{ev.ts_ms},'
            f'"s":"{m.symbol}","U":{ev.first_id},"u":{ev.last_id},"pu":{ev.prev_last_id},'
            f'"b":[{_levels(m, ev.bids)}],"a":[{_levels(m, ev.asks)}]}}}}').encode()


def render_trade(st: Stream, ev: Any) -> bytes:
    """``{"e":"trade","E":..,"s":"BTCUSDT","t":id,"p":"..","q":"..","T":..,"m":buyer is maker}``."""
    m = st.market
    return (f'{{"stream":"{st.key}","data":{{"e":"trade","E":{ev.ts_ms},"s":"{m.symbol}",'
            f'"t":{ev.trade_id},"p":"{m.px.cache[ev.tick]}","q":"{m.sz.cache[ev.lots]}",'
            f'"T":{ev.ts_ms},"m":{"false" if ev.buy else "true"},"M":true}}}}').encode()


def render_agg_trade(st: Stream, ev: Any) -> bytes:
    """``{"e":"aggTrade",..,"a":agg id,"p","q","f":first trade id,"l":last trade id,"m"}``."""
    m = st.market
    tail = ',"M":true' if st.session.venue == "binance_spot" else ""
    return (f'{{"stream":"{st.key}","data":{{"e":"aggTrade","E":{ev.ts_ms},"s":"{m.symbol}",'
            f'"a":{ev.trade_id},"p":"{m.px.cache[ev.tick]}","q":"{m.sz.cache[ev.lots]}",'
            f'"f":{ev.first_id},"l":{ev.last_id},"T":{ev.ts_ms},'
            f'"m":{"false" if ev.buy else "true"}{tail}}}}}').encode()


# ----- sessions ---------------------------------------------------------------------------
class BinanceSpotSession(Session):
    """``/binance/spot/stream``: spot streams ``<s>@depth[@100ms]``, ``@trade``, ``@aggTrade``."""

    venue: ClassVar[str] = "binance_spot"
    price_style: ClassVar[tuple[str, int | None]] = ("fixed", 8)
    # stream type -> kind; "depth" also accepts an update speed suffix
    stream_types: ClassVar[dict[str, str]] = {"depth": "book", "trade": "trade",
                                              "aggTrade": "aggtrade"}
    depth_speeds: ClassVar[tuple[str, ...]] = ("100ms",)  # "@depth" alone is 1000ms
    weights: ClassVar[dict[str, int]] = {"book": 10, "trade": 4, "aggtrade": 4, "funding": 1,
                                         "liquidation": 1}
    render_depth = staticmethod(render_depth_spot)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.producers = {"book": self.produce_book, "trade": self.produce_trade,
                          "aggtrade": self.produce_trade, "funding": self.produce_funding,
                          "liquidation": self.produce_liquidation}

    def market(self, symbol: str) -> Market:
        style, decimals = self.price_style
        return self.rx.markets.get(self.venue, symbol.upper(), style, decimals)

    def parse_stream(self, name: Any) -> tuple[str, str] | None:
        """``btcusdt@depth@100ms`` -> ("book", "BTCUSDT"); None if not served."""
        if not isinstance(name, str):
            return None
        if self.recording is not None:
            if name in self.recording.keys:
                return self.recording.keys[name], name.split("@", 1)[0].upper()
            return None
        sym, _, rest = name.partition("@")
        typ, _, speed = rest.partition("@")
        kind = self.stream_types.get(typ)
        if kind is None or not SYMBOL_RE.match(sym):
            return None
        if speed and not (typ == "depth" and speed in self.depth_speeds
                          or typ == "markPrice" and speed == "1s"):
            return None
        return kind, sym.upper()

    async def on_open(self) -> None:
        """``/stream?streams=a/b/c`` subscribes at connect time (no ack is sent)."""
        for name in self.query.get("streams", "").split("/"):
            parsed = self.parse_stream(name)
            if parsed is not None:
                self.subscribe_one(name, *parsed)
        self.flush()

    def subscribe_one(self, name: str, kind: str, symbol: str) -> None:
        market = None if self.recording is not None else self.market(symbol)
        self.add_stream(name, kind, market, symbol=symbol)

    def on_text(self, text: str) -> None:
        """Requests::

            {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}
            -> {"result": null, "id": 1}
            {"method": "LIST_SUBSCRIPTIONS", "id": 3}
            -> {"result": ["btcusdt@depth@100ms"], "id": 3}
            bad input -> {"error": {"code": 2, "msg": "Invalid request: ..."}, "id": ...}
        """
        try:
            req = jsonlib.loads(text)
        except jsonlib.JSONDecodeError:
            self.send_json(err(3, "Invalid JSON: expected value at line 1 column 1", None))
            return
        if not isinstance(req, dict):
            self.send_json(err(2, "Invalid request: expected an object", None))
            return
        req_id = req.get("id")
        if isinstance(req_id, bool) or not isinstance(req_id, int) or req_id < 0:
            self.send_json(err(2, "Invalid request: request ID must be an unsigned integer",
                               None))
            return
        method = req.get("method")
        if method is None:
            self.send_json(err(2, "Invalid request: missing field `method`", req_id))
            return
        if method not in METHODS:
            self.send_json(err(2, f"Invalid request: unknown variant {method}, expected one of "
                                  f"{', '.join(METHODS)}", req_id))
            return
        params = req.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            self.send_json({"result": list(self.streams), "id": req_id})
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            self._property(method, params, req_id)
        elif not isinstance(params, list) or not params:
            self.send_json(err(2, "Invalid request: params must be a non-empty array of "
                                  "stream names", req_id))
        elif method == "SUBSCRIBE":
            parsed = [self.parse_stream(p) for p in params]
            bad = [p for p, ok in zip(params, parsed, strict=True) if ok is None]
            if bad:
                self.send_json(err(2, f"Invalid request: unknown stream name {bad[0]!r}",
                                   req_id))
                return
            self.send_json({"result": None, "id": req_id})
            for name, (kind, symbol) in zip(params, parsed, strict=True):  # type: ignore[misc]
                self.subscribe_one(name, kind, symbol)
        else:
            for name in params:
                if isinstance(name, str):
                    self.remove_stream(name)
            self.send_json({"result": None, "id": req_id})

    def _property(self, method: str, params: Any, req_id: int) -> None:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            self.send_json(err(2, "Invalid request: property name must be a string", req_id))
        elif params[0] != "combined":
            self.send_json(err(0, "Unknown property", req_id))
        elif method == "GET_PROPERTY":
            self.send_json({"result": True, "id": req_id})
        elif len(params) < 2 or not isinstance(params[1], bool):
            self.send_json(err(1, "Invalid value type: expected Boolean", req_id))
        else:  # raw (non-combined) payloads are not served: /stream is always combined
            self.send_json({"result": None, "id": req_id})

    async def keepalive(self) -> None:
        """Ping frames every ``ping_interval``; no pong within ``pong_timeout``: disconnect."""
        interval = self.cfg.ping_interval
        if interval <= 0:
            return
        while not self.closed:
            await asyncio.sleep(interval)
            if self.stalled_until:
                self.last_pong = self.loop.time()
                continue
            if self.loop.time() - self.last_pong > self.cfg.pong_timeout:
                self.stats.heartbeat_timeouts += 1
                await self.close(reason=b"pong timeout")
                return
            self.send_control(0x9)

    # ----- producers -------------------------------------------------------------------------
    def produce_book(self, st: Stream) -> None:
        market = st.market
        broadcast(market, "book", self.render_depth, market.next_book_event(), DATA | BOOK_UPDATE)

    def produce_trade(self, st: Stream) -> None:
        aggregate = st.kind == "aggtrade"
        ev = st.market.next_trade(aggregate)
        broadcast(st.market, st.kind, render_agg_trade if aggregate else render_trade, ev, DATA)

    def produce_funding(self, st: Stream) -> None:
        raise NotImplementedError  # USD-M only

    def produce_liquidation(self, st: Stream) -> None:
        raise NotImplementedError  # USD-M only

    def malformed_frame(self, stream: Stream, mode: str) -> bytes:
        if mode == "fields":  # a depthUpdate without ids or levels
            return (f'{{"stream":"{stream.key}","data":{{"e":"depthUpdate",'
                    f'"E":{time.time_ns() // 1000000}}}}}').encode()
        return f'{{"stream":"{stream.key}","data":{{"e":"'.encode()


class BinanceUsdmSession(BinanceSpotSession):
    """``/binance/derivatives/stream``: adds ``pu``, ``@markPrice[@1s]``, ``@forceOrder``."""

    venue: ClassVar[str] = "binance_derivatives"
    price_style: ClassVar[tuple[str, int | None]] = ("fixed", None)
    stream_types: ClassVar[dict[str, str]] = {"depth": "book", "trade": "trade",
                                              "aggTrade": "aggtrade", "markPrice": "funding",
                                              "forceOrder": "liquidation"}
    depth_speeds: ClassVar[tuple[str, ...]] = ("100ms", "500ms")  # "@depth" alone: 250ms
    render_depth = staticmethod(render_depth_usdm)

    def produce_funding(self, st: Stream) -> None:
        """Mark price and funding::

            {"e": "markPriceUpdate", "E": 1700000000000, "s": "BTCUSDT",
             "p": "30000.5", "i": "30000.1",   # mark / index price
             "P": "30000.2",                   # estimated settle price
             "r": "0.00010000",                # funding rate
             "T": 1700006400000}               # next funding time, ms
        """
        m = st.market
        rate = rate_text(m.next_funding(), 8)
        mark = m.mark_price()
        now = time.time_ns() // 1000000
        payload = (f'{{"stream":"{st.key}","data":{{"e":"markPriceUpdate","E":{now},'
                   f'"s":"{m.symbol}","p":"{mark}","i":"{mark}","P":"{mark}","r":"{rate}",'
                   f'"T":{next_funding_time_ms(now)}}}}}').encode()
        st.session.deliver(st, payload, DATA)

    def produce_liquidation(self, st: Stream) -> None:
        """Forced liquidation order::

            {"e": "forceOrder", "E": 1700000000000,
             "o": {"s": "BTCUSDT", "S": "SELL",   # side of the liquidation order
                   "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "29990.0", "ap": "29990.0",
                   "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1700000000000}}
        """
        m = st.market
        ev = m.next_trade()
        side = "SELL" if ev.buy else "BUY"
        px, qty = m.price_text(ev.tick), m.size_text(ev.lots)
        payload = (f'{{"stream":"{st.key}","data":{{"e":"forceOrder","E":{ev.ts_ms},"o":{{'
                   f'"s":"{m.symbol}","S":"{side}","o":"LIMIT","f":"IOC","q":"{qty}",'
                   f'"p":"{px}","ap":"{px}","X":"FILLED","l":"{qty}","z":"{qty}",'
                   f'"T":{ev.ts_ms}}}}}}}').encode()
        st.session.deliver(st, payload, DATA)
