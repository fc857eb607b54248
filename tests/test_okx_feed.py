"""OKX adapter outside the book: symbols, subscriptions, events, errors, recovery, REST poll."""

import asyncio
import time

import pytest

from supervisor import jsonlib
from supervisor.events import (
    GAP_RESET,
    GAP_RESUBSCRIBE,
    GAP_SEQUENCE,
    GAP_SNAPSHOT,
    Funding,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)
from supervisor.exchanges.base import (
    BOOKS,
    FUNDING,
    LIQUIDATIONS,
    LONG_SHORT_RATIO,
    OPEN_INTEREST,
    TRADES,
    RestError,
)
from supervisor.exchanges.okx import okx_inst_id, okx_inst_type, okx_symbol
from tests.test_okx_messages import OkxBookStream, frame, make_feed

DERIV = frozenset({BOOKS, TRADES, FUNDING, OPEN_INTEREST, LIQUIDATIONS, LONG_SHORT_RATIO})


class FakeWs:
    """Stands in for the client socket: records what the feed sends."""

    closed = False

    def __init__(self):
        self.sent = []

    async def send_str(self, text):
        self.sent.append(text)

    def ops(self):
        return [jsonlib.loads(s) for s in self.sent if s != "ping"]


async def until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


def deliver(feed, msg):
    feed.handle_frame(frame(msg), 10, 20)


# ----- symbols and subscriptions ---------------------------------------------------------------
def test_symbols_map_to_instrument_ids_and_back():
    pairs = [("BTC-USDT-PERP", "BTC-USDT-SWAP"), ("BTC-USD-PERP", "BTC-USD-SWAP"),
             ("BTC-USDT", "BTC-USDT"), ("BTC-USD-250328", "BTC-USD-250328"),
             ("BTC-USD-250328-60000-C", "BTC-USD-250328-60000-C")]
    for symbol, inst in pairs:
        assert okx_inst_id(symbol) == inst and okx_symbol(inst) == symbol
    assert [okx_inst_type(i) for _, i in pairs] == ["SWAP", "SWAP", "SPOT", "FUTURES", "OPTION"]


def test_an_instance_refuses_symbols_of_the_other_market():
    with pytest.raises(ValueError, match="BTC-USDT-PERP"):
        make_feed("spot", ("BTC-USDT-PERP",))
    with pytest.raises(ValueError, match="BTC-USDT"):
        make_feed("derivatives", ("BTC-USDT",))


def test_spot_subscribes_books_and_trades_and_ignores_derivative_channels():
    feed, _ = make_feed("spot", ("BTC-USDT", "ETH-USDT"), channels=DERIV)
    assert feed.subscription_args(feed.symbols) == [
        {"channel": "books", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "BTC-USDT"},
        {"channel": "books", "instId": "ETH-USDT"}, {"channel": "trades", "instId": "ETH-USDT"}]
    assert feed.pollers() == []


def test_derivatives_subscribe_every_channel_and_liquidations_once_per_inst_type():
    feed, _ = make_feed("derivatives", ("BTC-USDT-PERP", "ETH-USDT-PERP", "BTC-USD-250328"),
                        channels=DERIV)
    args = feed.subscription_args(feed.symbols)
    assert args[:4] == [{"channel": c, "instId": "BTC-USDT-SWAP"}
                        for c in ("books", "trades", "funding-rate", "open-interest")]
    assert {"channel": "funding-rate", "instId": "BTC-USD-250328"} not in args  # swaps only
    assert len(args) == 4 + 4 + 3 + 2
    assert args[-2:] == [{"channel": "liquidation-orders", "instType": "FUTURES"},
                         {"channel": "liquidation-orders", "instType": "SWAP"}]
    assert [interval for interval, _ in feed.pollers()] == [60.0]


