"""Deribit adapter: the real recording, the sequencing rule, symbols, faults, malformed input.

The recording (cryptofeed's DERIBIT.ws.1.0) subscribes ``.raw`` channels; their messages have
the same shape as the ``100ms`` ones the adapter subscribes, and routing is by channel kind
and instrument, so the recording drives the adapter unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from supervisor.events import BookDelta, BookSnapshot, Event, Funding, Gap, OpenInterest, Trade
from supervisor.exchanges.base import (
    BOOKS,
    FUNDING,
    OPEN_INTEREST,
    TRADES,
    VOLATILITY_INDEX,
    FeedConfig,
)
from supervisor.exchanges.deribit import (
    SUBSCRIBE,
    DeribitFeed,
    Verdict,
    base_currency,
    check_change_id,
    from_venue_symbol,
    normalize_levels,
    to_venue_symbol,
)
from supervisor.replay.recording import read_ws, received_frames

# ../shared/ next to the project root, in every session and in CI
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/fixtures/cryptofeed-sample"
RECORDING = SAMPLES / "DERIBIT.ws.1.0"

ALL = frozenset({BOOKS, TRADES, FUNDING, OPEN_INTEREST, VOLATILITY_INDEX})


# ----- helpers shared with the other test_deribit* files ---------------------------------
def make_feed(symbols: tuple[str, ...], channels: frozenset[str] = ALL,
              **cfg: Any) -> tuple[DeribitFeed, list[Event]]:
    events: list[Event] = []
    feed = DeribitFeed(FeedConfig("deribit_derivatives", "deribit", "derivatives", symbols,
                                  channels, **cfg), events.append,
                       logging.getLogger("test.deribit"))
    return feed, events


def feed_frames(feed: DeribitFeed, frames: list[str | bytes]) -> None:
    for i, frame in enumerate(frames):
        feed.handle_frame(frame, 1_000 + i, 2_000 + i)


def notification(channel: str, data: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription",
                       "params": {"channel": channel, "data": data}})


def book_msg(inst: str, kind: str, change_id: int, bids: list[Any], asks: list[Any],
             prev: int | None = None, ts: int = 1626993724318) -> dict[str, Any]:
    data: dict[str, Any] = {"type": kind, "timestamp": ts, "instrument_name": inst,
                            "change_id": change_id, "bids": bids, "asks": asks}
    if prev is not None:
        data["prev_change_id"] = prev
    return data


def book_frame(inst: str, kind: str, change_id: int, bids: list[Any], asks: list[Any],
               prev: int | None = None) -> str:
    return notification(f"book.{inst}.100ms", book_msg(inst, kind, change_id, bids, asks, prev))


def decimal_side(levels: list[Any]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(s)) for p, s, *_ in levels]


def book_as_decimals(feed: DeribitFeed, symbol: str) -> tuple[list[Any], list[Any]]:
    bids, asks = feed.books[symbol].snapshot_levels()
    return decimal_side(list(bids)), decimal_side(list(asks))


class ReferenceBook:
    """Independent model: Decimal price -> Decimal amount, from the JSON text itself."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def load(self, data: dict[str, Any]) -> None:
        self.bids = {p: a for _, p, a in data["bids"] if a != 0}
        self.asks = {p: a for _, p, a in data["asks"] if a != 0}

    def apply(self, data: dict[str, Any]) -> None:
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for action, price, amount in levels:
                if action == "delete" or amount == 0:
                    side.pop(price, None)
                else:
                    side[price] = amount

    def sides(self) -> tuple[list[Any], list[Any]]:
        return (sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))


