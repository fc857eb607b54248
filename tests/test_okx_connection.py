"""The real connection path: OkxFeed.run() against a tiny OKX-speaking aiohttp server.

The server (127.0.0.1, ephemeral port) acks subscribes with the request id, streams a
snapshot and checksummed updates per ``books`` subscription, answers ``ping`` with
``pong``, and corrupts one BTC checksum. The feed must unsubscribe + resubscribe BTC's book
alone, resync from the fresh snapshot and end equal to the venue's book; ETH is untouched.
"""

import asyncio
import time

from aiohttp import web

from supervisor.events import GAP_CHECKSUM, BookSnapshot, Gap
from supervisor.exchanges.base import BOOKS
from tests.test_okx_messages import OkxBookStream, book_levels, frame, make_feed

UPDATES = 25  # per books subscription
BAD_AT = 6  # the first BTC subscription's update with a wrong checksum


class OkxServer:
    """Speaks OKX's public WebSocket protocol for ``books``, one stream per instrument."""

    def __init__(self):
        self.streams = {"BTC-USDT": OkxBookStream("BTC-USDT", seed=11),
                        "ETH-USDT": OkxBookStream("ETH-USDT", seed=12)}
        self.ops = []  # (op, [instIds]) in arrival order
        self.pings = []  # monotonic times a "ping" arrived
        self.last_push = 0.0  # monotonic time of the last data frame sent
        self.subscriptions = {"BTC-USDT": 0, "ETH-USDT": 0}
        self.streaming = {}  # instId -> task
        self.runner = None
        self.port = 0

    async def start(self):
        app = web.Application()
        app.router.add_get("/okx/ws/v5/public", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self):
        for task in self.streaming.values():
            task.cancel()
        await self.runner.cleanup()

    def idle(self):
        return all(t.done() for t in self.streaming.values())

    async def handle(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.data == "ping":
                self.pings.append(time.monotonic())
                await ws.send_str("pong")
                continue
            req = msg.json()
            self.ops.append((req["op"], [a["instId"] for a in req["args"]]))
            for arg in req["args"]:
                await ws.send_str(frame({"id": req["id"], "event": req["op"], "arg": arg,
                                         "connId": "c0ffee01"}).decode())
                inst = arg["instId"]
                if req["op"] == "unsubscribe":
                    self.streaming.pop(inst).cancel()
                else:
                    self.subscriptions[inst] += 1
                    self.streaming[inst] = asyncio.ensure_future(
                        self.stream(ws, inst, self.subscriptions[inst]))
        return ws

    async def stream(self, ws, inst, nth):
        stream = self.streams[inst]
        await self.push(ws, stream.snapshot())
        for i in range(UPDATES):
            await asyncio.sleep(0.002)
            msg = stream.update()
            if inst == "BTC-USDT" and nth == 1 and i == BAD_AT:
                msg["data"][0]["checksum"] ^= 0x5A5A
            await self.push(ws, msg)

    async def push(self, ws, msg):
        await ws.send_str(frame(msg).decode())
        self.last_push = time.monotonic()


async def until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def test_bad_checksum_resubscribes_one_instrument_and_resyncs_over_a_real_socket():
    async def body():
        server = OkxServer()
        await server.start()
        base = f"127.0.0.1:{server.port}/okx"
        feed, events = make_feed(symbols=("BTC-USDT", "ETH-USDT"),
                                 channels=frozenset({BOOKS}), ws_url=f"ws://{base}/ws/v5/public",
                                 rest_url=f"http://{base}", backoff_initial=0.01,
                                 silence_timeout=5.0)
        feed.ping_interval = 0.3
        task = asyncio.ensure_future(feed.run())
        try:
            btc, eth = server.streams["BTC-USDT"], server.streams["ETH-USDT"]
            await until(lambda: server.subscriptions["BTC-USDT"] == 2 and server.idle()
                        and feed.books["BTC-USDT"].seq == btc.seq
                        and feed.books["ETH-USDT"].seq == eth.seq)
            # the checkpoint: both books equal the venue's, both in sync
            assert book_levels(feed, "BTC-USDT") == btc.levels()
            assert book_levels(feed, "ETH-USDT") == eth.levels()
            assert feed.books["BTC-USDT"].synced and feed.books["ETH-USDT"].synced
            # one counted resync, one Gap, recovery of BTC's book only
            assert feed.stats.resyncs == {GAP_CHECKSUM: 1}
            assert [(e.symbol, e.reason) for e in events if isinstance(e, Gap)] == [
                ("BTC-USDT", GAP_CHECKSUM)]
            assert server.ops == [("subscribe", ["BTC-USDT", "ETH-USDT"]),
                                  ("unsubscribe", ["BTC-USDT"]), ("subscribe", ["BTC-USDT"])]
            snaps = [e.symbol for e in events if isinstance(e, BookSnapshot)]
            assert sorted(snaps) == ["BTC-USDT", "BTC-USDT", "ETH-USDT"]
            assert ("books", "BTC-USDT") in feed.subscribed
            # keepalive: silence -> "ping" -> "pong" (not JSON, not malformed)
            await until(lambda: feed.pongs >= 1)
            assert server.pings[0] - server.last_push >= 0.25  # only after silence
            assert feed.pings_sent >= 1 and feed.stats.malformed == 0
            assert feed.stats.reconnects == 0 and feed.stats.connected
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()
    asyncio.run(body())
