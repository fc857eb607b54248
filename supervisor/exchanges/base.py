"""What every venue adapter shares: connection loop, backoff, REST, resync bookkeeping.

A venue module subclasses :class:`Feed` and fills in the declarative header (endpoints,
channel map) and a handful of hooks. The base class owns everything that must behave the
same on every venue:

- one WebSocket connection per instance, reconnected with exponential backoff and full
  jitter (capped), and reconnected when the feed is silent for ``silence_timeout``;
- REST GETs that honour ``Retry-After`` on HTTP 429/418 and time out;
- per-symbol books whose breaks go through :meth:`Feed.resync`, which invalidates that one
  book, emits a :class:`~supervisor.events.Gap`, counts the reason and logs it, then asks the
  venue to recover that symbol alone (:meth:`Feed.recover`);
- malformed frames are logged and counted by :meth:`Feed.handle_frame`, never raised.

Adapters never call out to consumers: they hand events to ``sink`` (the collector's
publisher, which writes to the ring) synchronously, in the socket task.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from supervisor import jsonlib
from supervisor.book import OrderBook
from supervisor.events import Event, Gap
from supervisor.exchanges import ws as ws_mod
from supervisor.exchanges.ws import WebSocket

Sink = Callable[[Event], None]

# Data types an instance can collect (config key ``channels``).
BOOKS = "books"
TRADES = "trades"
FUNDING = "funding"
OPEN_INTEREST = "open_interest"
LIQUIDATIONS = "liquidations"
LONG_SHORT_RATIO = "long_short_ratio"
VOLATILITY_INDEX = "volatility_index"
CHANNELS = (BOOKS, TRADES, FUNDING, OPEN_INTEREST, LIQUIDATIONS, LONG_SHORT_RATIO,
            VOLATILITY_INDEX)


@dataclass(frozen=True)
class FeedConfig:
    """What one adapter instance needs; built from the instance's config section."""

    instance: str  # e.g. "okx_spot"
    exchange: str  # "okx" | "binance" | "deribit"
    market: str  # "spot" | "derivatives"
    symbols: tuple[str, ...]  # normalized symbols, e.g. ("BTC-USDT", "ETH-USDT")
    channels: frozenset[str] = frozenset({BOOKS, TRADES})
    ws_url: str = ""  # "" = the venue's real public endpoint for this market
    rest_url: str = ""
    book_depth: int = 1000  # levels requested in REST snapshots where the venue asks
    rest_poll_interval: float = 60.0  # seconds between REST polls (OI, long/short ratio)
    silence_timeout: float = 30.0  # reconnect when no frame arrives for this long
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    rest_timeout: float = 10.0
    connect_timeout: float = 10.0  # TCP + TLS + WebSocket upgrade
    snapshot_concurrency: int = 2  # REST snapshots in flight at once


@dataclass
class FeedStats:
    """Counters an adapter keeps; the collector copies them into its stats block."""

    messages: int = 0  # WebSocket frames received
    bytes: int = 0
    events: dict[str, int] = field(default_factory=dict)  # by event type name
    resyncs: dict[str, int] = field(default_factory=dict)  # by gap reason
    reconnects: int = 0
    malformed: int = 0  # frames that failed to parse or validate
    rest_errors: int = 0
    rate_limited: int = 0  # HTTP 429/418 answers
    subscribe_errors: int = 0
    last_message_mono: int = 0  # ns, CLOCK_MONOTONIC of the last frame
    connected: bool = False


class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(cap, base * 2**n))."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class RestError(Exception):
    """A REST request failed (status, timeout or body)."""


class RateLimited(RestError):
    """HTTP 429/418: the venue asks us to wait ``retry_after`` seconds."""

    def __init__(self, url: str, status: int, retry_after: float) -> None:
        super().__init__(f"{url}: HTTP {status}, retry after {retry_after:g}s")
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds form; dates fall back)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


