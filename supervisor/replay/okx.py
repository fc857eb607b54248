"""OKX v5 public market data, as the replay exchange speaks it.

WebSocket ``/okx/ws/v5/public``: ``{"op": "subscribe"|"unsubscribe", "args": [{"channel",
"instId"}]}`` answered per arg with ``{"event": "subscribe", "arg": .., "connId": ..}`` or
``{"event": "error", "code": "60018", ..}``; the text ``ping`` is answered ``pong``.
Channels: ``books``, ``trades``, ``funding-rate``, ``open-interest`` (per ``instId``) and
``liquidation-orders`` (per ``instType``). REST: open interest, both long/short account
ratio endpoints, funding rate and a books snapshot.

``books`` sequencing: the first push after a subscribe is ``action: snapshot`` with
``prevSeqId: -1``; each ``update`` has ``prevSeqId`` = the previous push's ``seqId``, and the
ids step by 2..9 (not contiguous, like OKX's). ``checksum`` is 0 (OKX deprecated it in 2026)
unless the server runs with ``okx_checksum``; then it is the CRC32 OKX documents (top 25
levels, bid and ask interleaved, ``price:size``, signed 32-bit).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, ClassVar

from aiohttp import web

from supervisor import jsonlib
from supervisor.replay.market import Market, fixed, next_funding_time_ms, rate_text
from supervisor.replay.rest import json_response, rest_faults
from supervisor.replay.session import (
    BOOK_UPDATE,
    DATA,
    Session,
    Stream,
    broadcast,
)

INST_RE = re.compile(r"^[A-Z0-9]{1,12}-[A-Z0-9]{2,8}(-SWAP|-\d{6}(-\d+(\.\d+)?-[CP])?)?$")
DERIVATIVE_TYPES = ("SWAP", "FUTURES", "OPTION")
PERIODS = ("5m", "15m", "30m", "1H", "2H", "4H", "6H", "12H", "1D")
PERIOD_MS = {"m": 60_000, "H": 3_600_000, "D": 86_400_000}


def inst_type(inst_id: str) -> str:
    """``BTC-USDT`` SPOT, ``BTC-USDT-SWAP`` SWAP, ``BTC-USD-240628`` FUTURES, ``..-C`` OPTION."""
    if inst_id.endswith("-SWAP"):
        return "SWAP"
    if inst_id.endswith(("-C", "-P")):
        return "OPTION"
    return "FUTURES" if inst_id.count("-") >= 2 else "SPOT"


def _update_levels(m: Market, changes: list[tuple[int, int, bool]]) -> str:
    """Event changes as ``[price, size, "0", orders]``; a loop, as in binance._levels."""
    px, sz = m.px.cache, m.sz.cache  # TextCache: a miss renders
    out = []
    for t, n, _ in changes:
        out.append(f'["{px[t]}","{sz[n]}","0","{1 + n % 7 if n else 0}"]')
    return ",".join(out)


def _snapshot_levels(m: Market, levels: list[tuple[int, int]]) -> str:
    px, sz = m.px.cache, m.sz.cache
    return ",".join([f'["{px[t]}","{sz[n]}","0","{1 + n % 7}"]' for t, n in levels])


def oi_row(m: Market) -> dict[str, str]:
    """One open-interest record after a random-walk step (``oi`` in contracts)."""
    lots = m.next_open_interest()
    oi = m.size_text(lots)
    usd = fixed(lots * m.spec.lot * m.best()[1] * m.spec.tick,
                m.spec.size_decimals + m.spec.price_decimals)
    return {"instType": inst_type(m.symbol), "instId": m.symbol, "oi": oi, "oiCcy": oi,
            "oiUsd": usd, "ts": str(time.time_ns() // 1000000)}


def render_update(st: Stream, item: tuple[Any, int]) -> bytes:
    """A ``books`` update::

        {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
         "data": [{"asks": [["30001.5", "0.12", "0", "3"]],   # price, size ("0" removes),
                   "bids": [],                                # deprecated "0", order count
                   "ts": "1700000000000",
                   "checksum": 0,            # 0, or the signed CRC32 with okx_checksum
                   "prevSeqId": 123456,      # must equal the seqId applied last
                   "seqId": 123461}]}        # seqId < prevSeqId: a sequence reset
    """
    ev, checksum = item
    m = st.market
    return (f'{st.extra},"action":"update","data":[{{"asks":[{_update_levels(m, ev.asks)}],'
            f'"bids":[{_update_levels(m, ev.bids)}],"ts":"{ev.ts_ms}","checksum":{checksum},'
            f'"prevSeqId":{ev.prev_seq},"seqId":{ev.seq}}}]}}').encode()


class OkxSession(Session):
    """``/okx/ws/v5/public`` (spot and derivatives share it, as on OKX)."""

    venue: ClassVar[str] = "okx"
    price_style: ClassVar[tuple[str, int | None]] = ("trim", None)
    channels: ClassVar[dict[str, str]] = {"books": "book", "trades": "trade",
                                          "funding-rate": "funding", "open-interest": "oi",
                                          "liquidation-orders": "liquidation"}
    weights: ClassVar[dict[str, int]] = {"book": 10, "trade": 4, "funding": 1, "oi": 1,
                                         "liquidation": 1}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.conn_id = f"{self.id:08x}"
        self.producers = {"book": self.produce_book, "trade": self.produce_trade,
                          "funding": self.produce_funding, "oi": self.produce_oi,
                          "liquidation": self.produce_liquidation}
        self._liq_rr = 0

    def market(self, inst_id: str) -> Market:
        return self.rx.markets.get("okx", inst_id, *self.price_style)

    def _error(self, code: str, msg: str, req_id: Any = None) -> None:
        answer = {"event": "error", "code": code, "msg": msg, "connId": self.conn_id}
        if req_id is not None:
            answer["id"] = req_id
        self.send_json(answer)

    def on_text(self, text: str) -> None:
        """Requests::

            ping -> pong
            {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]}
            -> {"event": "subscribe", "arg": {"channel": "books", "instId": "BTC-USDT"},
                "connId": "0000002a"}     # then the books snapshot
            unknown channel / instrument -> {"event": "error", "code": "60018", "msg": ..}
            not JSON, bad op or args     -> {"event": "error", "code": "60012", "msg": ..}

        A request ``id`` (optional, as on OKX) is echoed in every answer to it.
        """
        if text == "ping":
            self.send(b"pong")
            return
        try:
            req = jsonlib.loads(text)
        except jsonlib.JSONDecodeError:
            self._error("60012", f"Invalid request: {text[:200]}")
            return
        op = req.get("op") if isinstance(req, dict) else None
        args = req.get("args") if isinstance(req, dict) else None
        req_id = req.get("id") if isinstance(req, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args \
                or not all(isinstance(a, dict) for a in args):
            self._error("60012", f"Invalid request: {text[:200]}", req_id)
            return
        for arg in args:
            key = self._validate(arg)
            if key is None:
                self._error("60018", f"Wrong URL or channel:{arg.get('channel')},instId:"
                                     f"{arg.get('instId', arg.get('instType'))} doesn't exist. "
                                     "Please use the correct URL, channel and parameters "
                                     "referring to API document.", req_id)
                continue
            ack = {"event": op, "arg": arg, "connId": self.conn_id}
            if req_id is not None:
                ack["id"] = req_id
            if op == "unsubscribe":
                self.remove_stream(key)
                self.send_json(ack)
                continue
            self.send_json(ack)
            self._subscribe(key, arg)

    def _validate(self, arg: dict[str, Any]) -> str | None:
        """The stream key of a valid arg (``books:BTC-USDT``), None if OKX would refuse it."""
        channel = arg.get("channel")
        if channel not in self.channels:
            return None
        if channel == "liquidation-orders":
            itype = arg.get("instType")
            return f"{channel}:{itype}" if itype in DERIVATIVE_TYPES else None
        inst = arg.get("instId")
        if not isinstance(inst, str) or not INST_RE.match(inst):
            return None
        key = f"{channel}:{inst}"
        if self.recording is not None:
            return key if key in self.recording.keys else None
        if channel == "funding-rate" and inst_type(inst) != "SWAP":
            return None
        if channel == "open-interest" and inst_type(inst) == "SPOT":
            return None
        return key

    def _subscribe(self, key: str, arg: dict[str, Any]) -> None:
        channel = arg["channel"]
        kind = self.channels[channel]
        inst = arg.get("instId")
        market = None if self.recording is not None or inst is None else self.market(inst)
        prefix = jsonlib.dumps({"arg": {"channel": channel, "instId": inst} if inst else
                                {"channel": channel, "instType": arg["instType"]}}).decode()
        st = self.add_stream(key, kind, market, prefix[:-1], inst)  # extra: '{"arg":{..}'
        if kind == "book" and market is not None:
            self.send_snapshot(st)

    def send_snapshot(self, st: Stream) -> None:
        """The first ``books`` push::

            {"arg": {..}, "action": "snapshot",
             "data": [{"asks": [..], "bids": [..], "ts": "..", "checksum": 0,
                       "prevSeqId": -1, "seqId": 123456}]}
        """
        m = st.market
        bids, asks = m.top(400)
        if "okx" in self.faults.armed:
            fault = self.faults.take("okx", "huge_book", m.symbol)
            if fault is not None:
                far_b, far_a = m.far_levels(fault.params["levels"])
                bids, asks = bids + far_b, asks + far_a
        checksum = m.okx_checksum() if self.cfg.okx_checksum else 0
        self.send((f'{st.extra},"action":"snapshot","data":[{{"asks":[{_snapshot_levels(m, asks)}],'
                   f'"bids":[{_snapshot_levels(m, bids)}],"ts":"{time.time_ns() // 1000000}",'
                   f'"checksum":{checksum},"prevSeqId":-1,"seqId":{m.seq}}}]}}').encode())

    # ----- producers ---------------------------------------------------------------------
    def produce_book(self, st: Stream) -> None:
        m = st.market
        reset = "okx" in self.faults.armed and \
            self.faults.take("okx", "reset", m.symbol) is not None
        ev = m.next_book_event(reset)
        checksum = m.okx_checksum() if self.cfg.okx_checksum else 0
        broadcast(m, "book", render_update, (ev, checksum), DATA | BOOK_UPDATE)

    def bad_checksum(self, stream: Stream, item: Any) -> bytes:
        ev, _ = item
        good = stream.market.okx_checksum()
        return render_update(stream, (ev, good ^ 1 or 2))

    def produce_trade(self, st: Stream) -> None:
        """``{"arg": {..}, "data": [{"instId", "tradeId", "px", "sz", "side", "ts", "count"}]}``."""
        m = st.market
        ev = m.next_trade()
        st.session.deliver(st, (
            f'{st.extra},"data":[{{"instId":"{m.symbol}","tradeId":"{ev.trade_id}",'
            f'"px":"{m.px.cache[ev.tick]}","sz":"{m.sz.cache[ev.lots]}",'
            f'"side":"{"buy" if ev.buy else "sell"}","ts":"{ev.ts_ms}","count":"1"}}]}}'
        ).encode(), DATA)

    def produce_funding(self, st: Stream) -> None:
        """``funding-rate``: ``fundingRate`` of the current period, ``fundingTime`` (ms string)."""
        m = st.market
        rate = rate_text(m.next_funding(), 8).rstrip("0").rstrip(".")
        now = time.time_ns() // 1000000
        nxt = next_funding_time_ms(now)
        st.session.deliver(st, (
            f'{st.extra},"data":[{{"fundingRate":"{rate}","fundingTime":"{nxt}",'
            f'"instId":"{m.symbol}","instType":"SWAP","maxFundingRate":"0.00375",'
            f'"method":"current_period","minFundingRate":"-0.00375","nextFundingRate":"",'
            f'"nextFundingTime":"{nxt + 8 * 3600 * 1000}","premium":"0.0001",'
            f'"settFundingRate":"{rate}","settState":"settled","ts":"{now}"}}]}}').encode(), DATA)

    def produce_oi(self, st: Stream) -> None:
        """``open-interest``: ``{"instType", "instId", "oi", "oiCcy", "oiUsd", "ts"}``."""
        row = jsonlib.dumps([oi_row(st.market)]).decode()
        st.session.deliver(st, f'{st.extra},"data":{row}}}'.encode(), DATA)

    def produce_liquidation(self, st: Stream) -> None:
        """``liquidation-orders`` (per instType), one order per push::

            {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
             "data": [{"instId": "BTC-USDT-SWAP", "instFamily": "BTC-USDT", "uly": "BTC-USDT",
                       "instType": "SWAP",
                       "details": [{"side": "buy", "posSide": "short",  # side of the order
                                    "bkPx": "30001.5", "sz": "13", "bkLoss": "0",
                                    "ccy": "", "ts": "1700000000000"}]}]}
        """
        itype = st.key.split(":", 1)[1]
        insts = sorted({s.market.symbol for s in self.streams.values()
                        if s.market is not None and inst_type(s.market.symbol) == itype})
        inst = insts[self._liq_rr % len(insts)] if insts else "BTC-USDT-SWAP"
        self._liq_rr += 1
        m = self.market(inst)
        ev = m.next_trade()
        family = inst.rsplit("-", 1)[0]
        side, pos = ("buy", "short") if ev.buy else ("sell", "long")
        st.session.deliver(st, (
            f'{st.extra},"data":[{{"details":[{{"bkLoss":"0","bkPx":"{m.price_text(ev.tick)}",'
            f'"ccy":"","posSide":"{pos}","side":"{side}","sz":"{m.size_text(ev.lots)}",'
            f'"ts":"{ev.ts_ms}"}}],"instFamily":"{family}","instId":"{inst}",'
            f'"instType":"{itype}","uly":"{family}"}}]}}').encode(), DATA)

    def malformed_frame(self, stream: Stream, mode: str) -> bytes:
        if mode == "fields":  # a books update without ids, levels or checksum
            return f'{stream.extra},"action":"update","data":[{{}}]}}'.encode()
        return f'{stream.extra},"action":"upd'.encode()


# ----- REST ------------------------------------------------------------------------------------
def _error(status: int, retry_after: float) -> web.Response:
    if status == 429:
        return json_response({"code": "50011", "msg": "Too Many Requests", "data": []}, 429,
                             {"Retry-After": f"{retry_after:g}"})
    return json_response({"code": "50001", "msg": "Service temporarily unavailable, please try "
                          "again later.", "data": []}, status)


def _bad(code: str, msg: str) -> web.Response:
    return json_response({"code": code, "msg": msg, "data": []}, 400)


def _ok(data: Any) -> web.Response:
    return json_response({"code": "0", "msg": "", "data": data})


class OkxRest:
    """REST handlers under ``/okx``."""

    def __init__(self, rx: Any) -> None:
        self.rx = rx

    def market(self, inst_id: str) -> Market:
        return self.rx.markets.get("okx", inst_id, *OkxSession.price_style)

    async def _guard(self, inst: str | None, snapshot: bool = False) -> web.Response | float:
        return await rest_faults(self.rx, "okx", inst, snapshot, _error)

    async def open_interest(self, request: web.Request) -> web.Response:
        """``GET /api/v5/public/open-interest?instType=SWAP&instId=BTC-USDT-SWAP``::

            {"code": "0", "msg": "", "data": [{"instType": "SWAP", "instId": "BTC-USDT-SWAP",
             "oi": "5000", "oiCcy": "555.55", "oiUsd": "50000", "ts": "1597026383085"}]}
        """
        inst = request.query.get("instId") or "BTC-USDT-SWAP"
        outcome = await self._guard(inst)
        if isinstance(outcome, web.Response):
            return outcome
        if request.query.get("instType") not in DERIVATIVE_TYPES or not INST_RE.match(inst) \
                or inst_type(inst) == "SPOT":
            return _bad("51001", "Instrument ID does not exist")
        return _ok([oi_row(self.market(inst))])

    async def long_short(self, request: web.Request) -> web.Response:
        """``GET /api/v5/rubik/stat/contracts/long-short-account-ratio?ccy=BTC&period=5m``
        (and ``...-ratio-contract?instId=BTC-USDT-SWAP``): ``data`` is ``[[ts, ratio]]``,
        newest first."""
        contract = request.path.endswith("-contract")
        inst = request.query.get("instId") if contract else \
            f"{request.query.get('ccy', '')}-USDT-SWAP"
        outcome = await self._guard(inst)
        if isinstance(outcome, web.Response):
            return outcome
        if not inst or not INST_RE.match(inst):
            return _bad("51001", "Instrument ID does not exist")
        period = request.query.get("period", "5m")
        if period not in PERIODS:
            return _bad("51000", "Parameter period error")
        try:
            limit = max(1, min(100, int(request.query.get("limit", "100"))))
        except ValueError:
            return _bad("51000", "Parameter limit error")
        m = self.market(inst)
        step = int(period[:-1]) * PERIOD_MS[period[-1]]
        last = time.time_ns() // 1000000 // step * step
        return _ok([[str(last - i * step), rate_text(m.next_ratio(), 4)] for i in range(limit)])

    async def funding_rate(self, request: web.Request) -> web.Response:
        """``GET /api/v5/public/funding-rate?instId=BTC-USDT-SWAP``."""
        inst = request.query.get("instId", "")
        outcome = await self._guard(inst)
        if isinstance(outcome, web.Response):
            return outcome
        if not INST_RE.match(inst) or inst_type(inst) != "SWAP":
            return _bad("51001", "Instrument ID does not exist")
        m = self.market(inst)
        now = time.time_ns() // 1000000
        rate = rate_text(m.funding_e8, 8)
        return _ok([{"instType": "SWAP", "instId": inst, "fundingRate": rate,
                     "fundingTime": str(next_funding_time_ms(now)),
                     "nextFundingTime": str(next_funding_time_ms(now) + 8 * 3600 * 1000),
                     "method": "current_period", "ts": str(now)}])

    async def books(self, request: web.Request) -> web.Response:
        """``GET /api/v5/market/books?instId=BTC-USDT&sz=400``: ``data[0]`` has asks, bids, ts."""
        inst = request.query.get("instId", "")
        outcome = await self._guard(inst, snapshot=True)
        if isinstance(outcome, web.Response):
            return outcome
        if not INST_RE.match(inst):
            return _bad("51001", "Instrument ID does not exist")
        try:
            size = max(1, min(400, int(request.query.get("sz", "1"))))
        except ValueError:
            return _bad("51000", "Parameter sz error")
        m = self.market(inst)
        bids, asks = m.top(size)
        body = (f'{{"code":"0","msg":"","data":[{{"asks":[{_snapshot_levels(m, asks)}],'
                f'"bids":[{_snapshot_levels(m, bids)}],'
                f'"ts":"{time.time_ns() // 1000000}"}}]}}').encode()
        if outcome:
            await asyncio.sleep(outcome)
        return web.Response(body=body, content_type="application/json")


def routes(rx: Any) -> list[web.RouteDef]:
    rest = OkxRest(rx)
    ratio = "/okx/api/v5/rubik/stat/contracts/long-short-account-ratio"
    return [web.get("/okx/ws/v5/public", rx.ws_handler(OkxSession)),
            web.get("/okx/api/v5/public/open-interest", rest.open_interest),
            web.get(ratio, rest.long_short),
            web.get(ratio + "-contract", rest.long_short),
            web.get("/okx/api/v5/public/funding-rate", rest.funding_rate),
            web.get("/okx/api/v5/market/books", rest.books)]
