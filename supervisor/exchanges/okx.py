"""OKX public market data (``okx_spot``, ``okx_derivatives``) on ``/ws/v5/public``.

One connection per instance. Subscriptions are ``{"id", "op": "subscribe", "args": [{"channel",
"instId"}]}``; OKX answers each arg with ``{"event": "subscribe", "arg": ...}`` or the request
with ``{"event": "error", "code", "msg"}`` and echoes our ``id``, which is how a failed
``books`` subscribe is traced back to its symbols. OKX drops a connection that has pushed
nothing for 30 s: :meth:`OkxFeed.keepalive` sends the text ``ping`` after 20 s of silence
and the venue answers the text ``pong`` (not JSON).

Book integrity lives in :mod:`okx_book` (:class:`OkxBookSync`); a break resyncs that one
instrument by unsubscribing and resubscribing its ``books`` channel (OKX has no REST
snapshot with sequence ids), after a per-symbol jittered backoff, within OKX's budget of 480
subscribe/unsubscribe requests per connection per hour. A book that gets no snapshot within
``snapshot_timeout`` of its subscribe is resynced (``snapshot_failed``).

The long/short account ratio is REST only. We poll the per-contract endpoint
``/api/v5/rubik/stat/contracts/long-short-account-ratio-contract?instId=`` rather than the
per-currency ``long-short-account-ratio?ccy=``: the latter mixes every BTC contract (USDT and
USD margined, swaps and futures) into one number that belongs to no configured symbol, and
its rate limit is per IP while the contract one is per IP + instrument.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from supervisor import jsonlib
from supervisor.events import (
    GAP_RESUBSCRIBE,
    GAP_SEQUENCE,
    BookDelta,
    BookSnapshot,
    Funding,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)
from supervisor.exchanges.base import (
    BOOKS,
    FUNDING,
    LIQUIDATIONS,
    LONG_SHORT_RATIO,
    OPEN_INTEREST,
    TRADES,
    Feed,
    FeedConfig,
    RestError,
    Sink,
)
from supervisor.exchanges.okx_book import (
    HEARTBEAT,
    SKIPPED,
    SNAPSHOT,
    UPDATE,
    OkxBookRecovery,
    OkxBookSync,
)
from supervisor.exchanges.ws import WebSocket

MS = 1_000_000  # OKX timestamps are ms strings; events carry ns


def okx_inst_id(symbol: str) -> str:
    """Normalized symbol -> OKX ``instId`` (``BTC-USDT-PERP`` -> ``BTC-USDT-SWAP``)."""
    return symbol[:-5] + "-SWAP" if symbol.endswith("-PERP") else symbol


def okx_symbol(inst_id: str) -> str:
    """OKX ``instId`` -> normalized symbol (``BTC-USDT-SWAP`` -> ``BTC-USDT-PERP``)."""
    return inst_id[:-5] + "-PERP" if inst_id.endswith("-SWAP") else inst_id


def okx_inst_type(inst_id: str) -> str:
    """``SPOT``, ``SWAP``, ``FUTURES`` (``BTC-USD-250328``) or ``OPTION`` from an instId."""
    if inst_id.endswith("-SWAP"):
        return "SWAP"
    parts = inst_id.split("-")
    if len(parts) == 2:
        return "SPOT"
    return "OPTION" if len(parts) >= 5 else "FUTURES"


class OkxFeed(Feed):
    """OKX adapter for one instance.

    Usage::

        cfg = FeedConfig("okx_derivatives", "okx", "derivatives", ("BTC-USDT-PERP",),
                         channels=frozenset({"books", "trades", "funding"}))
        feed = OkxFeed(cfg, sink=publisher.publish)
        await feed.run()          # until cancelled; reconnects with backoff
    """

    exchange = "okx"
    ws_endpoints: ClassVar[dict[str, str]] = {
        "spot": "wss://ws.okx.com:8443/ws/v5/public",
        "derivatives": "wss://ws.okx.com:8443/ws/v5/public",
    }
    rest_endpoints: ClassVar[dict[str, str]] = {
        "spot": "https://www.okx.com",
        "derivatives": "https://www.okx.com",
    }
    # our channel -> OKX WS channel (long/short ratio is the REST poll below)
    websocket_channels: ClassVar[dict[str, str]] = {
        BOOKS: "books",  # 400-level snapshot, then increments every 100 ms
        TRADES: "trades",
        FUNDING: "funding-rate",  # every 30-90 s
        OPEN_INTEREST: "open-interest",  # every 3 s when it changes
        LIQUIDATIONS: "liquidation-orders",  # per instType, not per instrument
    }
    market_channels: ClassVar[dict[str, frozenset[str]]] = {
        "spot": frozenset({BOOKS, TRADES}),
        "derivatives": frozenset({BOOKS, TRADES, FUNDING, OPEN_INTEREST, LIQUIDATIONS,
                                  LONG_SHORT_RATIO}),
    }
    long_short_path: ClassVar[str] = (
        "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract")
    long_short_period: ClassVar[str] = "5m"  # rate limit: 5 requests / 2 s per instrument
    ops_per_hour: ClassVar[int] = 480  # subscribe+unsubscribe requests per connection
    args_per_request: ClassVar[int] = 200  # a request's text must stay under 64 KB
    ping_interval: float = 20.0  # s of silence before "ping"; OKX drops at 30 s
    snapshot_timeout: float = 10.0  # s from a books subscribe to its snapshot

    def __init__(self, cfg: FeedConfig, sink: Sink, log: logging.Logger | None = None) -> None:
        super().__init__(cfg, sink, log)
        supported = self.market_channels[cfg.market]
        for channel in sorted(cfg.channels - supported):
            self.log.warning("channel %s is not available on okx %s: ignored", channel,
                             cfg.market)
        self.channels = cfg.channels & supported
        self.book_sync = OkxBookSync()
        self.pings_sent = 0
        self.pongs = 0
        self.subscribed: set[tuple[str, str]] = set()  # acked (channel, instId or instType)
        self._handlers: dict[str, Callable[[dict[str, Any], int, int], None]] = {
            "books": self._on_books, "trades": self._on_trades,
            "funding-rate": self._on_funding, "open-interest": self._on_open_interest,
            "liquidation-orders": self._on_liquidations,
        }
        self._symbol_of: dict[str, str] = {}  # instId -> normalized symbol, configured only
        self._index_symbols(self.symbols)
        self._pending: dict[str, tuple[str, list[dict[str, str]]]] = {}  # request id -> op
        self._op_id = 0
        self._op_times: deque[float] = deque()  # monotonic send times, last hour
        self.recovery = OkxBookRecovery(self, self.resubscribe_book, self.snapshot_timeout)
        self._last_ratio_ts: dict[str, int] = {}

    # ----- symbols and subscriptions ----------------------------------------------------------
    def _index_symbols(self, symbols: Iterable[str]) -> None:
        """instId -> symbol for the configured symbols (frames for others are dropped).

        Raises ``ValueError`` for a symbol of the other market, before anything changes.
        """
        index = {}
        for s in symbols:
            inst = okx_inst_id(s)
            if (okx_inst_type(inst) == "SPOT") != (self.cfg.market == "spot"):
                raise ValueError(f"{s} is not an okx {self.cfg.market} instrument")
            index[inst] = s
        self._symbol_of = index

    def subscription_args(self, symbols: Iterable[str]) -> list[dict[str, str]]:
        """Subscribe args for ``symbols``: every per-instrument channel, then liquidations."""
        channels = [v for k, v in self.websocket_channels.items()
                    if k in self.channels and k != LIQUIDATIONS]
        insts = [okx_inst_id(s) for s in symbols]
        args = [{"channel": c, "instId": i} for i in insts for c in channels
                if c != "funding-rate" or okx_inst_type(i) == "SWAP"]  # funding: swaps only
        if LIQUIDATIONS in self.channels:
            types = sorted({okx_inst_type(i) for i in insts} & {"SWAP", "FUTURES"})
            args += [{"channel": "liquidation-orders", "instType": t} for t in types]
        return args

    async def _send_op(self, op: str, args: list[dict[str, str]]) -> None:
        """Send subscribe/unsubscribe requests, chunked, within OKX's hourly op budget."""
        for i in range(0, len(args), self.args_per_request):
            chunk = args[i:i + self.args_per_request]
            now = time.monotonic()
            while self._op_times and now - self._op_times[0] > 3600.0:
                self._op_times.popleft()
            if len(self._op_times) >= self.ops_per_hour:
                wait = self._op_times[0] + 3600.0 - now
                self.log.warning("okx op budget spent: %s waits %.0fs", op, wait)
                await asyncio.sleep(wait)
            self._op_times.append(time.monotonic())
            self._op_id += 1
            req_id = f"{op[:3]}{self._op_id}"
            self._pending[req_id] = (op, chunk)
            if len(self._pending) > 256:  # answered requests are never removed: bound it
                del self._pending[next(iter(self._pending))]
            await self.send_json({"id": req_id, "op": op, "args": chunk})
            if op == "subscribe":
                for a in chunk:
                    symbol = self._symbol_of.get(a.get("instId", ""))
                    if a["channel"] == "books" and symbol is not None:
                        self.recovery.expect_snapshot(symbol)

    async def on_open(self, ws: WebSocket) -> None:
        self._op_times.clear()  # the budget is per connection
        self._pending.clear()
        self.subscribed.clear()
        self.recovery.clear()
        await self._send_op("subscribe", self.subscription_args(self.symbols))
        self.spawn(self.recovery.watchdog(ws), name="okx-snapshot-watchdog")

    async def subscribe(self, symbols: Iterable[str]) -> None:
        await self._send_op("subscribe", self.subscription_args(symbols))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Drop ``symbols``; an instType-wide liquidation feed stays while others need it."""
        still = {okx_inst_type(okx_inst_id(s)) for s in self.symbols}
        args = [a for a in self.subscription_args(symbols)
                if a.get("instType") not in still]  # per-instrument args have no instType
        await self._send_op("unsubscribe", args)

    async def update_symbols(self, symbols: Iterable[str]) -> None:
        """SIGHUP: (un)subscribe only added/removed symbols; ``ValueError`` if one is invalid."""
        symbols = tuple(dict.fromkeys(symbols))
        self._index_symbols(symbols)  # first: frames for new symbols follow the subscribe
        await super().update_symbols(symbols)

    # ----- recovery ---------------------------------------------------------------------------
    def recover(self, symbol: str, reason: str) -> None:
        """Resubscribe ``symbol``'s ``books`` channel (fresh snapshot); others untouched."""
        self.recovery.start(symbol)

    async def resubscribe_book(self, symbol: str) -> None:
        arg = [{"channel": "books", "instId": okx_inst_id(symbol)}]
        await self._send_op("unsubscribe", arg)
        await self._send_op("subscribe", arg)

    def on_disconnect(self) -> None:
        self.recovery.clear()
        super().on_disconnect()

    async def keepalive(self, ws: WebSocket) -> None:
        """Send ``ping`` after ``ping_interval`` s without a frame; the answer is ``pong``.

        A missing ``pong`` is caught by the base silence watchdog (``silence_timeout``).
        """
        interval = int(self.ping_interval * 1e9)
        while not ws.closed:
            idle = time.monotonic_ns() - self.stats.last_message_mono
            if idle < interval:
                await asyncio.sleep((interval - idle) / 1e9)
                continue
            try:
                await ws.send_str("ping")
            except (ConnectionError, RuntimeError):
                return  # closing: the connection loop reconnects
            self.pings_sent += 1
            await asyncio.sleep(self.ping_interval)

    # ----- REST poll: long/short account ratio ------------------------------------------------
    def pollers(self) -> list[tuple[float, Callable[[], Any]]]:
        if LONG_SHORT_RATIO not in self.channels:
            return []
        return [(self.cfg.rest_poll_interval, self.poll_long_short_ratio)]

    async def poll_long_short_ratio(self) -> None:
        """One GET per configured contract; a failing symbol does not stop the others."""
        for symbol in self.symbols:
            inst = okx_inst_id(symbol)
            if okx_inst_type(inst) not in ("SWAP", "FUTURES"):
                continue  # the endpoint serves swaps and futures only
            params = {"instId": inst, "period": self.long_short_period, "limit": "1"}
            try:
                body = await self.rest_get_retry(self.long_short_path, params, attempts=3)
                self.on_long_short_ratio(symbol, body, time.time_ns(), time.monotonic_ns())
            except (RestError, KeyError, IndexError, TypeError, ValueError) as exc:
                self.stats.rest_errors += 1
                self.log.warning("long/short ratio %s: %s: %s", inst, type(exc).__name__, exc)

    def on_long_short_ratio(self, symbol: str, body: Mapping[str, Any], ts_recv: int,
                            ts_mono: int) -> None:
        """Emit the newest row of a long/short answer, once per venue timestamp.

        ``{"code": "0", "msg": "", "data": [["1701417600000",  # period start, ms
                                             "1.1739"]]}       # long / short accounts``
        """
        if body["code"] != "0":
            raise RestError(f"okx code {body['code']}: {body.get('msg', '')}")
        ts, ratio = max(body["data"], key=lambda row: int(row[0]))[:2]
        ts = int(ts)
        if ts > self._last_ratio_ts.get(symbol, 0):
            self._last_ratio_ts[symbol] = ts
            self.emit(LongShortRatio(symbol, 0, ts * MS, ts_recv, ts_mono, ratio,
                                     self.long_short_period))

    # ----- WebSocket frames -------------------------------------------------------------------
    def on_message(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        if data == "pong" or data == b"pong":  # answer to our keepalive, not JSON
            self.pongs += 1
            return
        msg = jsonlib.loads(data)
        if "event" in msg:
            self._on_event(msg)
            return
        self._handlers[msg["arg"]["channel"]](msg, ts_recv, ts_mono)

    def _on_event(self, msg: dict[str, Any]) -> None:
        """Acks, errors and notices.

        ``{"id": "sub1", "event": "subscribe", "arg": {"channel": "books", "instId": "BTC-USDT"},
        "connId": "a4d3ae55"}`` / ``{"id": "sub1", "event": "error", "code": "60012",
        "msg": "Invalid request: ...", "connId": "a4d3ae55"}``
        """
        event = msg["event"]
        arg = msg.get("arg") or {}
        key = (arg.get("channel", ""), arg.get("instId") or arg.get("instType", ""))
        if event == "subscribe":
            self.subscribed.add(key)
        elif event == "unsubscribe":
            self.subscribed.discard(key)
        elif event == "error":
            self.stats.subscribe_errors += 1
            self.log.error("okx error %s: %s (request %s)", msg.get("code"), msg.get("msg"),
                           msg.get("id"))
            op, args = self._pending.pop(msg.get("id", ""), ("", []))
            if op == "subscribe":  # a refused books subscribe: retry it (with backoff)
                for a in args:
                    symbol = self._symbol_of.get(a.get("instId", ""))
                    if a["channel"] == "books" and symbol in self.books:
                        self.resync(symbol, GAP_RESUBSCRIBE,
                                    f"subscribe refused: {msg.get('code')} {msg.get('msg')}")
        else:  # "notice" (service upgrade, reconnect soon), "channel-conn-count", ...
            self.log.warning("okx %s: %s %s", event, msg.get("code", ""), msg.get("msg", ""))

    def _on_books(self, msg: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """``books``: snapshot then increments, validated by :class:`OkxBookSync`.

        ``{"arg": {"channel": "books", "instId": "BTC-USDT"},
        "action": "update",                         # first push per subscribe: "snapshot"
        "data": [{"asks": [["8476.98", "415", "0", "13"]],  # px, sz (0 = remove), -, orders
        "bids": [["8476.97", "0", "0", "0"]],
        "ts": "1597026383085",                      # ms
        "checksum": 0,                              # CRC32 top 25, 0 since 2026
        "prevSeqId": 123456, "seqId": 123461}]}     # chain; snapshot prevSeqId = -1``
        """
        symbol = self._symbol_of.get(msg["arg"]["instId"])
        book = self.books.get(symbol) if symbol else None
        if book is None:
            return  # frames of an instrument just unsubscribed
        action = msg.get("action")
        push = self.book_sync.push
        try:
            for d in msg["data"]:
                verdict = push(book, action, d)
                if verdict is UPDATE:
                    self.emit(BookDelta(symbol, d["seqId"], int(d["ts"]) * MS, ts_recv,
                                        ts_mono, d["prevSeqId"], d["bids"], d["asks"]))
                elif verdict is SNAPSHOT:
                    self.recovery.snapshot_arrived(symbol)
                    self.emit(BookSnapshot(symbol, d["seqId"], int(d["ts"]) * MS, ts_recv,
                                           ts_mono, d["bids"], d["asks"]))
                elif verdict is not HEARTBEAT and verdict is not SKIPPED:
                    self.resync(symbol, verdict, self.book_sync.detail, ts_recv, ts_mono)
                    return
        except Exception as exc:
            if book.synced:  # the book missed this push: it is no longer known to be right
                self.resync(symbol, GAP_SEQUENCE, f"malformed books push: {exc!r}", ts_recv,
                            ts_mono)
            raise  # counted as malformed by handle_frame

    def _on_trades(self, msg: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """``{"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"instId": "BTC-USDT",
        "tradeId": "130639474",  # last id of the aggregated fills ("count" of them)
        "px": "42219.9", "sz": "0.12060306",  # base ccy (spot) or contracts
        "side": "buy",           # taker side
        "ts": "1630048897897", "count": "3", "source": "0", "seqId": 1234}]}``
        """
        symbol = self._symbol_of.get(msg["arg"]["instId"])
        if symbol is None:
            return
        for t in msg["data"]:
            tid = t["tradeId"]
            self.emit(Trade(symbol, int(tid) if tid.isdigit() else 0, int(t["ts"]) * MS, ts_recv,
                            ts_mono, tid, t["side"], t["px"], t["sz"]))

    def _on_funding(self, msg: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """``{"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}, "data": [{
        "fundingRate": "0.0001875391284828",  # rate applied at fundingTime
        "fundingTime": "1700726400000",       # next settlement, ms
        "nextFundingTime": "1700755200000",   # the one after
        "instId": "BTC-USD-SWAP", "ts": "1700724675402", ...}]}``
        """
        symbol = self._symbol_of.get(msg["arg"]["instId"])
        if symbol is None:
            return
        for f in msg["data"]:
            self.emit(Funding(symbol, 0, int(f["ts"]) * MS, ts_recv, ts_mono, f["fundingRate"],
                              int(f["fundingTime"]) * MS, ""))

    def _on_open_interest(self, msg: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """``{"arg": {"channel": "open-interest", "instId": "BTC-USDT-SWAP"}, "data": [{
        "oi": "2216113.01000000309",         # contracts
        "oiCcy": "22161.1301000000309",      # base currency
        "oiUsd": "1939251795.54769270396321", # USD value (our quote value)
        "instId": "BTC-USDT-SWAP", "instType": "SWAP", "ts": "1743041250440"}]}``
        """
        symbol = self._symbol_of.get(msg["arg"]["instId"])
        if symbol is None:
            return
        for o in msg["data"]:
            self.emit(OpenInterest(symbol, 0, int(o["ts"]) * MS, ts_recv, ts_mono, o["oi"],
                                   o.get("oiUsd", "")))

    def _on_liquidations(self, msg: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """All liquidations of an instType; only configured instruments are kept.

        ``{"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [{
        "instId": "IOST-USDT-SWAP", "details": [{"side": "buy",  # liquidation order side
        "posSide": "short", "bkPx": "0.007831",  # bankruptcy price
        "sz": "13",                               # contracts
        "bkLoss": "0", "ccy": "", "ts": "1692266434010"}]}]}``
        """
        symbol_of = self._symbol_of
        for item in msg["data"]:
            symbol = symbol_of.get(item["instId"])
            if symbol is None:
                continue
            for d in item["details"]:
                self.emit(Liquidation(symbol, 0, int(d["ts"]) * MS, ts_recv, ts_mono, d["side"],
                                      d["bkPx"], d["sz"]))


__all__ = ["OkxFeed", "okx_inst_id", "okx_symbol", "okx_inst_type"]