class Feed:
    """Base class of a venue adapter for one instance (one WebSocket connection).

    Subclasses set the class attributes and implement the hooks marked "venue hook".
    ``handle_frame`` is the synchronous hot path; tests drive it directly with recorded
    frames, and the replay exchange drives it through a real socket.
    """

    exchange: ClassVar[str] = ""
    # market -> default endpoints (the venue's real public ones)
    ws_endpoints: ClassVar[dict[str, str]] = {}
    rest_endpoints: ClassVar[dict[str, str]] = {}
    # our channel name -> venue channel/stream name, per market where they differ
    websocket_channels: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: FeedConfig, sink: Sink, log: logging.Logger | None = None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.log = log or logging.getLogger(f"marketprism.{cfg.instance}")
        self.stats = FeedStats()
        self.symbols: tuple[str, ...] = cfg.symbols
        self.books: dict[str, OrderBook] = (
            {s: OrderBook(s) for s in cfg.symbols} if BOOKS in cfg.channels else {}
        )
        self.ws: WebSocket | None = None
        self.session: aiohttp.ClientSession | None = None
        self.snapshots_in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snapshot_sem: asyncio.Semaphore | None = None
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)

    # ----- endpoints -------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return self.cfg.ws_url or self.ws_endpoints[self.cfg.market]

    @property
    def rest_url(self) -> str:
        return self.cfg.rest_url or self.rest_endpoints[self.cfg.market]

    # ----- events and books --------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Count and hand one normalized event to the sink."""
        name = type(event).__name__
        events = self.stats.events
        events[name] = events.get(name, 0) + 1
        self.sink(event)

    def books_synced(self) -> tuple[int, int]:
        """(books in sync, books configured)."""
        return sum(1 for b in self.books.values() if b.synced), len(self.books)

    def resync(self, symbol: str, reason: str, detail: str = "", ts_recv: int = 0,
               ts_mono: int = 0) -> None:
        """A break on ``symbol``: drop its book, announce the gap, recover that symbol alone.

        Always counted and logged; the :class:`Gap` event goes out only when the book was in
        sync (one gap per break, however many retries the recovery takes).
        """
        book = self.books.get(symbol)
        was_synced = book is None or book.synced
        last_seq = book.seq if book is not None else 0
        if book is not None:
            book.invalidate()
        self.stats.resyncs[reason] = self.stats.resyncs.get(reason, 0) + 1
        self.log.warning("resync symbol=%s reason=%s seq=%d %s", symbol, reason, last_seq,
                         detail)
        if was_synced:
            self.emit(Gap(symbol, last_seq, 0, ts_recv or time.time_ns(),
                          ts_mono or time.monotonic_ns(), reason, detail))
        if self.ws is not None and not self.ws.closed:
            self.recover(symbol, reason)

    def handle_frame(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        """Process one WebSocket text frame; malformed input is logged and counted."""
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(data)
        stats.last_message_mono = ts_mono
        try:
            self.on_message(data, ts_recv, ts_mono)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not kill the feed
            stats.malformed += 1
            sample = data[:200] if isinstance(data, str) else data[:200].decode("utf-8", "replace")
            self.log.error("malformed frame: %s: %s; frame=%r", type(exc).__name__, exc, sample)

    # ----- venue hooks -------------------------------------------------------------------
    def on_message(self, data: str | bytes, ts_recv: int, ts_mono: int) -> None:
        """Venue hook: parse one frame, validate sequences, update books, ``emit`` events.

        Raise on malformed input (counted by :meth:`handle_frame`).
        """
        raise NotImplementedError

    async def on_open(self, ws: WebSocket) -> None:
        """Venue hook: send subscriptions for ``self.symbols`` on a fresh connection."""
        raise NotImplementedError

    def recover(self, symbol: str, reason: str) -> None:
        """Venue hook: start recovery of one symbol's book (snapshot or resubscribe)."""
        raise NotImplementedError

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Venue hook: subscribe additional symbols on the live connection (SIGHUP)."""
        raise NotImplementedError

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Venue hook: unsubscribe symbols on the live connection (SIGHUP)."""
        raise NotImplementedError

    def pollers(self) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        """Venue hook: periodic REST polls as (interval seconds, coroutine function)."""
        return []

    async def keepalive(self, ws: WebSocket) -> None:
        """Venue hook: application-level pings, if the venue wants them (runs per connection)."""

    def on_disconnect(self) -> None:
        """Every book is invalid once the socket is gone: announce it."""
        for symbol, book in self.books.items():
            if book.synced:
                self.resync(symbol, "disconnect", "connection lost")

    # ----- helpers for venue modules ----------------------------------------------------------
    async def send_json(self, obj: Any) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            raise ConnectionError("not connected")
        await ws.send_str(jsonlib.dumps(obj).decode())

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        """Run a background task owned by this feed (cancelled on close/disconnect)."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s failed: %r", task.get_name(), task.exception())

    async def rest_get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``rest_url + path`` and parse JSON; 429/418 raise :class:`RateLimited`."""
        assert self.session is not None
        url = self.rest_url.rstrip("/") + path
        timeout = aiohttp.ClientTimeout(total=self.cfg.rest_timeout)
        try:
            async with self.session.get(url, params=params, timeout=timeout) as resp:
                body = await resp.read()
                if resp.status in (429, 418):
                    self.stats.rate_limited += 1
                    raise RateLimited(url, resp.status,
                                      parse_retry_after(resp.headers.get("Retry-After")))
                if resp.status != 200:
                    raise RestError(f"{url}: HTTP {resp.status}: {body[:200]!r}")
                return jsonlib.loads(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RestError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except jsonlib.JSONDecodeError as exc:
            raise RestError(f"{url}: bad JSON: {exc}") from exc

    async def rest_get_retry(self, path: str, params: dict[str, Any] | None = None,
                             attempts: int = 5) -> Any:
        """:meth:`rest_get` with backoff; honours Retry-After. Raises after ``attempts``."""
        backoff = Backoff(self.cfg.backoff_initial, self.cfg.backoff_max)
        for attempt in range(attempts):
            try:
                return await self.rest_get(path, params)
            except RateLimited as exc:
                self.log.warning("rate limited: %s", exc)
                delay = max(exc.retry_after, backoff.next_delay())
            except RestError as exc:
                self.stats.rest_errors += 1
                self.log.warning("REST error (attempt %d/%d): %s", attempt + 1, attempts, exc)
                delay = backoff.next_delay()
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
        raise RestError(f"{path}: gave up after {attempts} attempts")

    async def with_snapshot_slot(self, coro: Awaitable[Any]) -> Any:
        """Run a snapshot fetch under the concurrency limit, counting it as in flight."""
        if self._snapshot_sem is None:
            self._snapshot_sem = asyncio.Semaphore(self.cfg.snapshot_concurrency)
        async with self._snapshot_sem:
            self.snapshots_in_flight += 1
            try:
                return await coro
            finally:
                self.snapshots_in_flight -= 1

    # ----- the connection loop -----------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe, read until cancelled; reconnect with backoff on any failure."""
        async with aiohttp.ClientSession(json_serialize=lambda o: jsonlib.dumps(o).decode()) as s:
            self.session = s
            polls = [asyncio.ensure_future(self._poll_loop(i, fn)) for i, fn in self.pollers()]
            try:
                while True:
                    await self._connect_once(s)
                    self.stats.reconnects += 1
                    delay = self._backoff.next_delay()
                    self.log.warning("reconnecting in %.2fs (reconnect #%d)", delay,
                                     self.stats.reconnects)
                    await asyncio.sleep(delay)
            finally:
                for t in polls:
                    t.cancel()
                await self._cancel_tasks()
                self.session = None

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        """One connection: connect, subscribe, hand every frame to :meth:`handle_frame`.

        Frames arrive synchronously from the socket (:mod:`supervisor.exchanges.ws`); this
        coroutine only waits for the connection to end. The backoff restarts once a
        connection has carried data.
        """
        watchdog: asyncio.Task[None] | None = None
        pinger: asyncio.Task[None] | None = None
        ws: WebSocket | None = None
        stopping = False
        messages = self.stats.messages
        try:
            ws = await ws_mod.connect(self.ws_url, self.handle_frame, session=session,
                                      timeout=self.cfg.connect_timeout)
            self.ws = ws
            self.stats.connected = True
            self.stats.last_message_mono = time.monotonic_ns()
            self.log.info("connected to %s (%s)", self.ws_url, ws_mod.BACKEND)
            await self.on_open(ws)
            watchdog = asyncio.ensure_future(self._silence_watchdog(ws))
            pinger = asyncio.ensure_future(self.keepalive(ws))
            await ws.wait_closed()
            if ws.exception() is not None:
                self.log.warning("websocket error: %s", ws.exception())
            self.log.warning("connection closed by peer (code %s)", ws.close_code)
        except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as exc:
            self.log.warning("connection to %s failed: %s: %s", self.ws_url,
                             type(exc).__name__, exc)
        except asyncio.CancelledError:
            stopping = True  # shutdown: the ring is marked stopped, no per-book gap noise
            raise
        finally:
            for t in (watchdog, pinger):
                if t is not None:
                    t.cancel()
            if ws is not None and not ws.closed:
                try:
                    await ws.close()
                except (ConnectionError, OSError, TimeoutError):
                    pass
            if self.stats.messages != messages:
                self._backoff.reset()
            self.ws = None
            self.stats.connected = False
            await self._cancel_tasks()
            if not stopping:
                self.on_disconnect()

    async def _silence_watchdog(self, ws: WebSocket) -> None:
        timeout_ns = int(self.cfg.silence_timeout * 1e9)
        while not ws.closed:
            await asyncio.sleep(min(1.0, self.cfg.silence_timeout / 4))
            silent = time.monotonic_ns() - self.stats.last_message_mono
            if silent > timeout_ns:
                self.log.warning("feed silent for %.1fs: reconnecting", silent / 1e9)
                await ws.close()
                return

    async def _poll_loop(self, interval: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a poller failure is logged, retried
                self.stats.rest_errors += 1
                self.log.warning("poll %s failed: %s", getattr(fn, "__name__", fn), exc)
            await asyncio.sleep(interval)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def update_symbols(self, symbols: Iterable[str]) -> None:
        """Apply a new symbol list (SIGHUP) without touching unchanged symbols."""
        new = tuple(dict.fromkeys(symbols))
        added = [s for s in new if s not in self.symbols]
        removed = [s for s in self.symbols if s not in new]
        self.symbols = new
        if BOOKS in self.cfg.channels:
            for s in removed:
                self.books.pop(s, None)
            for s in added:
                self.books[s] = OrderBook(s)
        if self.ws is not None and not self.ws.closed:
            if removed:
                await self.unsubscribe(removed)
            if added:
                await self.subscribe(added)
        self.log.info("symbols updated: +%s -%s", ",".join(added) or "none",
                      ",".join(removed) or "none")

