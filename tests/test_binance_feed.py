"""Binance feed units: symbols, every channel's normalisation, control answers, malformed input."""

from __future__ import annotations

import logging

import pytest

from supervisor import jsonlib
from supervisor.events import (
    BookDelta,
    BookSnapshot,
    Funding,
    Gap,
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
    FeedConfig,
)
from supervisor.exchanges.binance import (
    BinanceFuturesFeed,
    BinanceSpotFeed,
    binance_symbol,
    std_symbol,
)

ALL_FUTURES = frozenset({BOOKS, TRADES, FUNDING, LIQUIDATIONS, OPEN_INTEREST, LONG_SHORT_RATIO})


def spot_feed(events: list, **kw) -> BinanceSpotFeed:
    cfg = FeedConfig("binance_spot", "binance", "spot", ("BTC-USDT",), **kw)
    return BinanceSpotFeed(cfg, events.append)


def futures_feed(events: list, **kw) -> BinanceFuturesFeed:
    kw.setdefault("channels", ALL_FUTURES)
    cfg = FeedConfig("binance_derivatives", "binance", "derivatives", ("BTC-USDT-PERP",), **kw)
    return BinanceFuturesFeed(cfg, events.append)


def frame(stream: str, data: dict) -> str:
    return jsonlib.dumps({"stream": stream, "data": data}).decode()


def depth(u0: int, u1: int, bids: list, asks: list, pu: int | None = None) -> str:
    data = {"e": "depthUpdate", "E": 1700000000123, "s": "BTCUSDT", "U": u0, "u": u1,
            "b": bids, "a": asks}
    if pu is not None:
        data["pu"] = pu
    return frame("btcusdt@depth@100ms", data)


SNAPSHOT = {"lastUpdateId": 100, "bids": [["99.5", "2"], ["99", "1"]],
            "asks": [["100", "3"], ["101", "1"]]}


# ----- symbols ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("std", "venue"), [
    ("BTC-USDT", "BTCUSDT"), ("ETH-BTC", "ETHBTC"), ("BTC-USDT-PERP", "BTCUSDT"),
    ("1000SHIB-USDT-PERP", "1000SHIBUSDT"), ("BTCUSDT_240628", "BTCUSDT_240628"),
])
def test_normalized_symbols_map_to_venue_ids(std: str, venue: str) -> None:
    assert binance_symbol(std) == venue


@pytest.mark.parametrize(("venue", "market", "std"), [
    ("BTCUSDT", "spot", "BTC-USDT"), ("btcusdt", "spot", "BTC-USDT"),
    ("ETHBTC", "spot", "ETH-BTC"), ("BTCTUSD", "spot", "BTC-TUSD"),
    ("RUNEEUR", "spot", "RUNE-EUR"), ("SUSHIUSDT", "derivatives", "SUSHI-USDT-PERP"),
    ("BTCUSDT_240628", "derivatives", "BTCUSDT_240628"),
])
def test_venue_ids_map_back_to_normalized_symbols(venue: str, market: str, std: str) -> None:
    assert std_symbol(venue, market) == std
    assert binance_symbol(std) == venue.upper()


def test_unknown_quote_asset_is_refused() -> None:
    with pytest.raises(ValueError):
        std_symbol("FOOBAR", "spot")


def test_stream_names_are_lower_case_per_channel() -> None:
    feed = futures_feed([])
    assert feed.streams(["BTC-USDT-PERP"]) == [
        "btcusdt@depth@100ms", "btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder"]
    assert spot_feed([]).streams(["ETH-BTC"]) == ["ethbtc@depth@100ms", "ethbtc@aggTrade"]


def test_snapshot_limit_is_the_depth_capped_to_the_venue() -> None:
    assert spot_feed([], book_depth=200).snapshot_limit == 200
    assert spot_feed([], book_depth=9000).snapshot_limit == 5000
    assert futures_feed([], book_depth=200).snapshot_limit == 500  # only listed values
    assert futures_feed([], book_depth=9000).snapshot_limit == 1000


def test_feed_refuses_the_wrong_market() -> None:
    with pytest.raises(ValueError):
        BinanceSpotFeed(FeedConfig("x", "binance", "derivatives", ("BTC-USDT",)), print)


