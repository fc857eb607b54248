"""Deribit JSON-RPC market data as the replay exchange serves it, checked with plain clients."""

from __future__ import annotations

from typing import Any

import aiohttp

from supervisor.replay import ReplayExchange
from tests.test_replay_support import Client, RefBook, get_json, run, same_book, server_book

BOOK = "book.BTC-PERPETUAL.100ms"


def rpc(req_id: int, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}


def is_answer(req_id: int) -> Any:
    return lambda m: m.get("id") == req_id


def notification(channel: str) -> Any:
    return lambda m: m.get("method") == "subscription" and m["params"]["channel"] == channel


class DeribitBook:
    """Deribit's documented rule: a snapshot, then each change's ``prev_change_id`` equals
    the previous ``change_id``; levels are ``[new|change|delete, price, amount]``."""

    def __init__(self) -> None:
        self.book = RefBook()
        self.change_id: int | None = None
        self.changes = 0

    def push(self, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            assert "prev_change_id" not in data
            assert all(a == "new" for a, _, _ in data["bids"] + data["asks"])
            self.book.load([[p, q] for _, p, q in data["bids"]],
                           [[p, q] for _, p, q in data["asks"]])
        else:
            assert data["type"] == "change" and data["prev_change_id"] == self.change_id
            for side, levels in ((self.book.bids, data["bids"]), (self.book.asks, data["asks"])):
                for action, price, amount in levels:
                    assert isinstance(price, float) and isinstance(amount, float)
                    key = RefBook()
                    key.load([[price, amount]], [])
                    (p, _), = key.bids.items()
                    if action == "delete":
                        assert amount == 0.0
                        side.pop(p, None)
                    else:
                        assert (action == "change") == (p in side), (action, price)
                        side[p] = str(amount)
            self.changes += 1
        assert not self.book.crossed()
        self.change_id = data["change_id"]


def test_subscribe_returns_the_channels_then_snapshot_and_chained_changes_rebuild_the_book():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=600, seed=4) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            await c.send(rpc(1, "public/subscribe", channels=[BOOK, "trades.BTC-PERPETUAL.100ms"]))
            answer = await c.recv()
            assert answer["id"] == 1 and answer["result"] == [BOOK, "trades.BTC-PERPETUAL.100ms"]
            ref = DeribitBook()
            while ref.changes < 80:
                msg = await c.recv_until(notification(BOOK))
                ref.push(msg["params"]["data"])
            await c.send(rpc(2, "public/unsubscribe", channels=[BOOK]))
            tail: list[dict[str, Any]] = []
            done = await c.recv_until(is_answer(2), keep=tail)
            assert done["result"] == [BOOK]
            for msg in tail:
                if notification(BOOK)(msg):
                    ref.push(msg["params"]["data"])
            assert same_book(ref.book, server_book(rx, "deribit", "BTC-PERPETUAL"))
    run(body)


def test_bad_channels_and_methods_get_json_rpc_errors():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("deribit")) as c:
            await c.send(rpc(1, "public/subscribe", channels=[BOOK, "book.BTC-PERPETUAL.5s"]))
            err = await c.recv()
            assert err["id"] == 1 and err["error"]["code"] == -32602
            assert "book.BTC-PERPETUAL.5s" in err["error"]["data"]["reason"]
            await c.send(rpc(2, "public/subscribe", channels=["quote.BTC-PERPETUAL"]))
            assert (await c.recv())["error"]["code"] == -32602
            await c.send(rpc(3, "public/buy"))
            assert (await c.recv())["error"] == {"code": -32601, "message": "Method not found"}
            await c.send("{oops")
            assert (await c.recv())["error"]["code"] == -32700
            await c.send({"jsonrpc": "2.0", "method": "public/test"})  # no id
            assert (await c.recv())["error"]["code"] == -32600
            assert rx.stats()["venues"]["deribit"]["subscriptions"] == 0
    run(body)


def test_heartbeat_sends_test_requests_and_public_test_keeps_the_connection():
    async def body() -> None:
        async with ReplayExchange(port=0, heartbeat_interval=0.05) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            await c.send(rpc(1, "public/set_heartbeat", interval=10))
            assert (await c.recv())["result"] == "ok"
            for i in range(6):  # each unanswered request would close the connection
                beat = await c.recv_until(lambda m: m.get("method") == "heartbeat")
                assert beat["params"] == {"type": "test_request"}
                await c.send(rpc(10 + i, "public/test"))
                answer = await c.recv_until(is_answer(10 + i))
                assert answer["result"]["version"]
            assert rx.stats()["venues"]["deribit"]["heartbeat_timeouts"] == 0
    run(body)


def test_an_unanswered_test_request_closes_the_connection():
    async def body() -> None:
        async with ReplayExchange(port=0, heartbeat_interval=0.05) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            await c.send(rpc(1, "public/set_heartbeat", interval=10))
            await c.recv_until(lambda m: m.get("method") == "heartbeat")
            msg = await c.receive()
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await c.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert rx.stats()["venues"]["deribit"]["heartbeat_timeouts"] == 1
    run(body)


def test_heartbeat_interval_below_the_minimum_is_refused():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("deribit")) as c:
            await c.send(rpc(1, "public/set_heartbeat", interval=5))
            err = await c.recv()
            assert err["error"]["code"] == -32602 and err["error"]["data"]["param"] == "interval"
    run(body)


def test_trades_ticker_and_volatility_index_carry_deribit_fields():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=2000) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            channels = ["trades.ETH-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.100ms",
                        "deribit_volatility_index.eth_usd"]
            await c.send(rpc(1, "public/subscribe", channels=channels))
            await c.recv_until(is_answer(1))
            got: dict[str, Any] = {}
            await c.recv_until(lambda m: m.get("method") == "subscription" and got.setdefault(
                m["params"]["channel"], m["params"]["data"]) is not None and len(got) == 3)
            trade = got["trades.ETH-PERPETUAL.100ms"][0]
            assert trade["instrument_name"] == "ETH-PERPETUAL"
            assert trade["direction"] in ("buy", "sell") and isinstance(trade["price"], float)
            assert isinstance(trade["amount"], float) and isinstance(trade["trade_id"], str)
            ticker = got["ticker.ETH-PERPETUAL.100ms"]
            assert ticker["best_bid_price"] < ticker["best_ask_price"]
            assert ticker["open_interest"] > 0 and "funding_8h" in ticker
            vol = got["deribit_volatility_index.eth_usd"]
            assert vol["index_name"] == "eth_usd" and 20 <= vol["volatility"] <= 200
    run(body)


def test_option_books_have_coin_prices_and_at_least_100_levels():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("deribit")) as c:
            channel = "book.BTC-24SEP21-8000-P.100ms"
            await c.send(rpc(1, "public/subscribe", channels=[channel]))
            snap = (await c.recv_until(notification(channel)))["params"]["data"]
            assert snap["type"] == "snapshot" and len(snap["bids"]) >= 100
            assert 0 < snap["bids"][0][1] < snap["asks"][0][1] < 2  # priced in BTC
            status, book, _ = await get_json(rx.rest_url("deribit") +
                                             "/api/v2/public/get_order_book",
                                             {"instrument_name": "BTC-24SEP21-8000-P",
                                              "depth": "5"})
            assert status == 200 and len(book["result"]["bids"]) == 5
            assert book["result"]["change_id"] >= snap["change_id"]
    run(body)
