"""The real connection path against a tiny in-test Binance spot server (127.0.0.1, any port).

The server speaks the documented protocol for one symbol (BTCUSDT): the combined-stream
endpoint with SUBSCRIBE/UNSUBSCRIBE acks, ``depthUpdate`` diff events every few ms from a
random-walk book, and ``GET /api/v3/depth`` snapshots. It answers the first snapshot request
with 429 + ``Retry-After``, can drop one diff event (a gap) and can close the socket (a
disconnect). Every wait below is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from supervisor import jsonlib
from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.exchanges.base import BOOKS, TRADES, FeedConfig, RestError
from supervisor.exchanges.binance import BinanceSpotFeed

RETRY_AFTER = 0.3  # seconds the server asks for on the first snapshot request


class FakeBinanceSpot:
    """One-symbol Binance spot: a random-walk book with contiguous update ids."""

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.bids = {f"{100 - i}.00": "1" for i in range(1, 6)}
        self.asks = {f"{100 + i}.00": "1" for i in range(1, 6)}
        self.update_id = 1000
        self.history: dict[int, tuple[dict, dict]] = {}  # u -> book after it
        self.snapshot_requests: list[tuple[float, str]] = []  # (monotonic time, symbol)
        self.requests: list[dict] = []  # SUBSCRIBE / UNSUBSCRIBE requests received
        self.connections = 0
        self.drop_next = False
        self.sockets: list[web.WebSocketResponse] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/api/v3/depth", self.depth)
        return app

    def step(self) -> dict:
        """One diff event: a few levels change (bids stay below 100, asks above)."""
        first = self.update_id + 1
        self.update_id += self.rng.randint(1, 3)
        bids, asks = [], []
        for _ in range(self.rng.randint(1, 3)):
            side, out, price = ((self.bids, bids, 100 - self.rng.randint(1, 8))
                                if self.rng.random() < 0.5
                                else (self.asks, asks, 100 + self.rng.randint(1, 8)))
            key = f"{price}.00"
            size = "0" if self.rng.random() < 0.3 and len(side) > 2 else str(
                self.rng.randint(1, 9))
            if any(lv[0] == key for lv in out):
                continue
            out.append([key, size])
            if size == "0":
                side.pop(key, None)
            else:
                side[key] = size
        self.history[self.update_id] = (dict(self.bids), dict(self.asks))
        return {"e": "depthUpdate", "E": int(time.time() * 1000), "s": "BTCUSDT",
                "U": first, "u": self.update_id, "b": bids, "a": asks}

    async def depth(self, request: web.Request) -> web.Response:
        self.snapshot_requests.append((time.monotonic(), request.query["symbol"]))
        if len(self.snapshot_requests) == 1:
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429,
                                     headers={"Retry-After": str(RETRY_AFTER)})
        if request.query["symbol"] != "BTCUSDT":
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))
        return web.json_response({"lastUpdateId": self.update_id,
                                  "bids": [list(kv) for kv in bids],
                                  "asks": [list(kv) for kv in asks]})

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        subscribed: set[str] = set()
        pump = asyncio.ensure_future(self.pump(ws, subscribed))
        try:
            async for msg in ws:
                req = jsonlib.loads(msg.data)
                self.requests.append(req)
                if req["method"] == "SUBSCRIBE":
                    subscribed.update(req["params"])
                else:
                    subscribed.difference_update(req["params"])
                await ws.send_str(jsonlib.dumps({"result": None, "id": req["id"]}).decode())
        finally:
            pump.cancel()
        return ws

    async def pump(self, ws: web.WebSocketResponse, subscribed: set[str]) -> None:
        while not ws.closed:
            await asyncio.sleep(0.005)
            if "btcusdt@depth@100ms" not in subscribed:
                continue
            event = self.step()
            if self.drop_next:
                self.drop_next = False
                continue
            await ws.send_str(jsonlib.dumps(
                {"stream": "btcusdt@depth@100ms", "data": event}).decode())


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def book_matches_venue(feed: BinanceSpotFeed, venue: FakeBinanceSpot) -> bool:
    book = feed.books["BTC-USDT"]
    if not book.synced or book.seq not in venue.history:
        return False
    bids, asks = book.snapshot_levels()
    return ({p: q for p, q in bids}, {p: q for p, q in asks}) == venue.history[book.seq]


async def _scenario() -> None:
    venue = FakeBinanceSpot()
    runner = web.AppRunner(venue.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    events: list = []
    cfg = FeedConfig("binance_spot", "binance", "spot", ("BTC-USDT",),
                     channels=frozenset({BOOKS, TRADES}),
                     ws_url=f"ws://127.0.0.1:{port}/stream", rest_url=f"http://127.0.0.1:{port}",
                     backoff_initial=0.05, backoff_max=0.2, rest_timeout=2.0)
    feed = BinanceSpotFeed(cfg, events.append)
    task = asyncio.ensure_future(feed.run())
    book = feed.books["BTC-USDT"]
    try:
        # connect, subscribe ack, 429 honoured, snapshot, sync
        await wait_for(lambda: book.synced, "the first sync")
        assert venue.requests[0] == {"method": "SUBSCRIBE", "id": 1,
                                     "params": ["btcusdt@depth@100ms", "btcusdt@aggTrade"]}
        (t429, _), (t200, _) = venue.snapshot_requests[:2]
        assert t200 - t429 >= RETRY_AFTER * 0.95  # Retry-After honoured
        assert feed.stats.rate_limited == 1 and feed.stats.subscribe_errors == 0
        await wait_for(lambda: sum(isinstance(e, BookDelta) for e in events) >= 20, "deltas")
        await wait_for(lambda: book_matches_venue(feed, venue), "the book to match the venue")

        # a dropped diff event: gap -> counted resync of that symbol -> new snapshot
        venue.drop_next = True
        await wait_for(lambda: feed.stats.resyncs.get("sequence_gap") == 1, "the gap resync")
        await wait_for(lambda: book.synced, "the resync")
        assert len(venue.snapshot_requests) == 3
        await wait_for(lambda: book_matches_venue(feed, venue), "the book after the gap")

        # SIGHUP: add and remove a symbol on the live connection, no reconnect
        await feed.update_symbols(["BTC-USDT", "ETH-USDT"])
        await wait_for(lambda: any(r["method"] == "SUBSCRIBE" and r["params"][0].startswith(
            "eth") for r in venue.requests), "the ETH subscription")
        await feed.update_symbols(["BTC-USDT"])
        await wait_for(lambda: venue.requests[-1]["method"] == "UNSUBSCRIBE", "unsubscribe")
        assert venue.requests[-1]["params"] == ["ethusdt@depth@100ms", "ethusdt@aggTrade"]
        assert venue.connections == 1 and feed.stats.reconnects == 0

        # disconnect: gap event, reconnect with backoff, resubscribe, resync
        gaps_before = sum(isinstance(e, Gap) for e in events)
        await venue.sockets[-1].close()
        await wait_for(lambda: feed.stats.reconnects == 1, "the reconnect")
        disconnect_gaps = [e for e in events if isinstance(e, Gap) and e.reason == "disconnect"]
        assert len(disconnect_gaps) == 1 and disconnect_gaps[0].symbol == "BTC-USDT"
        await wait_for(lambda: venue.connections == 2 and book.synced, "the sync after it")
        await wait_for(lambda: book_matches_venue(feed, venue), "the book after reconnect")
        assert sum(isinstance(e, Gap) for e in events) == gaps_before + 1
        assert feed.stats.resyncs == {"sequence_gap": 1, "disconnect": 1}
        assert sum(isinstance(e, BookSnapshot) for e in events) == 3
        assert feed.stats.malformed == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


def test_connects_subscribes_syncs_and_recovers_from_gap_and_disconnect() -> None:
    asyncio.run(asyncio.wait_for(_scenario(), 60))


async def _snapshot_failures() -> None:
    """Every REST attempt of a round fails: one 'snapshot_failed', then the next round syncs."""
    events: list = []
    cfg = FeedConfig("binance_spot", "binance", "spot", ("BTC-USDT",), backoff_initial=0.001,
                     backoff_max=0.002)
    feed = BinanceSpotFeed(cfg, events.append)
    feed.snapshot_attempts = 2
    calls: list[str] = []

    async def rest_get(path: str, params: dict | None = None) -> object:
        calls.append(path)
        if len(calls) <= 2:
            raise RestError("HTTP 503")
        return {"lastUpdateId": 10, "bids": [["1", "1"]], "asks": [["2", "1"]]}

    feed.rest_get = rest_get  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as session:
        feed.session = session
        feed.ws = _OpenSocket()  # type: ignore[assignment]
        feed.recover("BTC-USDT", "test")
        await wait_for(lambda: feed.books["BTC-USDT"].synced, "the sync")
    assert calls == ["/api/v3/depth"] * 3
    assert feed.stats.resyncs == {"snapshot_failed": 1}
    assert feed.stats.rest_errors == 2
    assert [type(e) for e in events] == [BookSnapshot]  # never synced before: no Gap


class _OpenSocket:
    closed = False


def test_snapshot_failures_retry_count_and_give_up_into_a_new_round() -> None:
    asyncio.run(asyncio.wait_for(_snapshot_failures(), 30))
