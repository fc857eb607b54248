"""Deribit public market data over JSON-RPC 2.0 on ``/ws/api/v2`` (``deribit_derivatives``).

One connection carries every channel. Requests are ``{"jsonrpc": "2.0", "id": N, "method":
"public/subscribe", "params": {"channels": [...]}}``; the answer has the same ``id`` and either
``result`` (the channels actually subscribed) or ``error``. Market data arrives as
notifications (``"method": "subscription"``, no ``id``), routed by ``params.channel``:

=====================  ======================================  =================================
our channel            Deribit channel                         events
=====================  ======================================  =================================
books                  ``book.{instrument}.100ms``             BookSnapshot, then BookDelta
trades                 ``trades.{instrument}.100ms``           Trade
volatility_index       ``deribit_volatility_index.{index}``    VolatilityIndex (``BTC-DVOL``)
funding, open_interest ``ticker.{instrument}.100ms``           Funding (perpetuals), OpenInterest
=====================  ======================================  =================================

Book sync is subscription-driven: the first notification of a book channel is a full
``snapshot``, then ``change`` messages whose ``prev_change_id`` must equal the previous
``change_id`` (:func:`check_change_id`). A break drops that one book and resubscribes that
one book channel (unsubscribe + subscribe gives a fresh snapshot); cryptofeed instead raises
and reconnects the whole connection, losing every other book with it.

Deribit sends prices and amounts as JSON numbers; they are published as ``repr(number)``,
which is exact. Deribit's values are multiples of a tick or contract size with well under 15
significant digits. Distinct decimals of at most 15 significant digits parse to distinct
doubles, and ``repr`` gives the shortest decimal that parses back to the same double: at
most as many digits as the text sent, so it is that same decimal value. (Text a serializer
wrote as a double's shortest repr, whatever its length, also comes back digit for digit.)
Only the spelling may differ (``5e-05`` for ``0.00005``, ``1e+16`` for ``10000000000000000.0``),
which the codec parses exactly. No ``Decimal`` is built on the hot path.

Usage::

    feed = DeribitFeed(FeedConfig("deribit_derivatives", "deribit", "derivatives",
                                  ("BTC-USD-PERP", "BTC-24SEP21-8000-P")), sink=ring.publish)
    await feed.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, ClassVar

from supervisor import jsonlib
from supervisor.events import (
    GAP_CROSSED,
    GAP_SEQUENCE,
    GAP_SNAPSHOT,
    BookDelta,
    BookSnapshot,
    Funding,
    OpenInterest,
    Trade,
    VolatilityIndex,
)
from supervisor.exchanges.base import (
    BOOKS,
    FUNDING,
    OPEN_INTEREST,
    TRADES,
    VOLATILITY_INDEX,
    Backoff,
    Feed,
)
from supervisor.exchanges.ws import WebSocket

SUBSCRIBE = "public/subscribe"
UNSUBSCRIBE = "public/unsubscribe"
_PERPETUAL = "-PERPETUAL"
_INF = float("inf")
_CHANNEL_RE = re.compile(r'"channel"\s*:\s*"([^"]+)"')
_NUMBER = (float, int)  # orjson parses integral JSON numbers (``8954``) as int


# ----- symbols ---------------------------------------------------------------------------
def to_venue_symbol(symbol: str) -> str:
    """``BTC-USD-PERP`` -> ``BTC-PERPETUAL``, ``BTC-USDC-PERP`` -> ``BTC_USDC-PERPETUAL``;
    dated futures and options keep the venue id."""
    if symbol.endswith("-PERP"):
        base, quote, _ = symbol.split("-")
        return f"{base}{_PERPETUAL}" if quote == "USD" else f"{base}_{quote}{_PERPETUAL}"
    return symbol


def from_venue_symbol(instrument: str) -> str:
    """Inverse of :func:`to_venue_symbol`."""
    if instrument.endswith(_PERPETUAL):
        base, _, quote = instrument[: -len(_PERPETUAL)].partition("_")
        return f"{base}-{quote or 'USD'}-PERP"
    return instrument


def base_currency(instrument: str) -> str:
    """``BTC-24SEP21-8000-P`` -> ``BTC``; ``ETH_USDC-PERPETUAL`` -> ``ETH``."""
    return instrument.partition("-")[0].partition("_")[0]


# ----- the sequencing rule ---------------------------------------------------------------
class Verdict(Enum):
    APPLY = "apply"
    SKIP = "skip"  # book awaits the snapshot of a (re)subscription: stale changes are expected
    GAP = "gap"


def check_change_id(synced: bool, last_change_id: int, prev_change_id: int) -> Verdict:
    """Deribit's book sequencing rule, for one ``change`` message.

    Each change carries ``prev_change_id``, the ``change_id`` of the message before it on
    that channel (ids are increasing, not contiguous). It applies only on top of exactly that
    state; anything else (lost, duplicated or reordered message) is a gap. While a book waits
    for its snapshot, changes still in flight from the old subscription are skipped.
    """
    if not synced:
        return Verdict.SKIP
    return Verdict.APPLY if prev_change_id == last_change_id else Verdict.GAP


def normalize_levels(raw: Iterable[Sequence[Any]]) -> list[list[str]]:
    """Deribit ``[action, price, amount]`` levels -> ``[price, size]`` strings.

    ``action`` is ``new``/``change`` (absolute amount) or ``delete`` (size ``"0"``). Every
    level is validated here, before the caller touches the book, so a bad level can never
    leave a change half-applied. Raises ``ValueError``/``TypeError`` on bad input.
    """
    out: list[list[str]] = []
    append = out.append
    for action, price, amount in raw:
        # exact class checks: bool is an int subclass, and a str must never reach repr()
        if price.__class__ is float and 0.0 < price < _INF or price.__class__ is int and price > 0:
            p = repr(price)
        else:
            raise ValueError(f"bad price {price!r}")
        if action == "delete":
            append([p, "0"])
        elif (action == "new" or action == "change") and (
                amount.__class__ is float and 0.0 <= amount < _INF
                or amount.__class__ is int and amount >= 0):
            append([p, repr(amount)])
        else:
            raise ValueError(f"bad level {[action, price, amount]!r}")
    return out


def _number(value: Any) -> str:
    if value.__class__ not in _NUMBER or not -_INF < value < _INF:  # NaN fails too
        raise ValueError(f"not a number: {value!r}")
    return repr(value)


def _ms(value: Any) -> int:
    """Deribit ``timestamp`` (ms since the epoch) -> ns."""
    if value.__class__ is not int:
        raise ValueError(f"bad timestamp {value!r}")
    return value * 1_000_000


Route = tuple[Callable[[str, Any, int, int], None], str]


class DeribitFeed(Feed):
    """Deribit adapter: books, trades, DVOL, and funding / open interest from tickers."""

    exchange = "deribit"
    ws_endpoints: ClassVar[dict[str, str]] = {"derivatives": "wss://www.deribit.com/ws/api/v2"}
    rest_endpoints: ClassVar[dict[str, str]] = {"derivatives": "https://www.deribit.com"}
    websocket_channels: ClassVar[dict[str, str]] = {
        BOOKS: "book.{instrument}.{interval}",
        TRADES: "trades.{instrument}.{interval}",
        VOLATILITY_INDEX: "deribit_volatility_index.{index}",
        FUNDING: "ticker.{instrument}.{interval}",
        OPEN_INTEREST: "ticker.{instrument}.{interval}",
    }
    interval: ClassVar[str] = "100ms"  # aggregated channels; "raw" needs an authorised session
    # base currency -> Deribit volatility index (DVOL exists for these only)
    volatility_indices: ClassVar[dict[str, str]] = {"BTC": "btc_usd", "ETH": "eth_usd"}
    # public/(un)subscribe are limited to ~3.3 requests/s sustained: stay under it
    subscribe_rate: ClassVar[float] = 3.0
    channels_per_request: ClassVar[int] = 100  # keeps each request and its answer small
    heartbeat_min: ClassVar[int] = 10  # public/set_heartbeat refuses intervals below 10 s
    # tickers come every 100 ms; funding and open interest move far slower
    ticker_min_interval_ms: ClassVar[int] = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._symbol_of = {to_venue_symbol(s): s for s in self.symbols}
        self._routes: dict[str, Route | None] = {}
        self._handlers: dict[str, Callable[[str, Any, int, int], None]] = {
            "book": self._on_book, "trades": self._on_trades, "ticker": self._on_ticker,
            "deribit_volatility_index": self._on_volatility,
        }
        self._next_id = 0
        self._pending: dict[int, tuple[str, tuple[str, ...]]] = {}  # id -> (method, channels)
        self._next_slot = 0.0  # loop time of the next allowed (un)subscribe request
        self._ticker_last_ms: dict[str, int] = {}
        self._retry: dict[str, Backoff] = {}  # symbol -> backoff while recoveries keep failing
        self._due: dict[str, float] = {}  # symbol -> loop time its resubscribe may go out
        self._resubscriber: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # ----- channels ------------------------------------------------------------------------
    def channels_for(self, symbols: Iterable[str]) -> list[str]:
        """Deribit channel names for ``symbols`` under the configured data types."""
        want = self.cfg.channels
        fmt = self.websocket_channels
        out: list[str] = []
        for symbol in symbols:
            inst = to_venue_symbol(symbol)
            for ours in (BOOKS, TRADES):
                if ours in want:
                    out.append(fmt[ours].format(instrument=inst, interval=self.interval))
            if OPEN_INTEREST in want or (FUNDING in want and inst.endswith(_PERPETUAL)):
                out.append(fmt[FUNDING].format(instrument=inst, interval=self.interval))
        return out

    def index_channels(self, symbols: Iterable[str]) -> set[str]:
        if VOLATILITY_INDEX not in self.cfg.channels:
            return set()
        names = {self.volatility_indices.get(base_currency(to_venue_symbol(s))) for s in symbols}
        return {self.websocket_channels[VOLATILITY_INDEX].format(index=n) for n in names if n}

    def book_channel(self, symbol: str) -> str:
        return self.websocket_channels[BOOKS].format(instrument=to_venue_symbol(symbol),
                                                     interval=self.interval)

    def _route(self, channel: str) -> Route | None:
        """Handler and symbol of a channel; None for instruments we do not collect."""
        kind, _, rest = channel.partition(".")
        handler = self._handlers.get(kind)
        if handler is None:
            raise ValueError(f"unknown channel {channel!r}")
        if kind == "deribit_volatility_index":
            symbol: str | None = rest.partition("_")[0].upper() + "-DVOL"
        else:
            symbol = self._symbol_of.get(rest.partition(".")[0])
            if kind == "book" and symbol not in self.books:
                symbol = None
        route = None if symbol is None else (handler, symbol)
        if route is not None:
            self._routes[channel] = route
        return route

    # ----- the hot path ------------------------------------------------------------------------
    def on_message(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        """Route one frame: notification, heartbeat, or the answer to one of our requests."""
        try:
            msg = jsonlib.loads(data)
        except jsonlib.JSONDecodeError:
            self._resync_unreadable(data, ts_recv, ts_mono)
            raise
        if msg.__class__ is not dict:
            raise ValueError("frame is not a JSON object")
        method = msg.get("method")
        if method == "subscription":
            params = msg["params"]
            channel = params["channel"]
            route = self._routes.get(channel) or self._route(channel)
            if route is not None:
                route[0](route[1], params["data"], ts_recv, ts_mono)
        elif method == "heartbeat":
            self._on_heartbeat(msg["params"])
        elif "id" in msg:
            self._on_response(msg)
        else:
            raise ValueError("neither a notification nor a response")

    def _on_book(self, symbol: str, data: Any, ts_recv: int, ts_mono: int) -> None:
        """``book.{instrument}.100ms``: a snapshot after (re)subscribing, then changes.

        ::

            {"channel": "book.BTC-PERPETUAL.100ms",
             "data": {"type": "change",                 # first message: "snapshot"
                      "timestamp": 1626993724318,       # ms
                      "instrument_name": "BTC-PERPETUAL",
                      "prev_change_id": 33195894164,    # absent in snapshots
                      "change_id": 33195894355,
                      "bids": [["delete", 32100.5, 0.0]],
                      "asks": [["new", 32101.0, 2600.0], ["change", 32105.5, 10.0]]}}

        A message that cannot be used (missing field, bad level) is a lost change: the
        book is resynced at once rather than when the next change exposes the gap.
        """
        book = self.books[symbol]
        try:
            kind = data["type"]
            if kind == "change":
                prev = data["prev_change_id"]
                verdict = check_change_id(book.synced, book.seq, prev)
                if verdict is Verdict.APPLY:
                    change_id = data["change_id"]
                    if change_id.__class__ is not int:
                        raise ValueError(f"bad change_id {change_id!r}")
                    ts = _ms(data["timestamp"])
                    bids = normalize_levels(data["bids"])
                    asks = normalize_levels(data["asks"])
                    if book.apply(bids, asks, change_id):  # True: left crossed
                        self.resync(symbol, GAP_CROSSED, f"after change_id {change_id}",
                                    ts_recv, ts_mono)
                    else:
                        self.emit(BookDelta(symbol, change_id, ts, ts_recv, ts_mono, prev,
                                            bids, asks))
                elif verdict is Verdict.GAP:
                    self.resync(symbol, GAP_SEQUENCE,
                                f"prev_change_id {prev} != change_id {book.seq}",
                                ts_recv, ts_mono)
            elif kind == "snapshot":
                self._book_snapshot(symbol, data, ts_recv, ts_mono)
            else:
                raise ValueError(f"unknown book message type {kind!r}")
        except Exception as exc:  # also a failing sink: the delta never reached consumers
            self.resync(symbol, GAP_SEQUENCE, f"unusable book message: {exc!r}",
                        ts_recv, ts_mono)
            raise

    def _book_snapshot(self, symbol: str, data: Any, ts_recv: int, ts_mono: int) -> None:
        book = self.books[symbol]
        change_id = data["change_id"]
        if change_id.__class__ is not int:
            raise ValueError(f"bad change_id {change_id!r}")
        ts = _ms(data["timestamp"])
        bids = normalize_levels(data["bids"])
        asks = normalize_levels(data["asks"])
        was_synced, old_seq = book.synced, book.seq
        book.load(bids, asks, change_id)
        if book.crossed():
            # never published: a Gap is due only if consumers held the previous state
            book.synced, book.seq = was_synced, old_seq
            self.resync(symbol, GAP_CROSSED, f"snapshot change_id {change_id}", ts_recv,
                        ts_mono)
            return
        self._retry.pop(symbol, None)
        bids, asks = book.snapshot_levels()
        self.emit(BookSnapshot(symbol, change_id, ts, ts_recv, ts_mono, bids, asks))

    def _on_trades(self, symbol: str, data: Any, ts_recv: int, ts_mono: int) -> None:
        """``trades.{instrument}.100ms``: a list of trades, all validated before any is emitted.

        ::

            {"channel": "trades.BTC-PERPETUAL.100ms",
             "data": [{"trade_seq": 933,            # per-instrument sequence
                       "trade_id": "9178",
                       "timestamp": 1550736299753,  # ms
                       "price": 3948.69, "amount": 10,
                       "direction": "sell",         # taker side
                       "instrument_name": "BTC-PERPETUAL", "index_price": 3930.73}]}
        """
        trades = []
        for t in data:
            side = t["direction"]
            seq = t["trade_seq"]
            if (side != "buy" and side != "sell") or seq.__class__ is not int:
                raise ValueError(f"bad trade {t!r}")
            trades.append(Trade(symbol, seq, _ms(t["timestamp"]), ts_recv, ts_mono,
                                str(t["trade_id"]), side, _number(t["price"]),
                                _number(t["amount"])))
        for trade in trades:
            self.emit(trade)

    def _on_ticker(self, symbol: str, data: Any, ts_recv: int, ts_mono: int) -> None:
        """``ticker.{instrument}.100ms`` -> Funding (perpetuals) and OpenInterest.

        Emitted at most once per ``ticker_min_interval_ms`` of exchange time per instrument
        (deterministic on replays). ``funding_8h`` is the rate (comparable to the 8-hour rates
        of OKX and Binance); Deribit funds continuously, so ``next_funding_ts`` is 0.
        ``open_interest`` is in the instrument's amount unit (USD for inverse contracts)::

            {"channel": "ticker.BTC-PERPETUAL.100ms",
             "data": {"timestamp": 1550652954406, "instrument_name": "BTC-PERPETUAL",
                      "open_interest": 1269.0, "mark_price": 3940.06,
                      "funding_8h": 0.0152, "current_funding": 0.005,   # perpetuals only
                      "best_bid_price": 3914.97, "best_ask_price": 3996.61, ...}}
        """
        ts_ms = data["timestamp"]
        ts = _ms(ts_ms)
        last = self._ticker_last_ms.get(symbol)
        if last is not None and ts_ms - last < self.ticker_min_interval_ms:
            return
        events: list[Funding | OpenInterest] = []
        want = self.cfg.channels
        rate = data.get("funding_8h")
        if FUNDING in want and rate is not None:
            events.append(Funding(symbol, 0, ts, ts_recv, ts_mono, _number(rate), 0,
                                  _number(data["mark_price"])))
        if OPEN_INTEREST in want:
            events.append(OpenInterest(symbol, 0, ts, ts_recv, ts_mono,
                                       _number(data["open_interest"]), ""))
        self._ticker_last_ms[symbol] = ts_ms
        for event in events:
            self.emit(event)

    def _on_volatility(self, symbol: str, data: Any, ts_recv: int, ts_mono: int) -> None:
        """``deribit_volatility_index.btc_usd`` -> VolatilityIndex ``BTC-DVOL``::

        {"data": {"volatility": 129.36, "timestamp": 1619777946007, "index_name": "btc_usd"}}
        """
        self.emit(VolatilityIndex(symbol, 0, _ms(data["timestamp"]), ts_recv, ts_mono,
                                  _number(data["volatility"])))

    def _on_heartbeat(self, params: Any) -> None:
        """``{"method": "heartbeat", "params": {"type": "test_request"}}`` must be answered
        with ``public/test`` or Deribit closes the connection; ``"type": "heartbeat"`` is
        just traffic (it keeps the silence watchdog quiet)."""
        kind = params["type"]
        if kind == "test_request":
            if self.ws is not None and not self.ws.closed:
                self.spawn(self.send_json(self.request("public/test", {})), name="deribit-test")
        elif kind != "heartbeat":
            raise ValueError(f"unknown heartbeat type {kind!r}")

    def _on_response(self, msg: dict[str, Any]) -> None:
        """The answer to one of our requests: ``result`` or ``error`` under its ``id``::

            {"id": 7, "result": ["book.BTC-PERPETUAL.100ms"]}
            {"id": 8, "error": {"code": 11050, "message": "bad_request"}}

        A subscribe error, or a requested channel missing from the result, counts one
        ``subscribe_errors``; its book channels resync (``snapshot_failed``) with backoff.
        """
        request = self._pending.pop(msg["id"], None)
        error = msg.get("error")
        if request is None:
            if error is not None:
                self.log.warning("error for unknown request id %r: %s", msg["id"], error)
            return
        method, channels = request
        if method != SUBSCRIBE and method != UNSUBSCRIBE:
            if error is not None:
                self.log.warning("%s failed: %s", method, error)
            return
        if error is not None:
            failed: Sequence[str] = channels
            detail = f"{error.get('code')}: {error.get('message')}"
        else:
            if method == UNSUBSCRIBE:
                return
            got = set(msg["result"])
            failed = [c for c in channels if c not in got]
            detail = "not in subscribe result"
            if not failed:
                return
        self.stats.subscribe_errors += 1
        self.log.error("%s failed (%s) for %d channel(s): %s", method, detail, len(failed),
                       ",".join(failed[:10]))
        if method == SUBSCRIBE:
            for channel in failed:
                route = self._routes.get(channel) or self._route(channel)
                if route is not None and route[0] == self._on_book:
                    self.resync(route[1], GAP_SNAPSHOT, f"{method}: {detail}")

    def _resync_unreadable(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        """An unparseable frame that names a book channel lost that book's change: resync
        now (the error path only; a frame without a readable channel waits for the gap)."""
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        found = _CHANNEL_RE.search(text)
        if found is None:
            return
        try:
            route = self._route(found.group(1))
        except ValueError:
            return
        if route is not None and route[0] == self._on_book:
            self.resync(route[1], GAP_SEQUENCE, "unparseable frame", ts_recv, ts_mono)

    # ----- requests and recovery ------------------------------------------------------------
    def request(self, method: str, params: dict[str, Any],
                channels: Sequence[str] = ()) -> dict[str, Any]:
        """Build a JSON-RPC request and remember its id, so the answer can be matched."""
        self._next_id += 1
        self._pending[self._next_id] = (method, tuple(channels))
        return {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}

    async def _channels_request(self, method: str, channels: Sequence[str]) -> None:
        """(Un)subscribe in chunks, paced under Deribit's subscription rate limit."""
        step = self.channels_per_request
        for i in range(0, len(channels), step):
            chunk = list(channels[i:i + step])
            loop = asyncio.get_running_loop()
            now = loop.time()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self.subscribe_rate
            if wait > 0:
                await asyncio.sleep(wait)
            await self.send_json(self.request(method, {"channels": chunk}, chunk))

    async def on_open(self, ws: WebSocket) -> None:
        """Fresh connection: heartbeats on, then every channel of every symbol."""
        self._reindex()  # symbols may have changed (SIGHUP) while we were disconnected
        self._pending.clear()
        self._due.clear()
        self._retry.clear()
        self._resubscriber = None
        interval = max(self.heartbeat_min, int(self.cfg.silence_timeout / 3))
        await self.send_json(self.request("public/set_heartbeat", {"interval": interval}))
        channels = self.channels_for(self.symbols) + sorted(self.index_channels(self.symbols))
        await self._channels_request(SUBSCRIBE, channels)

    def recover(self, symbol: str, reason: str) -> None:
        """Resubscribe that one book channel (a fresh snapshot); other channels untouched.

        The first attempt goes out at once; if recovery keeps failing (subscribe errors,
        crossed snapshots) later attempts back off with full jitter until a good snapshot.
        Symbols recovering at the same moment share one unsubscribe + subscribe pair.
        """
        if symbol not in self.books:
            return
        backoff = self._retry.get(symbol)
        if backoff is None:
            self._retry[symbol] = Backoff(self.cfg.backoff_initial, self.cfg.backoff_max)
            delay = 0.0
        else:
            delay = backoff.next_delay()
        self._due[symbol] = asyncio.get_running_loop().time() + delay
        self._wake.set()
        if self._resubscriber is None or self._resubscriber.done():
            self._resubscriber = self.spawn(self._resubscribe_loop(), name="deribit-resync")

    async def _resubscribe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            wait = min(self._due.values()) - loop.time()
            if wait > 0:  # backing off; a new recovery due sooner wakes us up
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            now = loop.time()
            ready = sorted(s for s, t in self._due.items() if t <= now)
            for s in ready:
                del self._due[s]
            channels = [self.book_channel(s) for s in ready if s in self.books]
            if channels:
                self.log.info("resubscribing %s", ",".join(channels))
                await self._channels_request(UNSUBSCRIBE, channels)
                await self._channels_request(SUBSCRIBE, channels)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """SIGHUP: channels for added symbols (and any DVOL index they newly need)."""
        symbols = list(symbols)
        self._reindex()
        before = self.index_channels(s for s in self.symbols if s not in symbols)
        extra = sorted(self.index_channels(symbols) - before)
        await self._channels_request(SUBSCRIBE, self.channels_for(symbols) + extra)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """SIGHUP: drop removed symbols' channels (and DVOL indices no longer needed)."""
        symbols = list(symbols)
        self._reindex()
        stale = sorted(self.index_channels(symbols) - self.index_channels(self.symbols))
        for s in symbols:
            self._due.pop(s, None)
            self._retry.pop(s, None)
        await self._channels_request(UNSUBSCRIBE, self.channels_for(symbols) + stale)

    def _reindex(self) -> None:
        self._symbol_of = {to_venue_symbol(s): s for s in self.symbols}
        self._routes.clear()


__all__ = [
    "DeribitFeed", "Verdict", "check_change_id", "normalize_levels", "to_venue_symbol",
    "from_venue_symbol", "base_currency",
]
