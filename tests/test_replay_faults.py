"""Every fault kind, as a plain client sees it, counted in /_control/stats; control API + CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from supervisor import jsonlib
from supervisor.replay import ReplayExchange, ReplayProcess, ReplayThread
from tests.test_replay_binance import binance_sync, depth_of, subscribe
from tests.test_replay_okx import OkxBook, books_arg
from tests.test_replay_support import Client, RefBook, get_json, okx_checksum, run, wait_for

USDM = "binance_derivatives"


def applied(rx: ReplayExchange, venue: str) -> dict[str, int]:
    return rx.stats()["venues"][venue]["faults_applied"]


async def depth_events(c: Client, n: int, stream: str = "btcusdt@depth@100ms"
                       ) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        msg = await c.recv()
        if msg.get("stream") == stream:
            out.append(msg["data"])
    return out


def pu_breaks(events: list[dict[str, Any]]) -> int:
    return sum(1 for a, b in zip(events, events[1:], strict=False) if b["pu"] != a["u"])


def test_disconnect_aborts_the_socket_without_a_close_frame():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=500) as rx, \
                await Client.connect(rx.ws_url(USDM)) as c:
            await subscribe(c, ["btcusdt@depth@100ms"])
            await depth_events(c, 3)
            rx.inject(USDM, "disconnect")
            msg = await c.receive()
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await c.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)  # no CLOSE
            assert applied(rx, USDM) == {"disconnect": 1}
            await wait_for(lambda: rx.stats()["venues"][USDM]["connections_open"] == 0)
    run(body)


def test_drop_skips_the_next_book_updates_leaving_one_gap():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url(USDM)) as c:
            await subscribe(c, ["btcusdt@depth@100ms", "btcusdt@aggTrade"])
            before = await depth_events(c, 5)
            rx.inject(USDM, "drop", count=2)  # the next two updates: one gap of two events
            after = await depth_events(c, 40)
            events = before + after
            assert pu_breaks(events) == 1
            i = next(i for i in range(1, len(events)) if events[i]["pu"] != events[i - 1]["u"])
            assert events[i]["U"] - events[i - 1]["u"] >= 3  # >= 1 change in each lost event
            assert applied(rx, USDM) == {"drop": 2}
            assert not rx.faults.faults  # used up
            trades = rx.stats()["venues"][USDM]["messages_sent"]
            assert trades > 45  # aggTrades and the ack were not dropped
    run(body)


def test_a_symbol_fault_hits_only_that_symbol():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=2000) as rx, \
                await Client.connect(rx.ws_url(USDM)) as c:
            streams = ["btcusdt@depth@100ms", "ethusdt@depth@100ms"]
            await subscribe(c, streams)
            frames: list[dict[str, Any]] = []
            await c.recv_until(lambda m: m.get("stream") == streams[1], keep=frames)
            rx.inject(USDM, "drop", symbol="ETH-USDT-PERP")
            await c.recv_until(lambda m: sum(1 for f in frames if f.get("stream") == streams[0])
                               >= 30 and sum(1 for f in frames if f.get("stream") == streams[1])
                               >= 30, keep=frames)
            btc = [f["data"] for f in frames if f.get("stream") == streams[0]]
            eth = [f["data"] for f in frames if f.get("stream") == streams[1]]
            assert pu_breaks(btc) == 0 and pu_breaks(eth) == 1
    run(body)


def test_malformed_json_frame_is_inserted_and_nothing_is_lost():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("binance_spot")) as c:
            await subscribe(c, ["btcusdt@depth@100ms"])
            await c.recv()
            rx.inject("binance_spot", "malformed")
            texts = [(await c.receive()).data for _ in range(30)]
            bad = []
            events = []
            for text in texts:
                try:
                    events.append(jsonlib.loads(text)["data"])
                except jsonlib.JSONDecodeError:
                    bad.append(text)
            assert len(bad) == 1 and bad[0].startswith('{"stream":"btcusdt@depth@100ms"')
            assert all(b["U"] == a["u"] + 1 for a, b in zip(events, events[1:], strict=False))
            assert applied(rx, "binance_spot") == {"malformed": 1}
    run(body)


def test_malformed_fields_frame_is_json_without_the_required_fields():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("okx")) as c:
            await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT")]})
            ref = OkxBook()
            ref.push(await c.recv_until(lambda m: m.get("action") == "snapshot"))
            rx.inject("okx", "malformed", mode="fields")
            empty = 0
            while ref.updates < 30:
                msg = await c.recv_until(lambda m: m.get("action") == "update")
                if msg["data"] == [{}]:
                    empty += 1
                else:
                    ref.push(msg)  # the chain is intact around it
            assert empty == 1 and applied(rx, "okx") == {"malformed": 1}
    run(body)


def test_bad_checksum_sends_one_wrong_non_zero_crc():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("okx")) as c:
            await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT-SWAP")]})
            snap = await c.recv_until(lambda m: m.get("action") == "snapshot")
            book = RefBook()
            book.load(snap["data"][0]["bids"], snap["data"][0]["asks"])
            rx.inject("okx", "bad_checksum")
            wrong = 0
            for _ in range(30):
                data = (await c.recv_until(lambda m: m.get("action") == "update"))["data"][0]
                book.apply(data["bids"], data["asks"])
                if data["checksum"] != 0:
                    assert data["checksum"] != okx_checksum(book)
                    wrong += 1
            assert wrong == 1 and applied(rx, "okx") == {"bad_checksum": 1}
    run(body)


def test_reset_sends_a_seq_id_below_prev_seq_id_and_then_chains_from_it():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, \
                await Client.connect(rx.ws_url("okx")) as c:
            await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT")]})
            snap = await c.recv_until(lambda m: m.get("action") == "snapshot")
            last = snap["data"][0]["seqId"]
            rx.inject("okx", "reset", symbol="BTC-USDT")
            resets = 0
            for _ in range(30):
                data = (await c.recv_until(lambda m: m.get("action") == "update"))["data"][0]
                assert data["prevSeqId"] == last
                if data["seqId"] < data["prevSeqId"]:
                    resets += 1
                last = data["seqId"]
            assert resets == 1 and applied(rx, "okx") == {"reset": 1}
    run(body)


def test_stall_holds_the_stream_then_resumes_without_loss():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=500) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            channel = "book.BTC-PERPETUAL.100ms"
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                          "params": {"channels": [channel]}})
            await c.recv_until(lambda m: m.get("id") == 1)
            stamps: list[tuple[float, dict[str, Any]]] = []
            for _ in range(5):
                stamps.append((time.monotonic(), (await c.recv())["params"]["data"]))
            rx.inject("deribit", "stall", seconds=0.5)
            for _ in range(40):
                stamps.append((time.monotonic(), (await c.recv())["params"]["data"]))
            gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)]
            assert max(gaps) >= 0.45
            data = [d for _, d in stamps]
            assert all(b["prev_change_id"] == a["change_id"]
                       for a, b in zip(data, data[1:], strict=False))
            assert applied(rx, "deribit") == {"stall": 1}
    run(body)


def test_slow_snapshot_answers_late_and_is_still_straddled():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=500) as rx, \
                await Client.connect(rx.ws_url(USDM)) as c:
            await subscribe(c, ["btcusdt@depth@100ms"])
            rx.inject(USDM, "slow_snapshot", seconds=0.4)
            frames: list[dict[str, Any]] = []
            reading = asyncio.ensure_future(c.recv_until(lambda m: False, keep=frames))
            start = time.monotonic()
            status, snap, _ = await get_json(rx.rest_url(USDM) + "/fapi/v1/depth",
                                             {"symbol": "BTCUSDT"})
            assert time.monotonic() - start >= 0.4 and status == 200
            await wait_for(lambda: any(f.get("stream") and f["data"]["u"] > snap["lastUpdateId"]
                                       for f in frames))
            reading.cancel()
            binance_sync(snap, depth_of(frames), usdm=True)
            assert applied(rx, USDM) == {"slow_snapshot": 1}
    run(body)


def test_fail_snapshot_answers_500_once():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            url = rx.rest_url("binance_spot") + "/api/v3/depth"
            rx.inject("binance_spot", "fail_snapshot")
            status, answer, _ = await get_json(url, {"symbol": "BTCUSDT"})
            assert status == 500 and answer["code"] == -1001
            status, answer, _ = await get_json(url, {"symbol": "BTCUSDT"})
            assert status == 200 and "lastUpdateId" in answer
            assert applied(rx, "binance_spot") == {"fail_snapshot": 1}
    run(body)


@pytest.mark.parametrize("venue,path,params", [
    ("binance_derivatives", "/futures/data/globalLongShortAccountRatio",
     {"symbol": "BTCUSDT", "period": "5m"}),
    ("okx", "/api/v5/public/open-interest", {"instType": "SWAP", "instId": "BTC-USDT-SWAP"}),
    ("deribit", "/api/v2/public/get_order_book", {"instrument_name": "BTC-PERPETUAL"}),
])
def test_rate_limit_answers_429_with_retry_after(venue, path, params):
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            rx.inject(venue, "rate_limit", seconds=3)
            status, _, headers = await get_json(rx.rest_url(venue) + path, params)
            assert status == 429 and headers["Retry-After"] == "3"
            status, _, _ = await get_json(rx.rest_url(venue) + path, params)
            assert status == 200
            assert applied(rx, venue) == {"rate_limit": 1}
    run(body)


def test_huge_book_inflates_the_next_rest_and_ws_snapshot():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            rx.inject("binance_spot", "huge_book", levels=20_000)
            _, snap, _ = await get_json(rx.rest_url("binance_spot") + "/api/v3/depth",
                                        {"symbol": "BTCUSDT", "limit": "1000"})
            assert len(snap["bids"]) > 20_000 and len(snap["asks"]) > 20_000
            assert float(snap["bids"][0][0]) < float(snap["asks"][0][0])
            rx.inject("okx", "huge_book", levels=30_000)
            async with await Client.connect(rx.ws_url("okx")) as c:
                await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT")]})
                data = (await c.recv_until(lambda m: m.get("action") == "snapshot"))["data"][0]
                assert len(data["bids"]) > 30_000 and len(data["asks"]) > 30_000
            assert applied(rx, "binance_spot") == {"huge_book": 1}
            assert applied(rx, "okx") == {"huge_book": 1}
    run(body)


def test_control_endpoint_arms_lists_and_clears_faults():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=1000) as rx, aiohttp.ClientSession() as s:
            async with s.post(rx.url("/_control/fault"), json={
                    "venue": "okx", "kind": "drop", "symbol": "BTC-USDT", "count": 3}) as r:
                assert r.status == 200
                fault = (await r.json())["fault"]
            assert (fault["venue"], fault["kind"], fault["remaining"]) == ("okx", "drop", 3)
            async with s.post(rx.url("/_control/fault"), json={"venue": "okx",
                                                               "kind": "melt"}) as r:
                assert r.status == 400 and "melt" in (await r.json())["error"]
            async with s.get(rx.url("/_control/faults")) as r:
                assert [f["id"] for f in (await r.json())["faults"]] == [fault["id"]]
            async with await Client.connect(rx.ws_url("okx")) as c:
                await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT")]})
                ref = OkxBook()
                ref.push(await c.recv_until(lambda m: m.get("action") == "snapshot"))
                with pytest.raises(AssertionError):  # the first dropped update breaks the chain
                    for _ in range(10):
                        ref.push(await c.recv_until(lambda m: m.get("action") == "update"))
            async with s.get(rx.url("/_control/stats")) as r:
                stats = await r.json()
            assert stats["venues"]["okx"]["faults_applied"]["drop"] == 3  # next 3 updates
            assert stats["venues"]["okx"]["connections"] == 1
            async with s.post(rx.url("/_control/fault"), json={
                    "venue": "deribit", "kind": "stall", "seconds": 9}) as r:
                assert r.status == 200  # no deribit client: it stays armed
            async with s.delete(rx.url("/_control/fault")) as r:
                assert (await r.json()) == {"cleared": 1}
            assert not rx.faults.armed
    run(body)


def test_replay_thread_serves_synchronous_callers_and_forwards_faults():
    with ReplayThread(rate=100, seed=2) as rx:
        ws, rest = rx.endpoints("binance_derivatives")
        assert ws == f"ws://127.0.0.1:{rx.port}/binance/derivatives/stream"
        assert rest == f"http://127.0.0.1:{rx.port}/binance/derivatives"
        fault = rx.inject("binance", "stall", seconds=2)
        assert fault["venue"] == "binance" and fault["params"] == {"seconds": 2.0}
        assert rx.stats()["faults_armed"][0]["kind"] == "stall"
        assert rx.clear_faults() == 1


def test_cli_fault_command_arms_a_running_server_and_serve_exits_zero_on_sigterm():
    with ReplayProcess(["--rate", "1000", "--seed", "3"]) as rx:
        cli = [sys.executable, "-m", "supervisor.replay.main"]
        done = subprocess.run(cli + ["fault", "okx", "drop", "--symbol", "BTC-USDT", "--count",
                                     "2", "--url", rx.url], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert jsonlib.loads(done.stdout)["fault"]["remaining"] == 2
        bad = subprocess.run(cli + ["fault", "kraken", "drop", "--url", rx.url],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "kraken" in bad.stderr

        async def watch() -> int:
            async with await Client.connect(rx.ws_url("okx")) as c:
                await c.send({"op": "subscribe", "args": [books_arg("BTC-USDT")]})
                snap = await c.recv_until(lambda m: m.get("action") == "snapshot")
                last, gaps = snap["data"][0]["seqId"], 0
                for _ in range(40):
                    data = (await c.recv_until(lambda m: m.get("action") == "update"))["data"][0]
                    gaps += data["prevSeqId"] != last
                    last = data["seqId"]
                return gaps
        assert run(watch) == 1  # two consecutive updates dropped: one gap
        stats = subprocess.run(cli + ["stats", "--url", rx.url], capture_output=True,
                               text=True, timeout=30)
        venues = jsonlib.loads(stats.stdout)["venues"]
        assert venues["okx"]["faults_applied"] == {"drop": 2}
        assert venues["okx"]["subscriptions"] == 1
        assert rx.stop() == 0
    log = "\n".join(rx.lines)
    assert "listening on" in log and "okx conn#1 open" in log
    assert "okx conn#1 subscribe books:BTC-USDT" in log