# ----- channels -----------------------------------------------------------------------------------
def test_depth_events_become_a_snapshot_then_chained_deltas() -> None:
    events: list = []
    feed = spot_feed(events)
    feed.handle_frame(depth(99, 101, [["99.5", "0"]], []), 10, 11)  # buffered, straddles 100
    assert feed.apply_snapshot("BTC-USDT", SNAPSHOT, 12, 13) == 6  # SYNCED
    feed.handle_frame(depth(102, 103, [["99.8", "4"]], [["100", "0"]]), 20, 21)
    snap, delta = events
    assert snap == BookSnapshot("BTC-USDT", 101, 1700000000123000000, 12, 13,
                                [["99", "1"]], [["100", "3"], ["101", "1"]])
    assert delta == BookDelta("BTC-USDT", 103, 1700000000123000000, 20, 21, 101,
                              [["99.8", "4"]], [["100", "0"]])
    assert feed.books["BTC-USDT"].top(1) == ([["99.8", "4"]], [["101", "1"]])


def test_aggtrade_taker_side_comes_from_buyer_is_maker() -> None:
    events: list = []
    feed = futures_feed(events)
    for m in (True, False):
        feed.handle_frame(frame("btcusdt@aggTrade", {
            "e": "aggTrade", "E": 1700000000001, "s": "BTCUSDT", "a": 42, "p": "100.5",
            "q": "0.25", "f": 1, "l": 2, "T": 1700000000000, "m": m}), 5, 6)
    assert events == [
        Trade("BTC-USDT-PERP", 42, 1700000000001000000, 5, 6, "42", "sell", "100.5", "0.25"),
        Trade("BTC-USDT-PERP", 42, 1700000000001000000, 5, 6, "42", "buy", "100.5", "0.25")]


def test_spot_raw_trade_stream_is_handled_too() -> None:
    events: list = []
    spot_feed(events).handle_frame(frame("btcusdt@trade", {
        "e": "trade", "E": 7, "s": "BTCUSDT", "t": 9, "p": "1.0", "q": "2.0", "T": 7,
        "m": False}), 1, 2)
    assert events == [Trade("BTC-USDT", 9, 7_000_000, 1, 2, "9", "buy", "1.0", "2.0")]


def test_mark_price_becomes_funding() -> None:
    events: list = []
    futures_feed(events).handle_frame(frame("btcusdt@markPrice@1s", {
        "e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
        "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167",
        "T": 1562306400000}), 1, 2)
    assert events == [Funding("BTC-USDT-PERP", 0, 1562305380000000000, 1, 2, "0.00038167",
                              1562306400000000000, "11794.15000000")]


def test_force_order_becomes_a_liquidation_at_its_fill() -> None:
    events: list = []
    futures_feed(events).handle_frame(frame("btcusdt@forceOrder", {
        "e": "forceOrder", "E": 1568014460893, "o": {
            "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9900",
            "ap": "9910", "X": "FILLED", "l": "0.014", "z": "0.014",
            "T": 1568014460893}}), 1, 2)
    assert events == [Liquidation("BTC-USDT-PERP", 0, 1568014460893000000, 1, 2, "sell",
                                  "9910", "0.014")]


def test_open_interest_body_becomes_an_event() -> None:
    events: list = []
    futures_feed(events).on_open_interest(
        "BTC-USDT-PERP", {"openInterest": "10659.509", "symbol": "BTCUSDT",
                          "time": 1589437530011}, 1, 2)
    assert events == [OpenInterest("BTC-USDT-PERP", 0, 1589437530011000000, 1, 2,
                                   "10659.509", "")]


def test_long_short_ratio_is_emitted_once_per_period() -> None:
    events: list = []
    feed = futures_feed(events)
    row = {"symbol": "BTCUSDT", "longShortRatio": "1.8105", "longAccount": "0.6442",
           "shortAccount": "0.3558", "timestamp": "1583139600000"}
    for body in ([row], [row], [], [dict(row, timestamp=1583139900000, longShortRatio="2")]):
        feed.on_long_short_ratio("BTC-USDT-PERP", body, 1, 2)
    assert events == [
        LongShortRatio("BTC-USDT-PERP", 0, 1583139600000000000, 1, 2, "1.8105", "5m"),
        LongShortRatio("BTC-USDT-PERP", 0, 1583139900000000000, 1, 2, "2", "5m")]


def test_rest_channels_are_polled_only_on_futures_when_configured() -> None:
    assert [fn.__name__ for _, fn in futures_feed([]).pollers()] == [
        "poll_open_interest", "poll_long_short_ratio"]
    assert futures_feed([], channels=frozenset({BOOKS})).pollers() == []
    assert spot_feed([]).pollers() == []


def test_frames_of_unsubscribed_symbols_and_streams_are_ignored() -> None:
    events: list = []
    feed = spot_feed(events)
    feed.handle_frame(frame("ethusdt@aggTrade", {"e": "aggTrade", "E": 1, "s": "ETHUSDT",
                                                 "a": 1, "p": "1", "q": "1", "m": True}), 1, 1)
    feed.handle_frame(frame("btcusdt@bookTicker", {"u": 1, "s": "BTCUSDT", "b": "1"}), 1, 1)
    feed.handle_frame(frame("btcusdt@kline_1m", {"e": "kline", "E": 1, "s": "BTCUSDT"}), 1, 1)
    assert events == [] and feed.ignored == 3 and feed.stats.malformed == 0