# ----- channel messages (OKX documentation samples) --------------------------------------------
def test_trades_become_trade_events():
    feed, events = make_feed()
    deliver(feed, {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{
        "instId": "BTC-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "0.12060306",
        "side": "buy", "ts": "1630048897897", "count": "3", "source": "0", "seqId": 1234}]})
    assert events == [Trade("BTC-USDT", 130639474, 1630048897897 * 10**6, 10, 20, "130639474",
                            "buy", "42219.9", "0.12060306")]


def test_funding_rate_carries_the_next_settlement_time():
    feed, events = make_feed("derivatives", ("BTC-USD-PERP",), channels=DERIV)
    deliver(feed, {"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}, "data": [{
        "formulaType": "noRate", "fundingRate": "0.0001875391284828",
        "fundingTime": "1700726400000", "impactValue": "", "instId": "BTC-USD-SWAP",
        "instType": "SWAP", "interestRate": "", "method": "current_period",
        "maxFundingRate": "0.00375", "minFundingRate": "-0.00375", "nextFundingRate": "",
        "nextFundingTime": "1700755200000", "premium": "0.0001233824646391",
        "settFundingRate": "0.0001699799259033", "settState": "settled",
        "ts": "1700724675402"}]})
    assert events == [Funding("BTC-USD-PERP", 0, 1700724675402 * 10**6, 10, 20,
                              "0.0001875391284828", 1700726400000 * 10**6, "")]


def test_open_interest_keeps_contracts_and_usd_value():
    feed, events = make_feed("derivatives", ("BTC-USDT-PERP",), channels=DERIV)
    deliver(feed, {"arg": {"channel": "open-interest", "instId": "BTC-USDT-SWAP"}, "data": [{
        "instId": "BTC-USDT-SWAP", "instType": "SWAP", "oi": "2216113.01000000309",
        "oiCcy": "22161.1301000000309", "oiUsd": "1939251795.54769270396321",
        "ts": "1743041250440"}]})
    assert events == [OpenInterest("BTC-USDT-PERP", 0, 1743041250440 * 10**6, 10, 20,
                                   "2216113.01000000309", "1939251795.54769270396321")]


def test_liquidations_keep_only_configured_instruments():
    feed, events = make_feed("derivatives", ("BTC-USDT-PERP",), channels=DERIV)
    detail = {"bkLoss": "0", "bkPx": "0.007831", "ccy": "", "posSide": "short", "side": "buy",
              "sz": "13", "ts": "1692266434010"}
    deliver(feed, {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
        {"details": [detail], "instFamily": "IOST-USDT", "instId": "IOST-USDT-SWAP",
         "instType": "SWAP", "uly": "IOST-USDT"},
        {"details": [dict(detail, bkPx="64000.5", side="sell", sz="2")],
         "instId": "BTC-USDT-SWAP", "instType": "SWAP"}]})
    assert events == [Liquidation("BTC-USDT-PERP", 0, 1692266434010 * 10**6, 10, 20, "sell",
                                  "64000.5", "2")]


def test_pong_is_counted_and_is_not_malformed():
    feed, events = make_feed()
    feed.handle_frame("pong", 1, 1)
    feed.handle_frame(b"pong", 1, 1)
    assert feed.pongs == 2 and feed.stats.malformed == 0 and events == []


def test_acks_track_subscriptions_and_notices_are_not_errors():
    feed, _ = make_feed()
    deliver(feed, {"id": "sub1", "event": "subscribe",
                   "arg": {"channel": "books", "instId": "BTC-USDT"}, "connId": "a4d3ae55"})
    assert ("books", "BTC-USDT") in feed.subscribed
    deliver(feed, {"event": "unsubscribe", "arg": {"channel": "books", "instId": "BTC-USDT"}})
    deliver(feed, {"event": "notice", "code": "64008", "msg": "service upgrade",
                   "connId": "a4d3ae55"})
    assert feed.subscribed == set()
    assert feed.stats.subscribe_errors == 0 and feed.stats.malformed == 0