def exact(text: str) -> Any:
    """Parse a frame keeping every number exact (the reference never sees a float)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# ----- the recording --------------------------------------------------------------------
def _recording() -> tuple[list[str], tuple[str, ...]]:
    sent = [ln.message for ln in read_ws(RECORDING) if ln.direction == "sent"]
    channels = json.loads(sent[0])["params"]["channels"]
    insts = tuple(sorted({c.split(".")[1] for c in channels if c.startswith("book.")}))
    return received_frames(RECORDING), insts


def test_recording_syncs_every_book_and_matches_reference_after_every_message() -> None:
    frames, insts = _recording()
    feed, events = make_feed(insts, frozenset({BOOKS, TRADES, OPEN_INTEREST}))
    refs = {inst: ReferenceBook() for inst in insts}
    for i, frame in enumerate(frames):
        feed.handle_frame(frame, i, i)
        msg = exact(frame)
        channel = msg.get("params", {}).get("channel", "")
        if channel.startswith("book."):
            data = msg["params"]["data"]
            ref = refs[data["instrument_name"]]
            ref.load(data) if data["type"] == "snapshot" else ref.apply(data)
            assert book_as_decimals(feed, data["instrument_name"]) == ref.sides()
        for book in feed.books.values():  # best bid < best ask everywhere after sync
            if book.synced and len(book.bids) and len(book.asks):
                assert float(book.bids.best()[0]) < float(book.asks.best()[0])
    assert feed.books_synced() == (10, 10)
    assert feed.stats.resyncs == {} and feed.stats.malformed == 0
    assert not [e for e in events if isinstance(e, Gap)]


def test_recording_event_counts_match_counts_computed_from_the_recording() -> None:
    frames, insts = _recording()
    feed, events = make_feed(insts, frozenset({BOOKS, TRADES, OPEN_INTEREST}))
    feed_frames(feed, frames)
    kinds: dict[str, int] = {}
    trades = 0
    oi = 0
    last_ticker: dict[str, int] = {}
    for frame in frames:
        msg = json.loads(frame)
        channel = msg.get("params", {}).get("channel", "")
        data = msg.get("params", {}).get("data")
        if channel.startswith("book."):
            kinds[data["type"]] = kinds.get(data["type"], 0) + 1
        elif channel.startswith("trades."):
            trades += len(data)
        elif channel.startswith("ticker."):
            inst, ts = data["instrument_name"], data["timestamp"]
            if inst not in last_ticker or ts - last_ticker[inst] >= 1000:
                last_ticker[inst] = ts
                oi += 1
    assert (kinds["snapshot"], kinds["change"], oi) == (10, 36, 74)  # pins the recording
    assert feed.stats.events == {"BookSnapshot": 10, "BookDelta": 36, "OpenInterest": 74}
    assert trades == 0  # the recording holds no trades: Trade is covered below
    assert feed.stats.messages == len(frames) and feed.stats.malformed == 0


def test_recording_checkpoint_btc_24sep21_8000_p_after_its_first_change() -> None:
    frames, insts = _recording()
    feed, events = make_feed(insts, frozenset({BOOKS}))
    first_change = next(i for i, f in enumerate(frames) if '"type":"change"' in f)
    feed_frames(feed, frames[: first_change + 1])
    bids, asks = feed.books["BTC-24SEP21-8000-P"].top(3)
    assert bids == [["0.0005", "153.1"]]
    assert asks == [["0.001", "2.6"], ["0.0015", "94.7"], ["0.002", "22.0"]]
    delta = events[-1]
    assert isinstance(delta, BookDelta)
    assert (delta.seq, delta.prev_seq, delta.ts_exchange) == (
        33195894355, 33195894164, 1626993724318 * 1_000_000)
    assert delta.asks == [["0.001", "2.6"]] and delta.bids == []


def test_recording_empty_snapshot_syncs_an_empty_book() -> None:
    frames, insts = _recording()
    feed, events = make_feed(insts, frozenset({BOOKS}))
    feed_frames(feed, frames)
    book = feed.books["ETH-27AUG21-4000-P"]
    assert book.synced and len(book.bids) == 0 and len(book.asks) == 0


# ----- the sequencing rule, symbols, level normalisation -----------------------------
def test_change_applies_only_on_top_of_the_previous_change_id() -> None:
    assert check_change_id(True, 100, 100) is Verdict.APPLY
    assert check_change_id(True, 100, 99) is Verdict.GAP
    assert check_change_id(True, 100, 101) is Verdict.GAP


def test_changes_are_skipped_while_the_book_awaits_its_snapshot() -> None:
    assert check_change_id(False, 100, 100) is Verdict.SKIP
    assert check_change_id(False, 0, 5) is Verdict.SKIP


@pytest.mark.parametrize("ours, venue", [
    ("BTC-USD-PERP", "BTC-PERPETUAL"), ("ETH-USD-PERP", "ETH-PERPETUAL"),
    ("BTC-USDC-PERP", "BTC_USDC-PERPETUAL"), ("BTC-24SEP21-8000-P", "BTC-24SEP21-8000-P"),
    ("BTC-31DEC21", "BTC-31DEC21"),
])
def test_symbols_map_both_ways(ours: str, venue: str) -> None:
    assert to_venue_symbol(ours) == venue
    assert from_venue_symbol(venue) == ours


def test_base_currency_of_instruments() -> None:
    assert base_currency("BTC-24SEP21-8000-P") == "BTC"
    assert base_currency("ETH_USDC-PERPETUAL") == "ETH"


def test_levels_normalise_to_shortest_repr_and_delete_to_zero() -> None:
    raw = [["new", 0.0015, 4714.0], ["change", 32100, 10], ["delete", 0.00005, 0.0]]
    assert normalize_levels(raw) == [["0.0015", "4714.0"], ["32100", "10"], ["5e-05", "0"]]


@pytest.mark.parametrize("level", [
    ["new", "1.5", 1.0], ["new", 1.5, "1"], ["new", -1.5, 1.0], ["new", 0, 1.0],
    ["new", 1.5, -1.0], ["new", True, 1.0], ["new", 1.5, None], ["add", 1.5, 1.0],
    ["new", 1.5], ["new", 1.5, 1.0, 7], ["new", float("nan"), 1.0], ["new", 1.5, float("inf")],
])
def test_bad_levels_raise_before_anything_is_applied(level: list[Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        normalize_levels([["new", 1.0, 1.0], level])


def test_channels_follow_the_configured_data_types() -> None:
    feed, _ = make_feed(("BTC-USD-PERP", "ETH-24SEP21-2000-C"), frozenset({BOOKS, FUNDING}))
    assert feed.channels_for(feed.symbols) == [
        "book.BTC-PERPETUAL.100ms", "ticker.BTC-PERPETUAL.100ms", "book.ETH-24SEP21-2000-C.100ms"]
    assert feed.index_channels(feed.symbols) == set()
    feed, _ = make_feed(("BTC-USD-PERP", "BTC-24SEP21-8000-P", "ETH-USD-PERP", "SOL-USDC-PERP"))
    assert feed.index_channels(feed.symbols) == {
        "deribit_volatility_index.btc_usd", "deribit_volatility_index.eth_usd"}


# ----- other channels ---------------------------------------------------------------
def test_trades_carry_side_id_sequence_and_exact_numbers() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    feed_frames(feed, [notification("trades.BTC-PERPETUAL.100ms", [
        {"trade_seq": 933, "trade_id": "9178", "timestamp": 1550736299753, "tick_direction": 3,
         "price": 3948.5, "instrument_name": "BTC-PERPETUAL", "direction": "sell", "amount": 10},
        {"trade_seq": 934, "trade_id": "9179", "timestamp": 1550736299754, "tick_direction": 0,
         "price": 3949.0, "instrument_name": "BTC-PERPETUAL", "direction": "buy", "amount": 2.5},
    ])])
    assert events == [
        Trade("BTC-USD-PERP", 933, 1550736299753_000000, 1000, 2000, "9178", "sell", "3948.5",
              "10"),
        Trade("BTC-USD-PERP", 934, 1550736299754_000000, 1000, 2000, "9179", "buy", "3949.0",
              "2.5"),
    ]


def test_a_bad_trade_in_a_batch_emits_none_of_the_batch() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    good = {"trade_seq": 1, "trade_id": "1", "timestamp": 1, "price": 1.5, "amount": 1,
            "direction": "buy"}
    feed_frames(feed, [notification("trades.BTC-PERPETUAL.100ms",
                                    [good, dict(good, direction="up")])])
    assert events == [] and feed.stats.malformed == 1


def test_ticker_gives_funding_and_open_interest_at_most_once_per_second() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    tick = {"timestamp": 1550652954406, "instrument_name": "BTC-PERPETUAL",
            "open_interest": 1269.5, "mark_price": 3940.06, "funding_8h": 0.0152,
            "current_funding": 0.005}
    feed_frames(feed, [notification("ticker.BTC-PERPETUAL.100ms",
                                    dict(tick, timestamp=tick["timestamp"] + dt))
                       for dt in (0, 100, 999, 1000, 1500, 2000)])
    ts = [e.ts_exchange // 1_000_000 - tick["timestamp"] for e in events]
    assert ts == [0, 0, 1000, 1000, 2000, 2000]
    assert events[0] == Funding("BTC-USD-PERP", 0, 1550652954406_000000, 1000, 2000, "0.0152",
                                0, "3940.06")
    assert events[1] == OpenInterest("BTC-USD-PERP", 0, 1550652954406_000000, 1000, 2000,
                                     "1269.5", "")


def test_volatility_index_becomes_base_dvol() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    feed_frames(feed, [notification("deribit_volatility_index.btc_usd", {
        "volatility": 129.36, "timestamp": 1619777946007, "index_name": "btc_usd"})])
    assert [(e.symbol, e.value, e.ts_exchange) for e in events] == [
        ("BTC-DVOL", "129.36", 1619777946007_000000)]


def test_notifications_for_instruments_not_collected_are_ignored() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    feed_frames(feed, [book_frame("ETH-PERPETUAL", "snapshot", 5, [["new", 1.0, 1.0]], [])])
    assert events == [] and feed.stats.malformed == 0


# ----- faults ---------------------------------------------------------------------
def _synced_perp() -> tuple[DeribitFeed, list[Event]]:
    feed, events = make_feed(("BTC-USD-PERP", "ETH-USD-PERP"), frozenset({BOOKS}))
    feed_frames(feed, [
        book_frame("BTC-PERPETUAL", "snapshot", 10, [["new", 100.0, 5.0]], [["new", 101.0, 7.0]]),
        book_frame("ETH-PERPETUAL", "snapshot", 50, [["new", 10.0, 1.0]], [["new", 11.0, 1.0]]),
    ])
    return feed, events


def test_lost_change_resyncs_that_book_only_and_emits_one_gap() -> None:
    feed, events = _synced_perp()
    feed_frames(feed, [
        book_frame("BTC-PERPETUAL", "change", 12, [], [["new", 102.0, 1.0]], prev=11),
        book_frame("BTC-PERPETUAL", "change", 13, [], [["new", 103.0, 1.0]], prev=12),
    ])
    assert feed.stats.resyncs == {"sequence_gap": 1}
    gaps = [e for e in events if isinstance(e, Gap)]
    assert [(g.symbol, g.seq, g.reason) for g in gaps] == [("BTC-USD-PERP", 10, "sequence_gap")]
    assert not feed.books["BTC-USD-PERP"].synced
    assert feed.books["ETH-USD-PERP"].synced and feed.books["ETH-USD-PERP"].seq == 50
    feed_frames(feed, [book_frame("BTC-PERPETUAL", "snapshot", 20, [["new", 99.0, 1.0]],
                                  [["new", 104.0, 2.0]])])
    assert feed.books["BTC-USD-PERP"].top(5) == ([["99.0", "1.0"]], [["104.0", "2.0"]])
    assert isinstance(events[-1], BookSnapshot) and events[-1].seq == 20


def test_crossed_book_after_a_change_resyncs_without_publishing_the_change() -> None:
    feed, events = _synced_perp()
    n = len(events)
    feed_frames(feed, [book_frame("BTC-PERPETUAL", "change", 11, [["new", 101.5, 1.0]], [],
                                  prev=10)])
    assert feed.stats.resyncs == {"crossed_book": 1}
    assert [type(e) for e in events[n:]] == [Gap]


def test_crossed_snapshot_is_never_published() -> None:
    feed, events = make_feed(("BTC-USD-PERP",), frozenset({BOOKS}))
    feed_frames(feed, [book_frame("BTC-PERPETUAL", "snapshot", 10, [["new", 102.0, 5.0]],
                                  [["new", 101.0, 7.0]])])
    assert feed.stats.resyncs == {"crossed_book": 1}
    assert events == [] and not feed.books["BTC-USD-PERP"].synced


@pytest.mark.parametrize("field", ["type", "prev_change_id", "change_id", "timestamp", "bids"])
def test_change_missing_a_field_is_counted_malformed_and_resyncs_at_once(field: str) -> None:
    feed, events = _synced_perp()
    data = book_msg("BTC-PERPETUAL", "change", 11, [], [["new", 102.0, 1.0]], prev=10)
    del data[field]
    feed_frames(feed, [notification("book.BTC-PERPETUAL.100ms", data)])
    assert feed.stats.malformed == 1 and feed.stats.resyncs == {"sequence_gap": 1}
    assert not feed.books["BTC-USD-PERP"].synced and feed.books["ETH-USD-PERP"].synced


def test_truncated_book_frame_resyncs_the_book_it_names() -> None:
    feed, events = _synced_perp()
    frame = book_frame("BTC-PERPETUAL", "change", 11, [], [["new", 102.0, 1.0]], prev=10)
    feed_frames(feed, [frame[:-20]])
    assert feed.stats.malformed == 1 and feed.stats.resyncs == {"sequence_gap": 1}
    assert not feed.books["BTC-USD-PERP"].synced and feed.books["ETH-USD-PERP"].synced


def test_subscribe_error_for_a_book_channel_resyncs_it_as_snapshot_failed() -> None:
    feed, events = _synced_perp()
    req = feed.request(SUBSCRIBE, {"channels": ["book.BTC-PERPETUAL.100ms"]},
                       ["book.BTC-PERPETUAL.100ms"])
    feed_frames(feed, [json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": {
        "code": 11050, "message": "bad_request"}})])
    assert feed.stats.subscribe_errors == 1 and feed.stats.malformed == 0
    assert feed.stats.resyncs == {"snapshot_failed": 1}
    assert not feed.books["BTC-USD-PERP"].synced and feed.books["ETH-USD-PERP"].synced


def test_channel_missing_from_subscribe_result_counts_as_a_subscribe_error() -> None:
    feed, _ = make_feed(("BTC-USD-PERP", "ETH-USD-PERP"), frozenset({BOOKS}))
    chans = ["book.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.100ms"]
    req = feed.request(SUBSCRIBE, {"channels": chans}, chans)
    feed_frames(feed, [json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": chans[1:]})])
    assert feed.stats.subscribe_errors == 1 and feed.stats.resyncs == {"snapshot_failed": 1}


def test_successful_subscribe_result_changes_nothing() -> None:
    feed, events = _synced_perp()
    chans = ["book.BTC-PERPETUAL.100ms"]
    req = feed.request(SUBSCRIBE, {"channels": chans}, chans)
    feed_frames(feed, [json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": chans})])
    assert feed.stats.subscribe_errors == 0 and feed.stats.resyncs == {}


def test_heartbeats_are_accepted_without_a_connection() -> None:
    feed, events = make_feed(("BTC-USD-PERP",))
    feed_frames(feed, [
        '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}',
        '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}',
    ])
    assert feed.stats.malformed == 0 and events == []


MALFORMED = [
    b"", b"\xff\xfe", "not json", "[]", "null", "42", '"str"', "{}",
    '{"jsonrpc":"2.0","method":"subscription"}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"nope.X","data":{}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":7,"data":{}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":["x"],"data":{}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms",'
    '"data":null}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms",'
    '"data":{"type":"snapshot","change_id":"1","timestamp":1,"bids":[],"asks":[]}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.100ms",'
    '"data":{"a":1}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.100ms",'
    '"data":{"timestamp":1.5}}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":'
    '"deribit_volatility_index.btc_usd","data":{"volatility":"x","timestamp":1}}}',
    '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"other"}}',
    '{"jsonrpc":"2.0","method":"heartbeat"}',
]


@pytest.mark.parametrize("frame", MALFORMED)
def test_malformed_frames_are_counted_never_raised(frame: str | bytes) -> None:
    feed, events = _synced_perp()
    feed_frames(feed, [frame])
    assert feed.stats.malformed == 1
    assert [e for e in events if not isinstance(e, (BookSnapshot, Gap))] == []


def test_recording_numbers_keep_their_exact_value() -> None:
    frames, _ = _recording()
    numbers = [t for f in frames for t in re.findall(r'\["(?:new|change|delete)",([^,]+),', f)]
    assert numbers
    for text in numbers:
        assert Decimal(repr(json.loads(text))) == Decimal(text)
