"""OKX v5 public channels as the replay exchange serves them, checked with plain clients."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.replay import ReplayExchange
from tests.test_replay_support import (
    Client,
    RefBook,
    get_json,
    okx_checksum,
    run,
    same_book,
    server_book,
)


def books_arg(inst: str) -> dict[str, str]:
    return {"channel": "books", "instId": inst}


class OkxBook:
    """OKX's documented ``books`` rule, from the docs: a snapshot (``prevSeqId`` -1), then
    each update's ``prevSeqId`` equals the last ``seqId``; checksums verified when non-zero."""

    def __init__(self) -> None:
        self.book = RefBook()
        self.seq: int | None = None
        self.updates = 0
        self.checksums_verified = 0

    def push(self, msg: dict[str, Any]) -> None:
        data = msg["data"][0]
        if msg["action"] == "snapshot":
            assert data["prevSeqId"] == -1
            self.book.load(data["bids"], data["asks"])
        else:
            assert self.seq is not None and data["prevSeqId"] == self.seq, (self.seq, data)
            assert data["seqId"] - data["prevSeqId"] >= 2  # not contiguous
            self.book.apply(data["bids"], data["asks"])
            self.updates += 1
        assert not self.book.crossed()
        if data["checksum"] != 0:
            assert data["checksum"] == okx_checksum(self.book)
            self.checksums_verified += 1
        self.seq = data["seqId"]


async def subscribe(c: Client, args: list[dict[str, str]], req_id: str = "s1") -> None:
    await c.send({"id": req_id, "op": "subscribe", "args": args})


async def book_checkpoint(okx_checksum_on: bool) -> OkxBook:
    async with ReplayExchange(port=0, rate=800, seed=21, okx_checksum=okx_checksum_on) as rx, \
            await Client.connect(rx.ws_url("okx")) as c:
        await subscribe(c, [books_arg("BTC-USDT"), {"channel": "trades", "instId": "BTC-USDT"}])
        ack = await c.recv()
        assert ack == {"event": "subscribe", "arg": books_arg("BTC-USDT"), "connId": ack["connId"],
                       "id": "s1"}
        ref = OkxBook()
        frames: list[dict[str, Any]] = []
        await c.recv_until(lambda m: m.get("action") == "snapshot", keep=frames)
        ref.push(frames[-1])
        while ref.updates < 80:
            msg = await c.recv()
            if msg.get("arg", {}).get("channel") == "books":
                ref.push(msg)
        await c.send({"op": "unsubscribe", "args": [books_arg("BTC-USDT")]})
        tail: list[dict[str, Any]] = []
        await c.recv_until(lambda m: m.get("event") == "unsubscribe", keep=tail)
        for msg in tail:
            if msg.get("arg", {}).get("channel") == "books" and "data" in msg:
                ref.push(msg)
        assert same_book(ref.book, server_book(rx, "okx", "BTC-USDT"))
        return ref


def test_books_snapshot_then_updates_chain_seq_ids_and_rebuild_the_server_book():
    ref = run(lambda: book_checkpoint(False))
    assert ref.checksums_verified == 0  # checksum 0 by default (deprecated by OKX in 2026)


def test_checksum_option_sends_okx_crc32_of_the_top_25_levels():
    ref = run(lambda: book_checkpoint(True))
    assert ref.checksums_verified == ref.updates + 1  # the snapshot and every update


def test_unknown_channel_gets_60018_and_bad_requests_get_60012():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("okx")) as c:
            await subscribe(c, [{"channel": "books7", "instId": "BTC-USDT"}], "a")
            err = await c.recv()
            assert err["event"] == "error" and err["code"] == "60018" and err["id"] == "a"
            assert "books7" in err["msg"]
            await subscribe(c, [{"channel": "funding-rate", "instId": "BTC-USDT"}], "b")
            assert (await c.recv())["code"] == "60018"  # spot has no funding
            await c.send("{not json")
            assert (await c.recv())["code"] == "60012"
            await c.send({"op": "login", "args": [{}]})
            assert (await c.recv())["code"] == "60012"
            await c.send({"op": "subscribe", "args": []})
            assert (await c.recv())["code"] == "60012"
            assert rx.stats()["venues"]["okx"]["subscriptions"] == 0
    run(body)


def test_text_ping_is_answered_with_text_pong():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("okx")) as c:
            await c.send("ping")
            msg = await c.receive()
            assert msg.data == "pong"
    run(body)


