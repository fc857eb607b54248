"""Deribit API v2 public market data (JSON-RPC 2.0 over WebSocket), as the replay serves it.

Methods: ``public/subscribe``, ``public/unsubscribe``, ``public/unsubscribe_all``,
``public/set_heartbeat`` / ``public/disable_heartbeat``, ``public/test``,
``public/get_time``, ``public/get_order_book``. Channels: ``book.{instrument}.{interval}``,
``trades.{instrument}.{interval}``, ``ticker.{instrument}.{interval}`` (interval ``100ms``,
``agg2`` or ``raw``) and ``deribit_volatility_index.{index}`` (``btc_usd``).

After ``public/set_heartbeat`` the server sends ``heartbeat`` notifications of type
``test_request`` every interval; a client that has not answered the previous one with
``public/test`` is disconnected, as Deribit does. Prices and amounts are JSON numbers.

``book`` sequencing: the first notification is ``type: snapshot`` with ``change_id``; every
``change`` carries ``prev_change_id`` equal to the previous notification's ``change_id``.
Levels are ``[action, price, amount]`` with action ``new`` / ``change`` / ``delete``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, ClassVar

from aiohttp import web

from supervisor import jsonlib
from supervisor.replay.market import Market, rate_text
from supervisor.replay.rest import json_response, rest_faults
from supervisor.replay.session import (
    BOOK_UPDATE,
    DATA,
    Session,
    Stream,
    broadcast,
)

INSTRUMENT_RE = re.compile(r"^[A-Z0-9]{2,10}(_[A-Z0-9]{2,6})?-[A-Z0-9-]{2,30}$")
INDEX_RE = re.compile(r"^[a-z0-9]{2,10}_[a-z0-9]{2,6}$")
INTERVALS = ("100ms", "agg2", "raw")
VERSION = "1.2.26"


def _actions(m: Market, changes: list[tuple[int, int, bool]]) -> str:
    """Event changes as ``["new"|"change"|"delete", price, amount]`` (a level that came and
    went inside one event is left out)."""
    px, sz = m.px.cache, m.sz.cache  # TextCache: a miss renders
    out = []  # a loop, not a comprehension: cheaper for an event's 0-3 changes
    for t, n, was in changes:
        if n:
            out.append(f'["{"change" if was else "new"}",{px[t]},{sz[n]}]')
        elif was:
            out.append(f'["delete",{px[t]},0.0]')
    return ",".join(out)


def _snapshot_levels(m: Market, levels: list[tuple[int, int]]) -> str:
    px, sz = m.px.cache, m.sz.cache
    return ",".join([f'["new",{px[t]},{sz[n]}]' for t, n in levels])


def render_change(st: Stream, ev: Any) -> bytes:
    """A ``book`` change::

        {"jsonrpc": "2.0", "method": "subscription",
         "params": {"channel": "book.BTC-PERPETUAL.100ms",
                    "data": {"type": "change", "timestamp": 1700000000000,
                             "instrument_name": "BTC-PERPETUAL",
                             "prev_change_id": 1234567,   # must equal the last change_id
                             "change_id": 1234570,
                             "bids": [["change", 29999.5, 3600.0], ["delete", 29990.0, 0.0]],
                             "asks": [["new", 30001.0, 10.0]]}}}
    """
    m = st.market
    return (f'{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"{st.key}",'
            f'"data":{{"type":"change","timestamp":{ev.ts_ms},"instrument_name":"{m.symbol}",'
            f'"prev_change_id":{ev.prev_seq},"change_id":{ev.seq},'
            f'"bids":[{_actions(m, ev.bids)}],"asks":[{_actions(m, ev.asks)}]}}}}}}').encode()


def _num(x: float) -> str:
    return repr(float(x))


class DeribitSession(Session):
    """``/deribit/ws/api/v2``."""

    venue: ClassVar[str] = "deribit"
    price_style: ClassVar[tuple[str, int | None]] = ("number", None)
    channel_kinds: ClassVar[dict[str, str]] = {"book": "book", "trades": "trade",
                                               "ticker": "ticker",
                                               "deribit_volatility_index": "volidx"}
    weights: ClassVar[dict[str, int]] = {"book": 10, "trade": 4, "ticker": 2, "volidx": 1}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.producers = {"book": self.produce_book, "trade": self.produce_trade,
                          "ticker": self.produce_ticker, "volidx": self.produce_volidx}
        self.heartbeat: asyncio.Task[None] | None = None
        self.awaiting_test = False

    def market(self, name: str) -> Market:
        return self.rx.markets.get("deribit", name, *self.price_style)

    # ----- JSON-RPC ------------------------------------------------------------------------
    def reply(self, req_id: Any, result: Any) -> None:
        now = time.time_ns() // 1000
        self.send_json({"jsonrpc": "2.0", "id": req_id, "result": result, "usIn": now,
                        "usOut": now, "usDiff": 0, "testnet": False})

    def error(self, req_id: Any, code: int, message: str, data: Any = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        self.send_json({"jsonrpc": "2.0", "id": req_id, "error": err, "testnet": False})

    def on_text(self, text: str) -> None:
        """Requests::

            {"jsonrpc": "2.0", "id": 7, "method": "public/subscribe",
             "params": {"channels": ["book.BTC-PERPETUAL.100ms"]}}
            -> {"jsonrpc": "2.0", "id": 7, "result": ["book.BTC-PERPETUAL.100ms"], ...}
            a bad channel -> {"id": 7, "error": {"code": -32602, "message": "Invalid params",
                              "data": {"param": "channels", "reason": ..}}}
            {"jsonrpc": "2.0", "id": 8, "method": "public/set_heartbeat",
             "params": {"interval": 10}} -> result "ok", then every 10 s
            {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
            to be answered with public/test.
        """
        try:
            req = jsonlib.loads(text)
        except jsonlib.JSONDecodeError:
            self.error(None, -32700, "Parse error")
            return
        if not isinstance(req, dict) or not isinstance(req.get("method"), str) \
                or "id" not in req:
            self.error(req.get("id") if isinstance(req, dict) else None, -32600,
                       "Invalid Request")
            return
        req_id, method = req["id"], req["method"]
        params = req.get("params") or {}
        if not isinstance(params, dict):
            self.error(req_id, -32602, "Invalid params", {"reason": "named params only"})
            return
        handler = {"public/subscribe": self.rpc_subscribe,
                   "public/unsubscribe": self.rpc_unsubscribe,
                   "public/unsubscribe_all": self.rpc_unsubscribe_all,
                   "public/set_heartbeat": self.rpc_set_heartbeat,
                   "public/disable_heartbeat": self.rpc_disable_heartbeat,
                   "public/test": self.rpc_test,
                   "public/get_time": lambda i, p: self.reply(i, time.time_ns() // 1000000),
                   "public/get_order_book": self.rpc_get_order_book}.get(method)
        if handler is None:
            self.error(req_id, -32601, "Method not found")
            return
        handler(req_id, params)

    def parse_channel(self, channel: Any) -> tuple[str, str] | None:
        """``book.BTC-PERPETUAL.100ms`` -> ("book", "BTC-PERPETUAL"); None if not served."""
        if not isinstance(channel, str):
            return None
        parts = channel.split(".")
        kind = self.channel_kinds.get(parts[0])
        if kind is None:
            return None
        if kind == "volidx":
            if len(parts) != 2 or not INDEX_RE.match(parts[1]):
                return None
        elif len(parts) != 3 or parts[2] not in INTERVALS or not INSTRUMENT_RE.match(parts[1]):
            return None
        if self.recording is not None and self.record_key_of(channel) not in self.recording.keys:
            return None
        return kind, parts[1]

    @staticmethod
    def record_key_of(channel: str) -> str:
        """Recordings are matched without the interval (``book.X.raw`` serves ``book.X.100ms``)."""
        head, _, tail = channel.rpartition(".")
        return head if tail in INTERVALS else channel

    def record_key(self, stream: Stream) -> str:
        return self.record_key_of(stream.key)

    def rpc_subscribe(self, req_id: Any, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            self.error(req_id, -32602, "Invalid params",
                       {"param": "channels", "reason": "must be a non-empty array"})
            return
        parsed = [self.parse_channel(c) for c in channels]
        bad = [c for c, p in zip(channels, parsed, strict=True) if p is None]
        if bad:
            self.error(req_id, -32602, "Invalid params",
                       {"param": "channels", "reason": f"invalid channel: {bad[0]}"})
            return
        self.reply(req_id, list(channels))
        for channel, (kind, name) in zip(channels, parsed, strict=True):  # type: ignore[misc]
            if self.recording is not None:
                st = self.add_stream(channel, kind, None,
                                     symbol=None if kind == "volidx" else name)
                recorded = self.recording.channels.get(self.record_key_of(channel))
                if recorded and recorded != channel:
                    st.rename = (f'"channel":"{recorded}"'.encode(),
                                 f'"channel":"{channel}"'.encode())
                continue
            st = self.add_stream(channel, kind, self.market(name))
            if kind == "book":  # also on a repeated subscribe: that is how clients recover
                self.send_snapshot(st)

    def rpc_unsubscribe(self, req_id: Any, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list):
            self.error(req_id, -32602, "Invalid params", {"param": "channels"})
            return
        self.reply(req_id, [c for c in channels if isinstance(c, str) and self.remove_stream(c)])

    def rpc_unsubscribe_all(self, req_id: Any, params: dict[str, Any]) -> None:
        for key in list(self.streams):
            self.remove_stream(key)
        self.reply(req_id, "ok")

    def rpc_set_heartbeat(self, req_id: Any, params: dict[str, Any]) -> None:
        interval = params.get("interval")
        if isinstance(interval, bool) or not isinstance(interval, int | float) \
                or interval < self.cfg.heartbeat_min:
            self.error(req_id, -32602, "Invalid params", {
                "param": "interval", "reason": f"must be >= {self.cfg.heartbeat_min:g}"})
            return
        self.reply(req_id, "ok")
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        self.awaiting_test = False
        self.heartbeat = asyncio.ensure_future(
            self._heartbeats(self.cfg.heartbeat_interval or float(interval)))

    def rpc_disable_heartbeat(self, req_id: Any, params: dict[str, Any]) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None
        self.reply(req_id, "ok")

    def rpc_test(self, req_id: Any, params: dict[str, Any]) -> None:
        self.awaiting_test = False
        self.reply(req_id, {"version": VERSION})

    def rpc_get_order_book(self, req_id: Any, params: dict[str, Any]) -> None:
        name = params.get("instrument_name")
        if not isinstance(name, str) or not INSTRUMENT_RE.match(name):
            self.error(req_id, -32602, "Invalid params", {"param": "instrument_name"})
            return
        self.reply(req_id, order_book(self.market(name), int(params.get("depth") or 20)))

    async def _heartbeats(self, interval: float) -> None:
        """``test_request`` every ``interval``; one left unanswered closes the connection."""
        while not self.closed:
            await asyncio.sleep(interval)
            if self.stalled_until:  # the client cannot answer what it never got
                self.awaiting_test = False
                continue
            if self.awaiting_test:
                self.stats.heartbeat_timeouts += 1
                await self.close(reason=b"heartbeat timeout")
                return
            self.awaiting_test = True
            self.send(b'{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}')
            self.flush()

    async def keepalive(self) -> None:
        try:
            await asyncio.Event().wait()  # heartbeats start on public/set_heartbeat
        finally:
            if self.heartbeat is not None:
                self.heartbeat.cancel()

    # ----- pushes ---------------------------------------------------------------------------
    def send_snapshot(self, st: Stream) -> None:
        """The first ``book`` notification: ``type: snapshot``, every level as ``new``."""
        m = st.market
        bids, asks = m.top(10_000)
        if "deribit" in self.faults.armed:
            fault = self.faults.take("deribit", "huge_book", m.symbol)
            if fault is not None:
                far_b, far_a = m.far_levels(fault.params["levels"])
                bids, asks = bids + far_b, asks + far_a
        self.send((f'{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"{st.key}",'
                   f'"data":{{"type":"snapshot","timestamp":{time.time_ns() // 1000000},'
                   f'"instrument_name":"{m.symbol}","change_id":{m.seq},'
                   f'"bids":[{_snapshot_levels(m, bids)}],'
                   f'"asks":[{_snapshot_levels(m, asks)}]}}}}}}').encode())

    def produce_book(self, st: Stream) -> None:
        m = st.market
        broadcast(m, "book", render_change, m.next_book_event(), DATA | BOOK_UPDATE)

    def _push(self, st: Stream, data: str) -> None:
        st.session.deliver(st, (f'{{"jsonrpc":"2.0","method":"subscription","params":'
                                f'{{"channel":"{st.key}","data":{data}}}}}').encode(), DATA)

    def produce_trade(self, st: Stream) -> None:
        """``trades``: a list of ``{"trade_seq", "trade_id", "timestamp", "price", "amount",
        "direction": "buy"|"sell", "instrument_name", "mark_price", "index_price",
        "tick_direction"}``."""
        m = st.market
        ev = m.next_trade()
        px = m.px.cache[ev.tick]
        self._push(st, f'[{{"trade_seq":{ev.trade_id},"trade_id":"{ev.trade_id}",'
                       f'"timestamp":{ev.ts_ms},"tick_direction":{0 if ev.buy else 2},'
                       f'"price":{px},"mark_price":{px},"instrument_name":"{m.symbol}",'
                       f'"index_price":{px},"direction":"{"buy" if ev.buy else "sell"}",'
                       f'"amount":{m.sz.cache[ev.lots]}}}]')

    def produce_ticker(self, st: Stream) -> None:
        """``ticker``: best bid/ask, mark/index price, open interest and (perpetuals) funding."""
        m = st.market
        bid, ask = m.best()
        lv = m.book
        mark = m.mark_price()
        data = {"timestamp": time.time_ns() // 1000000, "instrument_name": m.symbol,
                "state": "open", "best_bid_price": float(m.price_text(bid)),
                "best_bid_amount": float(m.size_text(lv.bids.levels[-bid])),
                "best_ask_price": float(m.price_text(ask)),
                "best_ask_amount": float(m.size_text(lv.asks.levels[ask])),
                "mark_price": float(mark), "index_price": float(mark),
                "last_price": float(mark), "settlement_price": float(mark),
                "estimated_delivery_price": float(mark),
                "open_interest": float(m.size_text(m.next_open_interest())),
                "min_price": float(m.price_text(bid * 97 // 100)),
                "max_price": float(m.price_text(ask * 103 // 100)),
                "stats": {"volume": 0.0, "price_change": 0.0, "low": float(m.price_text(bid)),
                          "high": float(m.price_text(ask))}}
        if m.symbol.endswith("PERPETUAL"):
            rate = float(rate_text(m.next_funding(), 8))
            data.update(current_funding=rate, funding_8h=rate, interest_value=0.0)
        self._push(st, jsonlib.dumps(data).decode())

    def produce_volidx(self, st: Stream) -> None:
        """``deribit_volatility_index.btc_usd``: ``{"volatility": 56.3, "timestamp",
        "index_name": "btc_usd"}``."""
        m = st.market
        value = rate_text(m.next_volatility(), 2)
        self._push(st, f'{{"volatility":{value},"timestamp":{time.time_ns() // 1000000},'
                       f'"index_name":"{m.symbol}"}}')

    def malformed_frame(self, stream: Stream, mode: str) -> bytes:
        if mode == "fields":  # a change without ids or levels
            return (f'{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":'
                    f'"{stream.key}","data":{{"type":"change"}}}}}}').encode()
        return (f'{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":'
                f'"{stream.key}').encode()


def order_book(m: Market, depth: int) -> dict[str, Any]:
    """``public/get_order_book`` result: ``bids``/``asks`` as ``[price, amount]``."""
    bids, asks = m.top(max(1, min(depth, 10_000)))
    px, sz = m.price_text, m.size_text
    return {"timestamp": time.time_ns() // 1000000, "instrument_name": m.symbol,
            "change_id": m.seq, "state": "open",
            "bids": [[float(px(t)), float(sz(n))] for t, n in bids],
            "asks": [[float(px(t)), float(sz(n))] for t, n in asks]}


def _error(status: int, retry_after: float) -> web.Response:
    if status == 429:
        return json_response({"jsonrpc": "2.0", "error": {"code": 10028, "message":
                              "too_many_requests"}, "testnet": False}, 429,
                             {"Retry-After": f"{retry_after:g}"})
    return json_response({"jsonrpc": "2.0", "error": {"code": 11094, "message":
                          "internal_server_error"}, "testnet": False}, status)


def routes(rx: Any) -> list[web.RouteDef]:
    async def get_order_book(request: web.Request) -> web.Response:
        """``GET /api/v2/public/get_order_book?instrument_name=BTC-PERPETUAL&depth=100``."""
        name = request.query.get("instrument_name", "")
        outcome = await rest_faults(rx, "deribit", name, True, _error)
        if isinstance(outcome, web.Response):
            return outcome
        if not INSTRUMENT_RE.match(name):
            return json_response({"jsonrpc": "2.0", "error": {"code": -32602, "message":
                                  "Invalid params", "data": {"param": "instrument_name"}}}, 400)
        try:
            depth = int(request.query.get("depth", "20"))
        except ValueError:
            depth = 20
        result = order_book(rx.markets.get("deribit", name, *DeribitSession.price_style), depth)
        if outcome:
            await asyncio.sleep(outcome)
        return json_response({"jsonrpc": "2.0", "result": result, "testnet": False})

    return [web.get("/deribit/ws/api/v2", rx.ws_handler(DeribitSession)),
            web.get("/deribit/api/v2/public/get_order_book", get_order_book)]
