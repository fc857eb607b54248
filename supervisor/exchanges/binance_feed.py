"""What Binance spot and USD-M share: the combined-stream protocol, books, trades, symbols.

One WebSocket per instance on the combined-stream endpoint (``/stream``); streams are added
and removed with ``SUBSCRIBE`` / ``UNSUBSCRIBE`` requests on the live connection, so a SIGHUP
symbol change never drops it. Every frame is ``{"stream": "<sym>@<name>", "data": {...}}``;
requests are answered ``{"result": null, "id": N}`` or ``{"error": {...}, "id": N}``.

Books: ``<sym>@depth@100ms`` diff events stitched onto a REST snapshot by
:mod:`supervisor.exchanges.binance_sync` (one :class:`DepthSync` per symbol). The snapshot is
fetched in a background task (never awaited in the socket handler) once the subscription is
acknowledged, and again for that one symbol after any break. :meth:`BinanceFeed.apply_snapshot`
is the synchronous entry point for a snapshot body, shared by the REST path and the tests.

The venue classes (:class:`~supervisor.exchanges.binance.BinanceSpotFeed`,
:class:`~supervisor.exchanges.binance.BinanceFuturesFeed`) live in
:mod:`supervisor.exchanges.binance` with their declarative headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import aiohttp

from supervisor import jsonlib
from supervisor.events import (
    GAP_CROSSED,
    GAP_SEQUENCE,
    GAP_SNAPSHOT,
    BookDelta,
    BookSnapshot,
    Trade,
)
from supervisor.exchanges.base import (
    BOOKS,
    TRADES,
    Backoff,
    Feed,
    FeedConfig,
    RestError,
    Sink,
)
from supervisor.exchanges.binance_sync import (
    APPLIED,
    CROSSED,
    GAP,
    OLD_SNAPSHOT,
    OVERFLOW,
    STALE,
    SYNCED,
    DepthSync,
)

# Quote assets, longest first, to split a venue id like "ETHBTC" when no config says how.
QUOTE_ASSETS = tuple(sorted((
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "EUR", "GBP",
    "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "BIDR", "IDRT", "ZAR", "PLN", "RON", "ARS",
    "MXN", "COP", "CZK", "NGN", "USD", "XRP", "DOGE", "TRX", "DOT", "PAX", "VAI",
), key=len, reverse=True))


def binance_symbol(std: str) -> str:
    """Normalized symbol -> Binance id: ``BTC-USDT`` and ``BTC-USDT-PERP`` -> ``BTCUSDT``.

    Ids without a dash (dated USD-M futures such as ``BTCUSDT_240628``) are venue ids
    already and pass through. Stream names use the lower-cased id.
    """
    parts = std.split("-")
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "PERP"):
        return parts[0] + parts[1]
    if len(parts) == 1:
        return std
    raise ValueError(f"not a Binance symbol: {std!r}")


def std_symbol(venue: str, market: str) -> str:
    """Binance id -> normalized symbol: ``BTCUSDT`` -> ``BTC-USDT`` (spot) or ``BTC-USDT-PERP``.

    Dated futures (``BTCUSDT_240628``) keep the venue id. The base/quote split uses
    :data:`QUOTE_ASSETS`; feeds map their configured symbols exactly instead.
    """
    venue = venue.upper()
    if "_" in venue:
        return venue
    for quote in QUOTE_ASSETS:
        if venue.endswith(quote) and len(venue) > len(quote):
            base = venue[: -len(quote)]
            return f"{base}-{quote}-PERP" if market == "derivatives" else f"{base}-{quote}"
    raise ValueError(f"unknown quote asset in {venue!r}")


class BinanceFeed(Feed):
    """What spot and USD-M share: the stream protocol, dispatch, books, trades.

    Subclasses fill in the market's header (endpoints, depth path and limits, sync class).
    Counters beyond :class:`FeedStats`: ``stale_events`` (diff events already in the book),
    ``old_snapshots`` (snapshots older than the stream, refetched), ``buffer_overflows``,
    ``ignored`` (frames of streams or symbols we do not handle: bookTicker, kline, ...).
    """

    exchange: ClassVar[str] = "binance"
    market: ClassVar[str] = ""
    # our channel -> stream name suffix (``<sym>@<suffix>``); REST-polled channels are absent
    websocket_channels: ClassVar[dict[str, str]] = {
        BOOKS: "depth@100ms",
        TRADES: "aggTrade",  # aggregated per taker order and price; ``trade`` is handled too
    }
    rest_channels: ClassVar[frozenset[str]] = frozenset()
    depth_path: ClassVar[str] = ""
    depth_max: ClassVar[int] = 1000  # largest snapshot ``limit`` the venue serves
    depth_limits: ClassVar[tuple[int, ...]] = ()  # the only ``limit`` values allowed, if listed
    sync_class: ClassVar[type[DepthSync]] = DepthSync
    has_pu: ClassVar[bool] = False  # diff events carry ``pu`` (USD-M)
    max_streams_per_request: ClassVar[int] = 100
    requests_per_second: ClassVar[float] = 5.0  # venue limit on client WS messages
    max_buffer: ClassVar[int] = 4096  # buffered diff events per symbol while syncing
    snapshot_attempts: ClassVar[int] = 5  # REST attempts per round before "snapshot_failed"

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

    def _on_depth(self, d: dict[str, Any], ts_recv: int, ts_mono: int) -> None:
        """Diff depth event -> :class:`BookDelta` once the book is in sync.

        ::

            {"e": "depthUpdate", "E": 1626992741140,   # event time, ms
             "T": 1626992741123,                      # USD-M only: transaction time
             "s": "SUSHIUSDT",
             "U": 600859601193,                       # first update id in this event
             "u": 600859602861,                       # last update id in this event
             "pu": 600859600917,                      # USD-M only: "u" of the previous event
             "b": [["7.5980", "1433"], ["7.6100", "0"]],   # bids [price, qty]; qty 0 = remove
             "a": [["7.6170", "534"]]}                     # asks
        """
        sync = self._sync_by_venue.get(d["s"])
        if sync is None:
            self.ignored += 1  # not (or no longer) subscribed: late frame after UNSUBSCRIBE
            return
        book = sync.book
        prev = book.seq
        try:
            last = d["u"]
            bids = d["b"]
            asks = d["a"]
            ts = d["E"]
            if ts.__class__ is not int:
                raise TypeError(f"E is {type(ts).__name__}, not int")
            status = sync.on_event(d["U"], last, d["pu"] if self.has_pu else 0, bids, asks, ts)
        except Exception:
            # The event is lost (and may be half applied): that book cannot be trusted.
            sync.reset()
            self.resync(book.symbol, GAP_SEQUENCE, "malformed depth event", ts_recv, ts_mono)
            raise
        if status == APPLIED:
            # Feed.emit inlined (the hot path: one call and a type-name lookup saved).
            events = self.stats.events
            events["BookDelta"] = events.get("BookDelta", 0) + 1
            self.sink(BookDelta(book.symbol, last, ts * 1_000_000, ts_recv, ts_mono, prev, bids,
                                asks))
        elif status != STALE:
            self._depth_status(sync, status, d, prev, ts_recv, ts_mono)
        else:
            self.stale_events += 1

    def _depth_status(self, sync: DepthSync, status: int, d: dict[str, Any], prev: int,
                      ts_recv: int, ts_mono: int) -> None:
        """The rare outcomes of a diff event: buffered, gap, crossed, overflow."""
        symbol = sync.book.symbol
        if status == GAP:
            pu = f" pu={d['pu']}" if self.has_pu else ""
            self.resync(symbol, GAP_SEQUENCE, f"book at u={prev}, event U={d['U']} "
                        f"u={d['u']}{pu}", ts_recv, ts_mono)
        elif status == CROSSED:
            self.resync(symbol, GAP_CROSSED, f"crossed after u={d['u']}", ts_recv, ts_mono)
        elif status == OVERFLOW:
            self.buffer_overflows += 1
            self.log.warning("symbol=%s: %d diff events buffered without a snapshot: dropped "
                             "them, sync restarts", symbol, sync.max_buffer)
            self._request_snapshot(symbol)
        else:  # BUFFERED: make sure a snapshot is on its way (after a failed round, say)
            self._request_snapshot(symbol)

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

    # ----- snapshots -------------------------------------------------------------------------
    def apply_snapshot(self, symbol: str, body: Any, ts_recv: int = 0, ts_mono: int = 0) -> int:
        """Load a REST depth snapshot body for ``symbol``; returns the sync status.

        ``body`` is the parsed JSON or its raw text (``{"lastUpdateId": N, "bids": [...],
        "asks": [...]}``, USD-M adds ``E``/``T``). On :data:`SYNCED` a :class:`BookSnapshot`
        goes out (the buffered events folded in, so its ``seq`` is the last one applied);
        :data:`OLD_SNAPSHOT` means the body predates the buffered stream and another is
        needed; GAP/CROSSED resync the symbol. A snapshot for a book already in sync is not
        needed and ignored (:data:`STALE`). This is the one way a snapshot reaches a book:
        the REST path calls it, and tests call it with recorded bodies.

        Raises ``ValueError`` on a malformed body (the book is reset: nothing half loaded).
        """
        sync = self._syncs.get(symbol)
        if sync is None or sync.live:
            return STALE
        if isinstance(body, (str, bytes)):
            body = jsonlib.loads(body)
        book = sync.book
        try:
            body_ts = _ns(body.get("E", 0))  # USD-M only
            status = sync.on_snapshot(body["lastUpdateId"], body["bids"], body["asks"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            sync.reset()
            book.invalidate()
            raise ValueError(f"bad depth snapshot for {symbol}: {type(exc).__name__}: "
                             f"{exc}") from exc
        ts_recv = ts_recv or time.time_ns()
        ts_mono = ts_mono or time.monotonic_ns()
        if status == SYNCED:
            bids, asks = book.snapshot_levels()
            ts_ex = sync.last_ts * 1_000_000 if sync.last_ts else body_ts
            self.emit(BookSnapshot(symbol, book.seq, ts_ex, ts_recv, ts_mono, bids, asks))
            self.log.info("symbol=%s in sync at u=%d (%d bids, %d asks)", symbol, book.seq,
                          len(bids), len(asks))
        elif status == OLD_SNAPSHOT:
            self.old_snapshots += 1
            self.log.info("symbol=%s: snapshot lastUpdateId=%d predates the stream (first "
                          "buffered U=%d): fetching another", symbol, body["lastUpdateId"],
                          sync.buffer[0][0])
        elif status == GAP:
            self.resync(symbol, GAP_SEQUENCE, "buffered events do not chain", ts_recv, ts_mono)
        elif status == CROSSED:
            self.resync(symbol, GAP_CROSSED, "crossed after snapshot", ts_recv, ts_mono)
        return status

    def recover(self, symbol: str, reason: str) -> None:
        """After a break on ``symbol``: fetch a new snapshot for that symbol alone."""
        self._request_snapshot(symbol)

    def _request_snapshot(self, symbol: str) -> None:
        """Start the snapshot task of ``symbol`` unless one runs (or there is no connection)."""
        if symbol not in self._syncs or self.session is None:
            return
        if self.ws is None or self.ws.closed:
            return
        task = self._snapshot_tasks.get(symbol)
        if task is not None and not task.done():
            return
        self._snapshot_tasks[symbol] = self.spawn(self._snapshot_loop(symbol),
                                                  name=f"snapshot {self.cfg.instance} {symbol}")

    async def _snapshot_loop(self, symbol: str) -> None:
        """Fetch snapshots of ``symbol`` until one syncs the book.

        Each round is :meth:`rest_get_retry` (backoff, Retry-After honoured); a round that
        gives up is counted as a ``snapshot_failed`` resync and the next round starts after
        a backoff. Diff events keep buffering meanwhile (bounded).
        """
        params = {"symbol": binance_symbol(symbol), "limit": self.snapshot_limit}
        backoff = Backoff(self.cfg.backoff_initial, self.cfg.backoff_max)
        while symbol in self._syncs and not self._syncs[symbol].live:
            try:
                body = await self.with_snapshot_slot(
                    self.rest_get_retry(self.depth_path, params, self.snapshot_attempts))
                status = self.apply_snapshot(symbol, body)
            except RestError as exc:
                self.resync(symbol, GAP_SNAPSHOT, str(exc))
                status = -1
            except ValueError as exc:
                self.stats.rest_errors += 1
                self.log.warning("%s", exc)
                status = -1
            if status in (SYNCED, STALE):
                return
            await asyncio.sleep(backoff.next_delay())

    # ----- connection and subscriptions ----------------------------------------------------------
    async def on_open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
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


def _ns(ms: Any) -> int:
    """Venue milliseconds -> ns; anything but an int is malformed (``"1" * 10**6`` is not)."""
    if type(ms) is not int:
        raise TypeError(f"timestamp is {type(ms).__name__}, not int")
    return ms * 1_000_000


def _dec(value: Any) -> str:
    """A decimal field must be the venue's string (never a binary float)."""
    if type(value) is not str:
        raise TypeError(f"decimal field is {type(value).__name__}, not str")
    return value


__all__ = ["binance_symbol", "std_symbol", "BinanceFeed", "QUOTE_ASSETS"]
