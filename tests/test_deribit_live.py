"""The Deribit adapter over a real socket: a tiny JSON-RPC server inside the test.

The server answers ``public/set_heartbeat``, ``public/subscribe`` (result, then a snapshot for
each book channel), ``public/unsubscribe`` and ``public/test``, and records every request.
The test script pushes changes, drops one, and checks that the adapter resubscribes that one
book channel, resyncs, and answers a heartbeat ``test_request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSMsgType, web

from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.exchanges.base import BOOKS, TRADES, VOLATILITY_INDEX, Backoff
from supervisor.exchanges.deribit import DeribitFeed
from tests.test_deribit import make_feed

TIMEOUT = 5.0


class FakeDeribit:
    """Just enough of Deribit's JSON-RPC for book channels of a few instruments."""

    def __init__(self, books: dict[str, tuple[float, float]]) -> None:
        self.books = books  # instrument -> (best bid, best ask) of its snapshots
        self.change_id = {inst: 1000 for inst in books}
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.fail_next_subscribe = 0  # answer that many subscribes with an RPC error
        self.ws: web.WebSocketResponse | None = None

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            req = json.loads(msg.data)
            await self.requests.put(req)
            method, rid, params = req["method"], req["id"], req.get("params", {})
            if method == "public/subscribe" and self.fail_next_subscribe:
                self.fail_next_subscribe -= 1
                await self.send({"id": rid, "error": {"code": 10028,
                                                      "message": "too_many_requests"}})
            elif method in ("public/subscribe", "public/unsubscribe"):
                await self.send({"id": rid, "result": params["channels"]})
                if method == "public/subscribe":
                    for channel in params["channels"]:
                        if channel.startswith("book."):
                            await self.snapshot(channel.split(".")[1])
            elif method == "public/set_heartbeat":
                await self.send({"id": rid, "result": "ok"})
            elif method == "public/test":
                await self.send({"id": rid, "result": {"version": "1.2.26"}})
        return ws

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"jsonrpc": "2.0", **obj}))

    async def notify(self, channel: str, data: Any) -> None:
        await self.send({"method": "subscription", "params": {"channel": channel, "data": data}})

    async def snapshot(self, inst: str) -> None:
        self.change_id[inst] += 7
        bid, ask = self.books[inst]
        await self.notify(f"book.{inst}.100ms", {
            "type": "snapshot", "timestamp": 1626993724318, "instrument_name": inst,
            "change_id": self.change_id[inst], "bids": [["new", bid, 1.0]],
            "asks": [["new", ask, 2.0]]})

    async def change(self, inst: str, bid: float, deliver: bool = True) -> None:
        prev = self.change_id[inst]
        self.change_id[inst] += 3
        if deliver:
            await self.notify(f"book.{inst}.100ms", {
                "type": "change", "timestamp": 1626993724400, "instrument_name": inst,
                "prev_change_id": prev, "change_id": self.change_id[inst],
                "bids": [["new", bid, 5.0]], "asks": []})

    async def next_request(self, method: str) -> dict[str, Any]:
        """The next request of ``method`` (others, e.g. public/test, are passed over)."""
        while True:
            req = await asyncio.wait_for(self.requests.get(), TIMEOUT)
            if req["method"] == method:
                return req


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` with a deadline (polls the event loop, never a blind sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(venue: FakeDeribit, feed_factory: Callable[[str], DeribitFeed]
                  ) -> AsyncIterator[DeribitFeed]:
    app = web.Application()
    app.router.add_get("/ws/api/v2", venue.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    feed = feed_factory(f"ws://127.0.0.1:{port}/ws/api/v2")
    feed.subscribe_rate = 1000.0  # the fake venue has no rate limit: keep the test fast
    task = asyncio.ensure_future(feed.run())
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()


def test_live_connection_resubscribes_one_book_after_a_dropped_change() -> None:
    async def scenario() -> None:
        venue = FakeDeribit({"BTC-PERPETUAL": (100.0, 101.0)})
        made: list[Any] = []

        def factory(url: str) -> DeribitFeed:
            feed, events = make_feed(("BTC-USD-PERP",), frozenset({BOOKS, TRADES}), ws_url=url)
            made.append(events)
            return feed

        async with running(venue, factory) as feed:
            events = made[0]
            hb = await venue.next_request("public/set_heartbeat")
            assert hb["params"] == {"interval": 10}
            sub = await venue.next_request("public/subscribe")
            assert sub["params"]["channels"] == ["book.BTC-PERPETUAL.100ms",
                                                 "trades.BTC-PERPETUAL.100ms"]
            book = feed.books["BTC-USD-PERP"]
            await until(lambda: book.synced, "the first snapshot")
            first_seq = book.seq

            await venue.change("BTC-PERPETUAL", 99.5)
            await venue.change("BTC-PERPETUAL", 99.0)
            await until(lambda: book.seq == first_seq + 6, "two changes applied")
            assert book.top(5)[0] == [["100.0", "1.0"], ["99.5", "5.0"], ["99.0", "5.0"]]

            await venue.change("BTC-PERPETUAL", 98.5, deliver=False)  # dropped
            await venue.change("BTC-PERPETUAL", 98.0)
            unsub = await venue.next_request("public/unsubscribe")
            resub = await venue.next_request("public/subscribe")
            assert unsub["params"]["channels"] == ["book.BTC-PERPETUAL.100ms"]
            assert resub["params"]["channels"] == ["book.BTC-PERPETUAL.100ms"]
            await until(lambda: book.synced, "the snapshot after resubscribing")
            assert book.seq == venue.change_id["BTC-PERPETUAL"]
            assert book.top(5) == ([["100.0", "1.0"]], [["101.0", "2.0"]])
            assert feed.stats.resyncs == {"sequence_gap": 1}
            kinds = [type(e) for e in events]
            assert kinds == [BookSnapshot, BookDelta, BookDelta, Gap, BookSnapshot]

            await venue.send({"method": "heartbeat", "params": {"type": "test_request"}})
            test = await venue.next_request("public/test")
            assert test["params"] == {}
            assert feed.stats.malformed == 0 and feed.stats.subscribe_errors == 0

    asyncio.run(scenario())


def test_live_gap_leaves_other_books_alone_and_retries_a_rejected_resubscribe() -> None:
    async def scenario() -> None:
        venue = FakeDeribit({"BTC-PERPETUAL": (100.0, 101.0), "ETH-PERPETUAL": (10.0, 11.0)})

        def factory(url: str) -> DeribitFeed:
            return make_feed(("BTC-USD-PERP", "ETH-USD-PERP"), frozenset({BOOKS}), ws_url=url,
                             backoff_initial=0.02)[0]

        async with running(venue, factory) as feed:
            btc, eth = feed.books["BTC-USD-PERP"], feed.books["ETH-USD-PERP"]
            await until(lambda: btc.synced and eth.synced, "both snapshots")
            eth_seq = eth.seq
            venue.fail_next_subscribe = 1
            await venue.change("BTC-PERPETUAL", 99.5, deliver=False)
            await venue.change("BTC-PERPETUAL", 99.0)
            await venue.next_request("public/subscribe")  # refused
            await venue.next_request("public/unsubscribe")  # the retry, after a backoff
            retry = await venue.next_request("public/subscribe")
            assert retry["params"]["channels"] == ["book.BTC-PERPETUAL.100ms"]
            await until(lambda: btc.synced, "BTC resynced")
            assert feed.stats.resyncs == {"sequence_gap": 1, "snapshot_failed": 1}
            assert feed.stats.subscribe_errors == 1
            assert eth.synced and eth.seq == eth_seq  # never touched
            await venue.change("ETH-PERPETUAL", 9.5)
            await until(lambda: eth.seq == eth_seq + 3, "ETH change applied")

    asyncio.run(scenario())


class _Ceiling:
    """A Backoff rng that always picks the longest delay (no luck in the test)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_recovery_due_now_is_not_held_behind_another_books_backoff() -> None:
    async def scenario() -> None:
        feed, _ = make_feed(("BTC-USD-PERP", "ETH-USD-PERP"), frozenset({BOOKS}))
        sent: list[tuple[str, list[str]]] = []

        async def record(method: str, channels: Any) -> None:
            sent.append((method, list(channels)))

        feed._channels_request = record  # type: ignore[method-assign]
        feed.recover("BTC-USD-PERP", "sequence_gap")  # first attempt: at once
        await until(lambda: len(sent) == 2, "the first resubscribe")
        feed._retry["BTC-USD-PERP"] = Backoff(30.0, 30.0, _Ceiling())  # type: ignore[arg-type]
        feed.recover("BTC-USD-PERP", "crossed_book")  # second attempt: in 30 s
        feed.recover("ETH-USD-PERP", "sequence_gap")
        await until(lambda: len(sent) == 4, "the ETH resubscribe")
        assert sent == [("public/unsubscribe", ["book.BTC-PERPETUAL.100ms"]),
                        ("public/subscribe", ["book.BTC-PERPETUAL.100ms"]),
                        ("public/unsubscribe", ["book.ETH-PERPETUAL.100ms"]),
                        ("public/subscribe", ["book.ETH-PERPETUAL.100ms"])]
        assert "BTC-USD-PERP" in feed._due
        await feed._cancel_tasks()

    asyncio.run(scenario())


def test_live_reconnect_announces_the_gap_and_resubscribes_everything() -> None:
    async def scenario() -> None:
        venue = FakeDeribit({"BTC-PERPETUAL": (100.0, 101.0)})

        def factory(url: str) -> DeribitFeed:
            return make_feed(("BTC-USD-PERP",), frozenset({BOOKS}), ws_url=url,
                             backoff_initial=0.01)[0]

        async with running(venue, factory) as feed:
            book = feed.books["BTC-USD-PERP"]
            await until(lambda: book.synced, "the first snapshot")
            assert venue.ws is not None
            await venue.ws.close()
            await venue.next_request("public/set_heartbeat")
            sub = await venue.next_request("public/subscribe")
            assert sub["params"]["channels"] == ["book.BTC-PERPETUAL.100ms"]
            await until(lambda: book.synced, "the snapshot after reconnecting")
            assert feed.stats.resyncs == {"disconnect": 1} and feed.stats.reconnects == 1

    asyncio.run(scenario())


def test_symbol_update_subscribes_added_and_unsubscribes_removed_channels_only() -> None:
    async def scenario() -> None:
        feed, _ = make_feed(("BTC-USD-PERP", "ETH-USD-PERP"),
                            frozenset({BOOKS, VOLATILITY_INDEX}))
        sent: list[tuple[str, list[str]]] = []

        async def record(method: str, channels: Any) -> None:
            sent.append((method, list(channels)))

        feed._channels_request = record  # type: ignore[method-assign]
        feed.ws = types.SimpleNamespace(closed=False)  # type: ignore[assignment]
        await feed.update_symbols(["BTC-USD-PERP", "BTC-24SEP21-8000-P"])
        assert sent == [
            ("public/unsubscribe", ["book.ETH-PERPETUAL.100ms",
                                    "deribit_volatility_index.eth_usd"]),
            ("public/subscribe", ["book.BTC-24SEP21-8000-P.100ms"]),
        ]
        assert set(feed.books) == {"BTC-USD-PERP", "BTC-24SEP21-8000-P"}

    asyncio.run(scenario())
