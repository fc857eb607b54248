"""Recorded sessions (shared/fixtures/cryptofeed-sample) served in order, filtered, with REST."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from supervisor import jsonlib
from supervisor.replay import ReplayExchange
from supervisor.replay.playback import Recording
from supervisor.replay.recording import read_http, received_frames
from tests.test_replay_binance import binance_sync, subscribe
from tests.test_replay_support import Client, get_json, run

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cryptofeed-sample"
FUTURES = SAMPLES / "BINANCE_FUTURES"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared fixtures not available")


def recorded(path: Path, stream_filter: set[str]) -> list[dict[str, Any]]:
    """The recorded frames of the given streams, in recorded order."""
    frames = [jsonlib.loads(m) for m in received_frames(path)]
    return [f for f in frames if f.get("stream") in stream_filter]


def test_binance_futures_frames_are_served_in_recorded_order_for_subscribed_streams_only():
    streams = {"sushiusdt@depth@100ms", "ctkusdt@aggTrade"}
    expected = recorded(SAMPLES / "BINANCE_FUTURES.ws.1.0", streams)

    async def body() -> None:
        async with ReplayExchange(port=0, recordings={"binance_derivatives": str(FUTURES)}) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await subscribe(c, sorted(streams))
            got = [await c.recv() for _ in range(len(expected))]
            assert got == expected
            stats = rx.stats()["venues"]["binance_derivatives"]
            assert stats["messages_sent"] == len(expected) + 1  # and the ack
    run(body)


def test_recorded_rest_snapshot_is_served_by_path_and_symbol_and_syncs_the_book():
    bodies = {ln.params["symbol"]: jsonlib.loads(ln.body)
              for ln in read_http(SAMPLES / "BINANCE_FUTURES.http.0.0")}

    async def body() -> None:
        async with ReplayExchange(port=0, recordings={"binance_derivatives": str(FUTURES)}) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            status, snap, _ = await get_json(rx.rest_url("binance_derivatives") +
                                             "/fapi/v1/depth", {"symbol": "SUSHIUSDT"})
            assert status == 200 and snap == bodies["SUSHIUSDT"]
            await subscribe(c, ["sushiusdt@depth@100ms"])
            expected = recorded(SAMPLES / "BINANCE_FUTURES.ws.1.0", {"sushiusdt@depth@100ms"})
            events = [(await c.recv())["data"] for _ in range(len(expected))]
            book, last_u = binance_sync(snap, events, usdm=True)  # no gap anywhere
            assert last_u == expected[-1]["data"]["u"] and len(book.bids) > 100
    run(body)


def test_spot_recording_also_accepts_the_combined_stream_url():
    expected = recorded(SAMPLES / "BINANCE.ws.1.0", {"nknusdt@depth@100ms"})

    async def body() -> None:
        async with ReplayExchange(port=0, recordings={
                "binance_spot": str(SAMPLES / "BINANCE.ws.1.0")}) as rx, \
                await Client.connect(rx.ws_url("binance_spot") +
                                     "?streams=nknusdt@depth@100ms") as c:
            got = [await c.recv() for _ in range(len(expected))]
            assert got == expected
            status, snap, _ = await get_json(rx.rest_url("binance_spot") + "/api/v3/depth",
                                             {"symbol": "NKNUSDT", "limit": "1000"})
            assert status == 200 and snap["lastUpdateId"] == 499869752
            binance_sync(snap, [f["data"] for f in got], usdm=False)
    run(body)


def test_a_stream_missing_from_the_recording_is_refused():
    async def body() -> None:
        async with ReplayExchange(port=0, recordings={"binance_derivatives": str(FUTURES)}) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await c.send({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1})
            assert (await c.recv())["error"]["code"] == 2
    run(body)


def test_deribit_raw_channels_are_served_under_the_subscribed_interval():
    rec = Recording("deribit", str(SAMPLES / "DERIBIT.ws.1.0"))
    key = "book.ETH-30JUL21-2800-C"
    expected = [jsonlib.loads(f.payload) for f in rec.frames if f.key == key]
    assert expected and rec.channels[key] == key + ".raw"

    async def body() -> None:
        async with ReplayExchange(port=0, recordings={"deribit": str(SAMPLES / "DERIBIT")}) as rx, \
                await Client.connect(rx.ws_url("deribit")) as c:
            channel = key + ".100ms"
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                          "params": {"channels": [channel]}})
            assert (await c.recv())["result"] == [channel]
            got = [await c.recv() for _ in range(len(expected))]
            assert [g["params"]["channel"] for g in got] == [channel] * len(expected)
            assert [g["params"]["data"] for g in got] == [e["params"]["data"] for e in expected]
            assert got[0]["params"]["data"]["type"] == "snapshot"
            for a, b in zip(got, got[1:], strict=False):
                assert b["params"]["data"]["prev_change_id"] == a["params"]["data"]["change_id"]
    run(body)


def test_speed_factor_follows_the_recorded_pace():
    rec = Recording("binance_derivatives", str(FUTURES))
    frames = [f for f in rec.frames if f.key == "sushiusdt@depth@100ms"][:20]
    span = frames[-1].ts - frames[0].ts
    speed = span / 0.5  # the 20 frames should take about half a second

    async def body() -> None:
        async with ReplayExchange(port=0, speed=speed, playback_delay=0,
                                  recordings={"binance_derivatives": str(FUTURES)}) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            await subscribe(c, ["sushiusdt@depth@100ms"])
            start = time.monotonic()
            for _ in range(20):
                await c.recv()
            assert time.monotonic() - start >= 0.4  # not "as fast as possible"
    run(body)


def test_drop_fault_applies_to_recorded_book_updates():
    async def body() -> None:
        async with ReplayExchange(port=0, recordings={"binance_derivatives": str(FUTURES)}) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            rx.inject("binance_derivatives", "drop", symbol="SUSHIUSDT")
            expected = recorded(SAMPLES / "BINANCE_FUTURES.ws.1.0", {"sushiusdt@depth@100ms"})
            await subscribe(c, ["sushiusdt@depth@100ms"])
            got = [await c.recv() for _ in range(len(expected) - 1)]
            assert got == expected[1:]
            assert rx.faults_applied("binance", "drop") == 1
    run(body)
