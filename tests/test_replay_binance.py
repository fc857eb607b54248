"""Binance spot and USD-M as the replay exchange serves them, checked with plain clients."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from supervisor.replay import ReplayExchange
from tests.test_replay_support import (
    Client,
    RefBook,
    get_json,
    run,
    same_book,
    server_book,
)


def binance_sync(snapshot: dict[str, Any], events: list[dict[str, Any]], usdm: bool
                 ) -> tuple[RefBook, int]:
    """Binance's documented local-book procedure, written from the docs; asserts on a gap.

    Spot: drop events with ``u <= lastUpdateId``; the first applied has
    ``U <= lastUpdateId + 1 <= u``; then each ``U`` is the previous ``u`` + 1.
    USD-M: drop ``u < lastUpdateId``; the first has ``U <= lastUpdateId <= u``; then each
    ``pu`` is the previous ``u``.
    """
    last = snapshot["lastUpdateId"]
    book = RefBook()
    book.load(snapshot["bids"], snapshot["asks"])
    prev = None
    for d in events:
        if prev is None:
            if d["u"] < last or (not usdm and d["u"] == last):
                continue
            if usdm:
                assert d["U"] <= last <= d["u"], (last, d["U"], d["u"])
            else:
                assert d["U"] <= last + 1 <= d["u"], (last, d["U"], d["u"])
        elif usdm:
            assert d["pu"] == prev, (prev, d["pu"])
        else:
            assert d["U"] == prev + 1, (prev, d["U"])
        book.apply(d["b"], d["a"])
        assert not book.crossed()
        prev = d["u"]
    assert prev is not None, "no event straddled the snapshot"
    return book, prev


async def subscribe(c: Client, streams: list[str], req_id: int = 1) -> None:
    await c.send({"method": "SUBSCRIBE", "params": streams, "id": req_id})
    assert await c.recv_until(lambda m: m.get("id") == req_id) == {"result": None, "id": req_id}


def depth_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["data"] for f in frames if "stream" in f and "@depth" in f["stream"]]


async def sync_and_checkpoint(venue: str, symbol: str, path: str) -> None:
    """Subscribe, snapshot mid-stream, sync by the rule, then compare with the server."""
    usdm = venue == "binance_derivatives"
    async with ReplayExchange(port=0, rate=500, seed=11, ping_interval=0) as rx, \
            await Client.connect(rx.ws_url(venue)) as c:
        stream = f"{symbol.lower()}@depth@100ms"
        await subscribe(c, [stream, f"{symbol.lower()}@aggTrade"])
        frames: list[dict[str, Any]] = []
        await c.recv_until(lambda m: len(depth_of(frames)) >= 10, keep=frames)
        status, snap, _ = await get_json(rx.rest_url(venue) + path,
                                         {"symbol": symbol, "limit": "1000"})
        assert status == 200
        await c.recv_until(lambda m: m.get("stream") == stream
                           and m["data"]["u"] > snap["lastUpdateId"], keep=frames)
        await c.recv_until(lambda m: len(depth_of(frames)) >= 60, keep=frames)
        await c.send({"method": "UNSUBSCRIBE", "params": [stream], "id": 2})
        await c.recv_until(lambda m: m.get("id") == 2, keep=frames)
        book, _ = binance_sync(snap, depth_of(frames), usdm)
        assert same_book(book, server_book(rx, venue, symbol))
        assert len(book.bids) >= 100 and len(book.asks) >= 100


def test_spot_rest_snapshot_is_straddled_and_the_diff_stream_rebuilds_the_server_book():
    run(lambda: sync_and_checkpoint("binance_spot", "BTCUSDT", "/api/v3/depth"))


def test_usdm_rest_snapshot_is_straddled_and_pu_chains_rebuild_the_server_book():
    run(lambda: sync_and_checkpoint("binance_derivatives", "ETHUSDT", "/fapi/v1/depth"))


def test_subscribe_is_acked_with_null_result_and_listed():
    async def body() -> None:
        async with ReplayExchange(port=0, seed=1) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            await subscribe(c, ["btcusdt@depth@100ms", "ethusdt@trade"], 7)
            await c.send({"method": "LIST_SUBSCRIPTIONS", "id": 8})
            answer = await c.recv_until(lambda m: m.get("id") == 8)
            assert answer == {"result": ["btcusdt@depth@100ms", "ethusdt@trade"], "id": 8}
            await c.send({"method": "GET_PROPERTY", "params": ["combined"], "id": 9})
            assert await c.recv_until(lambda m: m.get("id") == 9) == {"result": True, "id": 9}
            stats = rx.stats()["venues"]["binance_spot"]
            assert stats["subscriptions_active"] == 2 and stats["connections_open"] == 1
    run(body)


@pytest.mark.parametrize("request_text,code,req_id,msg_start", [
    ("not json", 3, None, "Invalid JSON"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": -1}', 2, None,
     "Invalid request: request ID must be an unsigned integer"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": "x"}', 2, None,
     "Invalid request: request ID must be an unsigned integer"),
    ('{"params": [], "id": 4}', 2, 4, "Invalid request: missing field `method`"),
    ('{"method": "SUBSCRIBEX", "params": [], "id": 5}', 2, 5, "Invalid request: unknown variant"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@nope"], "id": 6}', 2, 6, "Invalid request"),
    ('{"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 7}', 2, 7, "Invalid request"),
    ('{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 8}', 1, 8,
     "Invalid value type: expected Boolean"),
    ('{"method": "GET_PROPERTY", "params": ["colour"], "id": 9}', 0, 9, "Unknown property"),
])
def test_bad_requests_get_binance_error_answers(request_text, code, req_id, msg_start):
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            await c.send(request_text)
            answer = await c.recv()
            assert answer["id"] == req_id and answer["error"]["code"] == code
            assert answer["error"]["msg"].startswith(msg_start)
            assert rx.stats()["venues"]["binance_spot"]["subscriptions"] == 0
    run(body)


def test_unsubscribed_stream_sends_nothing_after_the_ack():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=2000) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await subscribe(c, ["btcusdt@depth@100ms", "btcusdt@aggTrade"])
            await c.recv_until(lambda m: m.get("stream") == "btcusdt@depth@100ms")
            await c.send({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 2})
            await c.recv_until(lambda m: m.get("id") == 2)
            after = [await c.recv() for _ in range(50)]
            assert {m["stream"] for m in after} == {"btcusdt@aggTrade"}
    run(body)


def test_combined_stream_url_subscribes_at_connect():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx:
            url = rx.ws_url("binance_spot") + "?streams=btcusdt@depth@100ms/ethusdt@aggTrade"
            async with await Client.connect(url) as c:
                seen: set[str] = set()
                await c.recv_until(lambda m: seen.add(m["stream"]) or len(seen) == 2)
                assert seen == {"btcusdt@depth@100ms", "ethusdt@aggTrade"}
    run(body)


def test_spot_decimals_are_strings_padded_to_eight_places():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            await subscribe(c, ["ethusdt@depth@100ms", "ethusdt@trade"])
            trade = await c.recv_until(lambda m: m.get("stream") == "ethusdt@trade")
            depth = await c.recv_until(lambda m: m.get("stream") == "ethusdt@depth@100ms")
            d = trade["data"]
            assert d["e"] == "trade" and d["s"] == "ETHUSDT" and isinstance(d["t"], int)
            assert len(d["p"].split(".")[1]) == 8 and len(d["q"].split(".")[1]) == 8
            assert isinstance(d["m"], bool)
            for price, size in depth["data"]["b"] + depth["data"]["a"]:
                assert len(price.split(".")[1]) == 8 and len(size.split(".")[1]) == 8
            assert "pu" not in depth["data"]  # spot has no pu
    run(body)


def test_usdm_mark_price_and_force_order_pushes_carry_binance_fields():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await subscribe(c, ["btcusdt@markPrice@1s", "btcusdt@forceOrder", "btcusdt@aggTrade"])
            mark = (await c.recv_until(lambda m: m["stream"] == "btcusdt@markPrice@1s"))["data"]
            assert mark["e"] == "markPriceUpdate" and mark["s"] == "BTCUSDT"
            assert float(mark["r"]) != 0 and float(mark["p"]) > 0 and mark["T"] > mark["E"]
            force = (await c.recv_until(lambda m: m["stream"] == "btcusdt@forceOrder"))["data"]
            assert force["e"] == "forceOrder" and force["o"]["S"] in ("BUY", "SELL")
            assert float(force["o"]["q"]) > 0 and force["o"]["X"] == "FILLED"
            agg = (await c.recv_until(lambda m: m["stream"] == "btcusdt@aggTrade"))["data"]
            assert agg["e"] == "aggTrade" and agg["f"] <= agg["l"] and "M" not in agg
    run(body)


def test_markprice_is_not_a_spot_stream():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            await c.send({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": 3})
            assert (await c.recv())["error"]["code"] == 2
    run(body)


def test_server_pings_and_drops_a_client_that_never_pongs():
    async def body() -> None:
        async with ReplayExchange(port=0, ping_interval=0.05, pong_timeout=0.3) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            msg = await c.receive()
            assert msg.type is aiohttp.WSMsgType.PING
            while msg.type is aiohttp.WSMsgType.PING:  # never answered
                msg = await c.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert rx.stats()["venues"]["binance_spot"]["heartbeat_timeouts"] == 1
    run(body)


def test_a_client_that_pongs_keeps_its_connection():
    async def body() -> None:
        async with ReplayExchange(port=0, ping_interval=0.05, pong_timeout=0.3) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            for _ in range(12):  # 12 pings span twice the pong timeout
                msg = await c.receive()
                assert msg.type is aiohttp.WSMsgType.PING
                await c.ws.pong(msg.data)
            assert rx.stats()["venues"]["binance_spot"]["heartbeat_timeouts"] == 0
            assert rx.stats()["venues"]["binance_spot"]["connections_open"] == 1
    run(body)


def test_open_interest_premium_index_and_long_short_ratio_answer_like_binance():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            base = rx.rest_url("binance_derivatives")
            status, oi, _ = await get_json(base + "/fapi/v1/openInterest", {"symbol": "BTCUSDT"})
            assert status == 200 and oi["symbol"] == "BTCUSDT" and float(oi["openInterest"]) > 0
            assert isinstance(oi["time"], int)
            status, prem, _ = await get_json(base + "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})
            assert status == 200 and prem["nextFundingTime"] > prem["time"]
            status, rows, _ = await get_json(base + "/futures/data/globalLongShortAccountRatio",
                                             {"symbol": "BTCUSDT", "period": "5m", "limit": "3"})
            assert status == 200 and len(rows) == 3
            assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
            assert rows[1]["timestamp"] - rows[0]["timestamp"] == 300_000
            for r in rows:
                long_, short = float(r["longAccount"]), float(r["shortAccount"])
                assert abs(long_ + short - 1) < 1e-3
                assert abs(float(r["longShortRatio"]) - long_ / short) < 0.01
            assert rx.stats()["venues"]["binance_derivatives"]["rest_requests"] == 3
    run(body)


@pytest.mark.parametrize("path,params,code", [
    ("/fapi/v1/depth", {"symbol": "btc usdt"}, -1121),
    ("/fapi/v1/openInterest", {}, -1121),
    ("/futures/data/globalLongShortAccountRatio", {"symbol": "BTCUSDT", "period": "7m"}, -1102),
])
def test_rest_rejects_bad_parameters_with_binance_codes(path, params, code):
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            status, answer, _ = await get_json(rx.rest_url("binance_derivatives") + path, params)
            assert status == 400 and answer["code"] == code
    run(body)


def test_same_seed_gives_the_same_depth_stream_on_two_servers():
    async def first_events(seed: int) -> list[dict[str, Any]]:
        async with ReplayExchange(port=0, rate=2000, seed=seed) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await subscribe(c, ["solusdt@depth@100ms"])
            frames = [(await c.recv())["data"] for _ in range(40)]
            return [{k: v for k, v in d.items() if k not in ("E", "T")} for d in frames]

    async def body() -> None:
        a, b, other = await first_events(5), await first_events(5), await first_events(6)
        assert a == b and a != other
    run(body)