# ----- control answers ----------------------------------------------------------------------------
def test_subscribe_ack_is_consumed_and_errors_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    feed = spot_feed([])
    feed._pending[1] = ("SUBSCRIBE", ("BTC-USDT",))
    feed.handle_frame('{"result":null,"id":1}', 1, 1)
    with caplog.at_level(logging.ERROR):
        feed.handle_frame('{"error":{"code":2,"msg":"Invalid request"},"id":2}', 1, 1)
        feed.handle_frame('{"code":0,"msg":"Unknown property","id":3}', 1, 1)
    assert feed.stats.subscribe_errors == 2
    assert feed.stats.malformed == 0 and feed._pending == {}
    assert "Invalid request" in caplog.text


# ----- malformed input ----------------------------------------------------------------------------
MALFORMED = {
    "not json": "{\"stream\": ",
    "empty": "",
    "binary garbage": b"\xff\xfe\x00",
    "json array": "[1, 2]",
    "json number": "42",
    "data not an object": '{"stream": "btcusdt@depth@100ms", "data": 5}',
    "no id nor data": '{"hello": "world"}',
    "answer without result": '{"id": 7}',
    "depth without symbol": frame("btcusdt@depth@100ms", {"e": "depthUpdate", "U": 1}),
    "depth ids as strings": depth("101", "102", [], []),
    "depth event time as string": frame("btcusdt@depth@100ms", {
        "e": "depthUpdate", "E": "1", "s": "BTCUSDT", "U": 101, "u": 102, "b": [], "a": []}),
    "depth sides not lists": depth(101, 102, "bids", []),
    "level too short": depth(101, 102, [["99"]], []),
    "level not a number": depth(101, 102, [["abc", "1"]], []),
    "trade price as number": frame("btcusdt@aggTrade", {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 1, "p": 1.5, "q": "1", "m": True}),
    "trade without maker flag": frame("btcusdt@aggTrade", {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 1, "p": "1", "q": "1"}),
    "trade event time as string": frame("btcusdt@aggTrade", {
        "e": "aggTrade", "E": "9", "s": "BTCUSDT", "a": 1, "p": "1", "q": "1", "m": True}),
}

LOST_DEPTH_EVENTS = {"depth ids as strings", "depth event time as string",
                     "depth sides not lists", "level too short", "level not a number"}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("synced", [False, True], ids=["syncing", "synced"])
def test_malformed_frames_are_logged_and_counted_never_raised(
        name: str, synced: bool, caplog: pytest.LogCaptureFixture) -> None:
    events: list = []
    feed = spot_feed(events)
    if synced:
        feed.apply_snapshot("BTC-USDT", SNAPSHOT, 1, 1)
    with caplog.at_level(logging.ERROR):
        feed.handle_frame(MALFORMED[name], 1, 1)
    assert feed.stats.malformed == 1
    assert "malformed frame" in caplog.text
    # A lost depth event of a known symbol restarts that sync: one counted resync, and a Gap
    # when the book had been published.
    lost = name in LOST_DEPTH_EVENTS
    assert feed.stats.resyncs == ({"sequence_gap": 1} if lost else {})
    assert [type(e) for e in events] == [BookSnapshot] * synced + [Gap] * (synced and lost)
    assert not [e for e in events if isinstance(e, (Trade, BookDelta))]


@pytest.mark.parametrize("body", [
    {"bids": [], "asks": []}, {"lastUpdateId": "1", "bids": [], "asks": []},
    {"lastUpdateId": 1, "bids": [["x", "1"]], "asks": []}, {"lastUpdateId": 1, "bids": 3,
                                                           "asks": []}, [1], "not json",
    {"lastUpdateId": 1, "E": "5", "bids": [], "asks": []},
])
def test_malformed_snapshot_bodies_raise_value_error_and_leave_no_book(body: object) -> None:
    feed = spot_feed([])
    with pytest.raises(ValueError):
        feed.apply_snapshot("BTC-USDT", body)
    assert not feed.books["BTC-USDT"].synced and not feed.sync("BTC-USDT").live


def test_a_snapshot_for_a_book_in_sync_is_ignored() -> None:
    events: list = []
    feed = spot_feed(events)
    feed.apply_snapshot("BTC-USDT", SNAPSHOT, 1, 1)
    assert feed.apply_snapshot("BTC-USDT", dict(SNAPSHOT, lastUpdateId=50), 1, 1) == 2  # STALE
    assert feed.books["BTC-USDT"].seq == 100 and len(events) == 1
