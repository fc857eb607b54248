"""The message rate: paced by ``rate``, and tens of thousands a second when unlimited."""

from __future__ import annotations

import asyncio
import time

import pytest

from supervisor.replay import ReplayExchange, ReplayProcess
from supervisor.replay.bench import count_frames, subscribe_request
from tests.test_replay_binance import subscribe
from tests.test_replay_support import Client, run


def test_rate_paces_the_messages_of_one_connection_across_its_subscriptions():
    rate, window = 400.0, 1.0

    async def body() -> None:
        async with ReplayExchange(port=0, rate=rate, ping_interval=0) as rx, \
                await Client.connect(rx.ws_url("binance_derivatives")) as c:
            streams = ["btcusdt@depth@100ms", "ethusdt@depth@100ms", "btcusdt@aggTrade"]
            await subscribe(c, streams)
            for _ in range(20):  # warm up
                await c.recv()
            seen: dict[str, int] = dict.fromkeys(streams, 0)
            end = time.monotonic() + window
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await c.recv(timeout=left)
                except TimeoutError:
                    break
                seen[msg["stream"]] += 1
            n = sum(seen.values())
            # never more than the rate plus one capped burst; a loaded host may send fewer
            assert rate * window * 0.5 <= n <= rate * (window + 0.3)
            # weights: each book stream gets 10 shares, aggTrade 4
            assert seen["btcusdt@depth@100ms"] > 1.5 * seen["btcusdt@aggTrade"]
            assert abs(seen["btcusdt@depth@100ms"] - seen["ethusdt@depth@100ms"]) <= 0.2 * n
    run(body)


@pytest.mark.slow
def test_unlimited_rate_pushes_tens_of_thousands_of_messages_a_second():
    """One server process (one core) to one connection; the bench reports the exact figure
    (``python -m supervisor.replay.bench``); the floor here leaves room for a busy CI host."""
    with ReplayProcess(["--rate", "0", "--ping-interval", "0"]) as rx:
        path, request = subscribe_request("binance_derivatives", 10)
        frames, size, elapsed = asyncio.run(count_frames(rx.port, path, request, 3.0))
    rate = frames / elapsed
    print(f"replay exchange: {rate:.0f} msgs/s, {size / elapsed / 1e6:.1f} MB/s")
    assert rate >= 20_000