# ----- live-connection behaviour against a fake socket -------------------------------------------
def test_a_refused_books_subscribe_resyncs_and_resubscribes_that_book_only():
    async def body():
        feed, _ = make_feed(symbols=("BTC-USDT", "ETH-USDT"), backoff_initial=0.001)
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        ops = ws.ops()
        assert [o["op"] for o in ops] == ["subscribe"] and len(ops[0]["args"]) == 4
        deliver(feed, {"id": ops[0]["id"], "event": "error", "code": "60018",
                       "msg": "Invalid request", "connId": "x"})
        assert feed.stats.subscribe_errors == 1
        assert feed.stats.resyncs == {GAP_RESUBSCRIBE: 2}  # both books were in that request
        await until(lambda: len(ws.ops()) == 5)
        again = [(o["op"], o["args"]) for o in ws.ops()[1:]]
        for inst in ("BTC-USDT", "ETH-USDT"):
            arg = [{"channel": "books", "instId": inst}]
            assert again.index(("unsubscribe", arg)) < again.index(("subscribe", arg))
        deliver(feed, {"id": "nope", "event": "error", "code": "60012", "msg": "bad"})
        assert feed.stats.subscribe_errors == 2 and feed.stats.resyncs[GAP_RESUBSCRIBE] == 2
        await feed._cancel_tasks()
    asyncio.run(body())


