"""What Binance spot and USD-M share: the combined-stream protocol, dispatch, trades.

One WebSocket per instance on the combined-stream endpoint (``/stream``); streams are added
and removed with ``SUBSCRIBE`` / ``UNSUBSCRIBE`` requests on the live connection, so a SIGHUP
symbol change never drops it. Every frame is ``{"stream": "<sym>@<name>", "data": {...}}``;
requests are answered ``{"result": null, "id": N}`` or ``{"error": {...}, "id": N}``.

Books: ``<sym>@depth@100ms`` diff events stitched onto a REST snapshot: the rule is
:mod:`supervisor.exchanges.binance_sync` (one :class:`DepthSync` per symbol), the driving
(handler, :meth:`~supervisor.exchanges.binance_book.BinanceBooks.apply_snapshot`, snapshot
tasks) :mod:`supervisor.exchanges.binance_book`. A symbol's snapshot is fetched once its
SUBSCRIBE is acknowledged, and again for that one symbol after any break.

The venue classes (:class:`~supervisor.exchanges.binance.BinanceSpotFeed`,
:class:`~supervisor.exchanges.binance.BinanceFuturesFeed`) live in
:mod:`supervisor.exchanges.binance` with their declarative headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from supervisor import jsonlib
from supervisor.events import Trade
from supervisor.exchanges.base import BOOKS, TRADES, FeedConfig, Sink
from supervisor.exchanges.binance_book import BinanceBooks, _ns
from supervisor.exchanges.binance_symbols import binance_symbol
from supervisor.exchanges.binance_sync import DepthSync
from supervisor.exchanges.ws import WebSocket


class BinanceFeed(BinanceBooks):
    """What spot and USD-M share: the stream protocol, dispatch, books, trades.

    Subclasses fill in the market's header (endpoints, depth path and limits, sync class).
    Counters beyond :class:`FeedStats`: those of :class:`BinanceBooks`, and ``ignored``
    (frames of streams or symbols we do not handle: bookTicker, kline, ...).
    """

    exchange: ClassVar[str] = "binance"
    market: ClassVar[str] = ""
    # our channel -> stream name suffix (``<sym>@<suffix>``); REST-polled channels are absent
    websocket_channels: ClassVar[dict[str, str]] = {
        BOOKS: "depth@100ms",
        TRADES: "aggTrade",  # aggregated per taker order and price; ``trade`` is handled too
    }
    rest_channels: ClassVar[frozenset[str]] = frozenset()
    # (depth_path, has_pu, snapshot_attempts: see BinanceBooks)
    depth_max: ClassVar[int] = 1000  # largest snapshot ``limit`` the venue serves
    depth_limits: ClassVar[tuple[int, ...]] = ()  # the only ``limit`` values allowed, if listed
    sync_class: ClassVar[type[DepthSync]] = DepthSync
    max_streams_per_request: ClassVar[int] = 100
    requests_per_second: ClassVar[float] = 5.0  # venue limit on client WS messages
    max_buffer: ClassVar[int] = 4096  # buffered diff events per symbol while syncing

    def __init__(self, cfg: FeedConfig, sink: Sink, log: logging.Logger | None = None) -> None:
        if cfg.market != self.market:
            raise ValueError(f"{type(self).__name__} serves market {self.market!r}, "
                             f"not {cfg.market!r}")
        super().__init__(cfg, sink, log)
        supported = set(self.websocket_channels) | self.rest_channels
        unsupported = sorted(set(cfg.channels) - supported)
        if unsupported:
            self.log.warning("channels not offered by %s %s: %s", self.exchange, self.market,
                             ", ".join(unsupported))
        self.stale_events = 0
        self.old_snapshots = 0
        self.buffer_overflows = 0
        self.ignored = 0
        self._syncs: dict[str, DepthSync] = {}  # normalized symbol -> sync
        self._sync_by_venue: dict[str, DepthSync] = {}  # "BTCUSDT" -> sync (hot path)
        self._std_by_venue: dict[str, str] = {}  # "BTCUSDT" -> "BTC-USDT"
        self._snapshot_tasks: dict[str, asyncio.Task[Any]] = {}
        self._pending: dict[int, tuple[str, tuple[str, ...]]] = {}  # id -> (method, symbols)
        self._next_id = 1
        handlers: dict[str, Callable[[dict[str, Any], int, int], None]] = {}
        if BOOKS in cfg.channels:
            handlers["depthUpdate"] = self._on_depth
        if TRADES in cfg.channels:
            handlers["aggTrade"] = self._on_agg_trade
            handlers["trade"] = self._on_trade
        self._handlers = handlers
        self._refresh_symbols()

    # ----- endpoints and symbols -----------------------------------------------------------
    @property
    def snapshot_limit(self) -> int:
        """``limit`` of the REST snapshot: cfg.book_depth capped to the venue maximum.

        Where the venue accepts only listed values, the smallest one >= the depth.
        """
        depth = min(max(1, self.cfg.book_depth), self.depth_max)
        for limit in self.depth_limits:
            if limit >= depth:
                return limit
        return depth

    def streams(self, symbols: Iterable[str]) -> list[str]:
        """Stream names for ``symbols`` on the configured WebSocket channels."""
        suffixes = [s for ch, s in self.websocket_channels.items() if ch in self.cfg.channels]
        return [f"{binance_symbol(sym).lower()}@{suffix}" for sym in symbols
                for suffix in suffixes]

    def _refresh_symbols(self) -> None:
        """Make the per-symbol maps and syncs follow ``self.symbols`` / ``self.books``."""
        self._std_by_venue = {binance_symbol(s): s for s in self.symbols}
        syncs = {}
        for symbol, book in self.books.items():
            sync = self._syncs.get(symbol)
            if sync is None or sync.book is not book:
                sync = self.sync_class(book, self.max_buffer)
            syncs[symbol] = sync
        for symbol in set(self._syncs) - set(syncs):
            task = self._snapshot_tasks.pop(symbol, None)
            if task is not None:
                task.cancel()
        self._syncs = syncs
        self._sync_by_venue = {binance_symbol(s): sync for s, sync in syncs.items()}

    def sync(self, symbol: str) -> DepthSync:
        """The book sync state machine of ``symbol`` (tests inspect it)."""
        return self._syncs[symbol]

    # ----- the hot path --------------------------------------------------------------------
    def on_message(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        """Parse once, dispatch on the event type ``e``; control answers go aside.

        Frames of streams we do not handle (``bookTicker`` has no ``e`` on spot, ``kline``)
        are counted in ``ignored``, not as malformed.
        """
        msg = jsonlib.loads(data)
        d = msg.get("data")
        if d is None:
            if "e" not in msg:
                self._on_control(msg)
                return
            d = msg  # raw-stream framing (``/ws``): the event itself
        handler = self._handlers.get(d.get("e"))
        if handler is None:
            self.ignored += 1
            return
        handler(d, ts_recv, ts_mono)

    def _on_agg_trade(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Aggregate trade -> :class:`Trade` (one per taker order and price).

        ::

            {"e": "aggTrade", "E": 1626992741203, "s": "SUSHIUSDT",
             "a": 87213561,          # aggregate trade id (Trade.seq and trade_id)
             "p": "7.6110", "q": "2",
             "f": 127453215, "l": 127453215,   # first / last trade id aggregated
             "T": 1626992741156,
             "m": true}              # buyer is the maker -> the taker sold
        """
        symbol = self._std_by_venue.get(d["s"])
        if symbol is None:
            self.ignored += 1
            return
        trade_id = d["a"]
        self.emit(Trade(symbol, trade_id, _ns(d["E"]), ts_recv, ts_mono,
                        str(trade_id), "sell" if d["m"] else "buy", _dec(d["p"]), _dec(d["q"])))

    def _on_trade(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Raw trade (spot ``<sym>@trade``) -> :class:`Trade`.

        ::

            {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345,   # trade id
             "p": "0.001", "q": "100", "T": 1672515782136, "m": true}       # m: buyer is maker
        """
        symbol = self._std_by_venue.get(d["s"])
        if symbol is None:
            self.ignored += 1
            return
        trade_id = d["t"]
        self.emit(Trade(symbol, trade_id, _ns(d["E"]), ts_recv, ts_mono,
                        str(trade_id), "sell" if d["m"] else "buy", _dec(d["p"]), _dec(d["q"])))

    def _on_control(self, msg: dict[str, Any]) -> None:
        """Answers to our requests: ``{"result": null, "id": 3}``, ``{"error": {...}, "id": 3}``.

        An acknowledged SUBSCRIBE starts the book snapshots of its symbols: the stream is
        flowing by then, so the snapshot cannot predate it.
        """
        if "id" not in msg:
            raise ValueError("frame is neither a stream event nor an answer to a request")
        pending = self._pending.pop(msg["id"], None) if type(msg["id"]) is int else None
        method, symbols = pending if pending is not None else ("?", ())
        if "error" in msg or "code" in msg:
            self.stats.subscribe_errors += 1
            err = msg.get("error", msg)
            self.log.error("%s id=%s refused: %s", method, msg["id"], err)
            return
        if "result" not in msg:
            raise ValueError("answer without result or error")
        if pending is None:
            self.log.debug("answer to unknown request id=%r", msg["id"])
        elif method == "SUBSCRIBE":
            for symbol in symbols:
                self._request_snapshot(symbol)

    # ----- connection and subscriptions ----------------------------------------------------------
    async def on_open(self, ws: WebSocket) -> None:
        """Fresh connection: subscribe every configured stream (snapshots follow the acks)."""
        self._pending.clear()
        self._refresh_symbols()
        await self._request("SUBSCRIBE", self.symbols)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """SIGHUP: add ``symbols`` on the live connection."""
        self._refresh_symbols()
        await self._request("SUBSCRIBE", tuple(symbols))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """SIGHUP: drop ``symbols`` (their books and snapshot tasks go with them)."""
        self._refresh_symbols()
        await self._request("UNSUBSCRIBE", tuple(symbols))

    async def _request(self, method: str, symbols: tuple[str, ...]) -> None:
        """Send ``method`` for the streams of ``symbols``, chunked and paced to the venue limit."""
        per_symbol = len(self.streams(("X-Y",)))
        if not symbols or per_symbol == 0:
            return
        step = max(1, self.max_streams_per_request // per_symbol)
        for i in range(0, len(symbols), step):
            if i:
                await asyncio.sleep(1.0 / self.requests_per_second)
            chunk = symbols[i:i + step]
            rid = self._next_id
            self._next_id += 1
            self._pending[rid] = (method, chunk)
            await self.send_json({"method": method, "params": self.streams(chunk), "id": rid})

    def on_disconnect(self) -> None:
        """Announce the broken books (base class), then restart every sync from scratch."""
        super().on_disconnect()
        for sync in self._syncs.values():
            sync.reset()
        self._snapshot_tasks.clear()
        self._pending.clear()


def _dec(value: Any) -> str:
    """A decimal field must be the venue's string (never a binary float)."""
    if type(value) is not str:
        raise TypeError(f"decimal field is {type(value).__name__}, not str")
    return value


__all__ = ["BinanceFeed"]