def test_resubscribing_books_sends_a_fresh_snapshot_that_chains():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=500) as rx, \
                await Client.connect(rx.ws_url("okx")) as c:
            await subscribe(c, [books_arg("ETH-USDT-SWAP")])
            ref = OkxBook()
            for _ in range(2):
                snap = await c.recv_until(lambda m: m.get("action") == "snapshot")
                ref.push(snap)
                for _ in range(10):
                    ref.push(await c.recv_until(lambda m: m.get("action") == "update"))
                await c.send({"op": "unsubscribe", "args": [books_arg("ETH-USDT-SWAP")]})
                await c.recv_until(lambda m: m.get("event") == "unsubscribe")
                await subscribe(c, [books_arg("ETH-USDT-SWAP")])
    run(body)


def test_trades_funding_open_interest_and_liquidations_carry_okx_fields():
    async def body() -> None:
        async with ReplayExchange(port=0, rate=2000) as rx, \
                await Client.connect(rx.ws_url("okx")) as c:
            await subscribe(c, [{"channel": "trades", "instId": "BTC-USDT-SWAP"},
                                {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
                                {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
                                {"channel": "liquidation-orders", "instType": "SWAP"}])
            got: dict[str, dict[str, Any]] = {}
            await c.recv_until(lambda m: "data" in m and got.setdefault(
                m["arg"]["channel"], m["data"][0]) is not None and len(got) == 4)
            trade = got["trades"]
            assert trade["instId"] == "BTC-USDT-SWAP" and trade["side"] in ("buy", "sell")
            assert float(trade["px"]) > 0 and float(trade["sz"]) > 0 and trade["ts"].isdigit()
            funding = got["funding-rate"]
            assert funding["instType"] == "SWAP" and abs(float(funding["fundingRate"])) < 0.01
            assert int(funding["nextFundingTime"]) > int(funding["fundingTime"])
            oi = got["open-interest"]
            assert float(oi["oi"]) > 0 and float(oi["oiUsd"]) > float(oi["oi"])
            liq = got["liquidation-orders"]
            assert liq["instId"] == "BTC-USDT-SWAP" and liq["instType"] == "SWAP"
            detail = liq["details"][0]
            assert detail["side"] in ("buy", "sell") and float(detail["sz"]) > 0
            assert {"buy": "short", "sell": "long"}[detail["side"]] == detail["posSide"]
    run(body)


def test_rest_open_interest_and_both_long_short_ratio_endpoints():
    async def body() -> None:
        async with ReplayExchange(port=0) as rx:
            base = rx.rest_url("okx")
            status, oi, _ = await get_json(base + "/api/v5/public/open-interest",
                                           {"instType": "SWAP", "instId": "BTC-USDT-SWAP"})
            assert status == 200 and oi["code"] == "0"
            assert oi["data"][0]["instId"] == "BTC-USDT-SWAP" and float(oi["data"][0]["oi"]) > 0
            ratio = "/api/v5/rubik/stat/contracts/long-short-account-ratio"
            for path, params in ((ratio, {"ccy": "BTC", "period": "5m"}),
                                 (ratio + "-contract", {"instId": "BTC-USDT-SWAP",
                                                        "period": "1H", "limit": "4"})):
                status, body_, _ = await get_json(base + path, params)
                assert status == 200 and body_["code"] == "0" and body_["data"]
                stamps = [int(ts) for ts, _ in body_["data"]]
                assert stamps == sorted(stamps, reverse=True)  # newest first
                assert all(float(r) > 0 for _, r in body_["data"])
            status, bad, _ = await get_json(base + "/api/v5/public/open-interest",
                                            {"instType": "SPOT", "instId": "BTC-USDT"})
            assert status == 400 and bad["code"] == "51001"
    run(body)


@pytest.mark.parametrize("inst", ["BTC-USDT", "BTC-USD-SWAP", "ETH-USD-250328"])
def test_any_instrument_gets_a_book_of_at_least_100_levels(inst):
    async def body() -> None:
        async with ReplayExchange(port=0) as rx, await Client.connect(rx.ws_url("okx")) as c:
            await subscribe(c, [books_arg(inst)])
            snap = await c.recv_until(lambda m: m.get("action") == "snapshot")
            data = snap["data"][0]
            assert len(data["bids"]) >= 100 and len(data["asks"]) >= 100
            assert float(data["bids"][0][0]) < float(data["asks"][0][0])
            assert all(len(level) == 4 for level in data["bids"] + data["asks"])
    run(body)