def test_a_gap_resubscribes_the_broken_book_once_and_nothing_else():
    async def body():
        feed, _ = make_feed(symbols=("BTC-USDT", "ETH-USDT"), backoff_initial=0.001)
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        btc = OkxBookStream("BTC-USDT", seed=1)
        deliver(feed, btc.snapshot())
        btc.update()  # lost
        deliver(feed, btc.update())
        deliver(feed, btc.update())  # skipped: no second recovery
        await until(lambda: len(ws.ops()) == 3)
        await asyncio.sleep(0.05)
        assert [(o["op"], o["args"]) for o in ws.ops()[1:]] == [
            ("unsubscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
            ("subscribe", [{"channel": "books", "instId": "BTC-USDT"}])]
        assert feed.stats.resyncs == {GAP_SEQUENCE: 1}
        deliver(feed, btc.snapshot())
        assert feed.books["BTC-USDT"].synced
        await feed._cancel_tasks()
    asyncio.run(body())


def test_a_symbol_that_keeps_breaking_backs_off_and_an_isolated_break_does_not():
    async def body():
        feed, _ = make_feed(backoff_initial=0.001, backoff_max=0.5)
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        stream = OkxBookStream(seed=8)
        backoff = None
        for n in (1, 2, 3):  # breaks in quick succession
            deliver(feed, stream.snapshot())
            deliver(feed, stream.reset_update())
            await until(lambda n=n: len(ws.ops()) == 1 + 2 * n)
            backoff = feed.recovery.backoffs["BTC-USDT"]
            assert backoff.attempt == n
        feed.recovery.last_start["BTC-USDT"] -= 10.0  # the last break is now long past
        deliver(feed, stream.snapshot())
        deliver(feed, stream.reset_update())
        await until(lambda: len(ws.ops()) == 9)
        assert backoff.attempt == 1
        assert feed.stats.resyncs == {GAP_RESET: 4}
        await feed._cancel_tasks()
    asyncio.run(body())


def test_a_book_without_snapshot_after_subscribe_is_resynced():
    async def body():
        feed, _ = make_feed(symbols=("BTC-USDT", "ETH-USDT"), backoff_initial=0.001)
        feed.recovery.snapshot_timeout = 0.1
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        deliver(feed, OkxBookStream("ETH-USDT", seed=2).snapshot())
        await until(lambda: feed.stats.resyncs.get(GAP_SNAPSHOT) == 1)
        await until(lambda: len(ws.ops()) == 3)
        assert ws.ops()[2]["args"] == [{"channel": "books", "instId": "BTC-USDT"}]
        assert feed.books["ETH-USDT"].synced
        await feed._cancel_tasks()
    asyncio.run(body())


def test_symbol_updates_touch_only_added_and_removed_instruments():
    async def body():
        feed, _ = make_feed("derivatives", ("BTC-USDT-PERP", "ETH-USDT-PERP"),
                            channels=frozenset({BOOKS, LIQUIDATIONS}))
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        await feed.update_symbols(["BTC-USDT-PERP", "SOL-USDT-PERP"])
        unsub, sub = ws.ops()[1:]
        assert unsub["op"] == "unsubscribe"
        assert unsub["args"] == [{"channel": "books", "instId": "ETH-USDT-SWAP"}]  # SWAP stays
        assert sub["args"] == [{"channel": "books", "instId": "SOL-USDT-SWAP"},
                               {"channel": "liquidation-orders", "instType": "SWAP"}]
        assert set(feed.books) == {"BTC-USDT-PERP", "SOL-USDT-PERP"}
        deliver(feed, OkxBookStream("ETH-USDT-SWAP", seed=1).snapshot())  # late frame: ignored
        assert feed.stats.malformed == 0 and feed.stats.events == {}
        await feed._cancel_tasks()
    asyncio.run(body())


def test_requests_are_chunked_and_carry_unique_ids():
    async def body():
        feed, _ = make_feed(symbols=tuple(f"C{i}-USDT" for i in range(5)))
        feed.args_per_request = 4
        ws = feed.ws = FakeWs()
        await feed.on_open(ws)
        ops = ws.ops()
        assert [len(o["args"]) for o in ops] == [4, 4, 2]
        assert len({o["id"] for o in ops}) == 3
        await feed._cancel_tasks()
    asyncio.run(body())


def test_keepalive_pings_only_after_silence():
    async def body():
        feed, _ = make_feed()
        feed.ping_interval = 0.05
        ws = FakeWs()
        feed.stats.last_message_mono = time.monotonic_ns()
        task = asyncio.ensure_future(feed.keepalive(ws))
        await until(lambda: feed.pings_sent == 1)
        assert ws.sent == ["ping"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(body())


# ----- long/short account ratio (REST) -----------------------------------------------------------
def test_long_short_ratio_emits_the_newest_row_once_per_period():
    feed, events = make_feed("derivatives", ("BTC-USDT-PERP",), channels=DERIV)
    body = {"code": "0", "msg": "", "data": [["1701417300000", "1.1002"],
                                             ["1701417600000", "1.1739"]]}
    feed.on_long_short_ratio("BTC-USDT-PERP", body, 10, 20)
    feed.on_long_short_ratio("BTC-USDT-PERP", body, 11, 21)  # same period again: nothing
    assert events == [LongShortRatio("BTC-USDT-PERP", 0, 1701417600000 * 10**6, 10, 20,
                                     "1.1739", "5m")]
    with pytest.raises(RestError, match="51001"):
        feed.on_long_short_ratio("BTC-USDT-PERP", {"code": "51001", "msg": "bad", "data": []},
                                 1, 1)


def test_long_short_poll_asks_the_per_contract_endpoint_and_survives_a_failure():
    async def body():
        feed, events = make_feed("derivatives", ("BTC-USDT-PERP", "ETH-USDT-PERP"),
                                 channels=DERIV)
        calls = []

        async def fake_get(path, params=None, attempts=5):
            calls.append((path, params))
            if params["instId"] == "BTC-USDT-SWAP":
                raise RestError("HTTP 500")
            return {"code": "0", "msg": "", "data": [["1701417600000", "0.93"]]}

        feed.rest_get_retry = fake_get
        await feed.poll_long_short_ratio()
        assert calls == [
            ("/api/v5/rubik/stat/contracts/long-short-account-ratio-contract",
             {"instId": inst, "period": "5m", "limit": "1"})
            for inst in ("BTC-USDT-SWAP", "ETH-USDT-SWAP")]
        assert [(e.symbol, e.ratio) for e in events] == [("ETH-USDT-PERP", "0.93")]
        assert feed.stats.rest_errors == 1
    asyncio.run(body())
