"""Property tests of the Binance book sync: random venue streams against a reference model.

A toy venue keeps the true book after every diff event (bids at prices 1-20, asks at 21-40,
so a valid stream never crosses; level 1 bid and level 40 ask are never removed) and issues
ids the way Binance does: contiguous ``U``/``u`` on spot, jumping ids with ``pu`` on USD-M.
A snapshot may be cut in the middle of an event's id range (its state then holds part of
that event), delivered before, inside or after the buffered stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import jsonlib
from supervisor.book import OrderBook
from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.exchanges.base import BOOKS, FeedConfig
from supervisor.exchanges.binance import BinanceFuturesFeed, BinanceSpotFeed
from supervisor.exchanges.binance_sync import (
    APPLIED,
    BUFFERED,
    CROSSED,
    GAP,
    OLD_SNAPSHOT,
    OVERFLOW,
    STALE,
    SYNCED,
    BinanceFuturesSync,
    BinanceSpotSync,
)

Side = dict[str, str]  # price string -> size string


@dataclass
class Event:
    first: int  # U
    last: int  # u
    prev: int  # pu (USD-M)
    bids: list[list[str]]
    asks: list[list[str]]
    ts: int


@dataclass
class Venue:
    futures: bool
    initial: tuple[Side, Side]
    events: list[Event]
    states: list[tuple[Side, Side]]  # true book after each event

    def snapshot(self, k: int, cut: int) -> tuple[dict, tuple[Side, Side]]:
        """Snapshot with lastUpdateId inside event k's range: its first ``cut`` changes in."""
        bids, asks = (dict(s) for s in (self.states[k - 1] if k else self.initial))
        ev = self.events[k]
        changes = [(bids, p, q) for p, q in ev.bids] + [(asks, p, q) for p, q in ev.asks]
        span = ev.last - ev.first
        applied = len(changes) if cut >= span else min(len(changes), cut)
        for side, p, q in changes[:applied]:
            _set(side, p, q)
        lid = ev.first + min(cut, span)
        body = {"lastUpdateId": lid, "bids": _levels(bids, True), "asks": _levels(asks, False)}
        return body, (bids, asks)


def _set(side: Side, price: str, size: str) -> None:
    if float(size) == 0:
        side.pop(price, None)
    else:
        side[price] = size


def _levels(side: Side, best_high: bool) -> list[list[str]]:
    return [[p, side[p]] for p in sorted(side, key=float, reverse=best_high)]


def _book_state(book: OrderBook) -> tuple[Side, Side]:
    bids, asks = book.snapshot_levels()
    return {p: q for p, q in bids}, {p: q for p, q in asks}


def _price(i: int) -> str:
    return f"{i}.{i % 7}0"


SIZES = st.sampled_from(["0", "0.000", "1", "2.5", "10", "0.01"])


@st.composite
def venues(draw: st.DrawFn, futures: bool) -> Venue:
    bids = {_price(i): "1" for i in draw(st.sets(st.integers(2, 20), max_size=8)) | {1}}
    asks = {_price(i): "1" for i in draw(st.sets(st.integers(21, 39), max_size=8)) | {40}}
    initial = (dict(bids), dict(asks))
    last = draw(st.integers(1, 10**9))
    events: list[Event] = []
    states: list[tuple[Side, Side]] = []
    for n in range(draw(st.integers(8, 30))):
        first = last + (draw(st.integers(1, 4)) if futures else 1)
        ev = Event(first, first + draw(st.integers(0, 3)), last, [], [], 1_600_000_000_000 + n)
        for lo, hi, side, out in ((2, 20, bids, ev.bids), (21, 39, asks, ev.asks)):
            for i in draw(st.lists(st.integers(lo, hi), max_size=4, unique=True)):
                size = draw(SIZES)
                out.append([_price(i), size])
                _set(side, _price(i), size)
        events.append(ev)
        states.append((dict(bids), dict(asks)))
        last = ev.last
    return Venue(futures, initial, events, states)


def _sync_for(futures: bool) -> BinanceSpotSync | BinanceFuturesSync:
    return (BinanceFuturesSync if futures else BinanceSpotSync)(OrderBook("X"))


def _feed(v: Venue, sink: Callable) -> BinanceSpotFeed | BinanceFuturesFeed:
    if v.futures:
        cfg = FeedConfig("binance_derivatives", "binance", "derivatives", ("X-USDT-PERP",),
                         frozenset({BOOKS}))
        return BinanceFuturesFeed(cfg, sink)
    return BinanceSpotFeed(FeedConfig("binance_spot", "binance", "spot", ("X-USDT",),
                                      frozenset({BOOKS})), sink)


def _frame(v: Venue, ev: Event) -> dict:
    data = {"e": "depthUpdate", "E": ev.ts, "s": "XUSDT", "U": ev.first, "u": ev.last,
            "b": ev.bids, "a": ev.asks}
    if v.futures:
        data["pu"] = ev.prev
    return {"stream": "xusdt@depth@100ms", "data": data}


# ----- the sync machine alone ---------------------------------------------------------------------
@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_streams_rebuild_the_true_book(futures: bool, data: st.DataObject) -> None:
    v = data.draw(venues(futures))
    n = len(v.events)
    start = data.draw(st.integers(0, n - 2), label="subscription starts at event")
    k = data.draw(st.integers(start, n - 1), label="snapshot cut in event")
    cut = data.draw(st.integers(0, 4), label="ids of that event in the snapshot")
    deliver = data.draw(st.integers(start, n), label="snapshot delivered before event")
    body, snap_state = v.snapshot(k, cut)
    sync = _sync_for(futures)
    for ev in v.events[start:deliver]:
        assert sync.on_event(ev.first, ev.last, ev.prev, ev.bids, ev.asks, ev.ts) == BUFFERED
    assert sync.on_snapshot(body["lastUpdateId"], body["bids"], body["asks"]) == SYNCED
    folded = [i for i in range(start, deliver) if v.events[i].last > body["lastUpdateId"]]
    want = v.states[folded[-1]] if folded else snap_state
    assert _book_state(sync.book) == want
    for i in range(deliver, n):
        ev = v.events[i]
        status = sync.on_event(ev.first, ev.last, ev.prev, ev.bids, ev.asks, ev.ts)
        assert status == (APPLIED if ev.last > body["lastUpdateId"] else STALE)
        if status == APPLIED:
            assert _book_state(sync.book) == v.states[i]
            assert sync.book.seq == ev.last
    assert _book_state(sync.book) == v.states[-1]
    assert not sync.book.crossed()


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_snapshot_older_than_the_stream_is_refused(futures: bool, data: st.DataObject) -> None:
    v = data.draw(venues(futures))
    start = data.draw(st.integers(2, len(v.events) - 1))
    sync = _sync_for(futures)
    for ev in v.events[start:]:
        sync.on_event(ev.first, ev.last, ev.prev, ev.bids, ev.asks, ev.ts)
    old = v.events[start - 2]  # ends before the first buffered event can straddle it
    assert sync.on_snapshot(old.last, [["1", "1"]], [["2", "1"]]) == OLD_SNAPSHOT
    assert not sync.live and not sync.book.synced
    assert len(sync.buffer) == len(v.events) - start  # kept for the next snapshot
    body, _ = v.snapshot(len(v.events) - 1, 4)
    assert sync.on_snapshot(body["lastUpdateId"], body["bids"], body["asks"]) == SYNCED
    assert _book_state(sync.book) == v.states[-1]


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
def test_a_break_inside_the_buffer_is_a_gap_keeping_the_rest(futures: bool) -> None:
    sync = _sync_for(futures)
    a = (10, 12, 9, [["1", "1"]], [], 1)
    b = (15, 16, 13 if futures else 0, [["2", "1"]], [], 2)  # 13..14 missing
    for ev in (a, b):
        assert sync.on_event(*ev) == BUFFERED
    assert sync.on_snapshot(11, [["1", "5"]], [["9", "1"]]) == GAP
    assert not sync.book.synced and sync.buffer == [b]


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
def test_buffer_overflow_drops_the_buffer_and_restarts(futures: bool) -> None:
    sync = (BinanceFuturesSync if futures else BinanceSpotSync)(OrderBook("X"), max_buffer=3)
    statuses = [sync.on_event(i, i, i - 1, [], [], i) for i in range(1, 6)]
    assert statuses == [BUFFERED, BUFFERED, BUFFERED, OVERFLOW, BUFFERED]
    assert sync.overflows == 1 and [ev[0] for ev in sync.buffer] == [4, 5]


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
def test_an_update_that_crosses_the_book_breaks_it(futures: bool) -> None:
    sync = _sync_for(futures)
    assert sync.on_snapshot(100, [["10", "1"]], [["11", "1"]]) == SYNCED
    assert sync.on_event(100, 101, 100, [["11.5", "1"]], [], 5) == CROSSED
    assert not sync.live and sync.buffer == []


# ----- faults through the feed --------------------------------------------------------------------
FAULTS = ["drop", "stale", "crossed", "bad_json", "missing_field", "bad_level"]


def _expected(fault: str, futures: bool) -> tuple[dict[str, int], int]:
    """(resyncs by reason, malformed frames) one fault must produce."""
    if fault == "stale" and not futures:
        return {}, 0  # spot: an event already in the book is ignored (counted as stale)
    if fault == "crossed":
        return {"crossed_book": 1}, 0
    return {"sequence_gap": 1}, int(fault in ("bad_json", "missing_field", "bad_level"))


class Consumer:
    """What a ring reader would rebuild from the published events (checks every state)."""

    def __init__(self, v: Venue, snap_states: dict[int, tuple[Side, Side]]) -> None:
        self.truth = {ev.last: st for ev, st in zip(v.events, v.states, strict=True)} | snap_states
        self.book: tuple[Side, Side] | None = None
        self.seq = 0

    def __call__(self, e: object) -> None:
        if isinstance(e, BookSnapshot):
            self.book = ({p: q for p, q in e.bids}, {p: q for p, q in e.asks})
        elif isinstance(e, BookDelta):
            assert self.book is not None and e.prev_seq == self.seq, "delta without its base"
            for side, levels in zip(self.book, (e.bids, e.asks), strict=True):
                for p, q in levels:
                    _set(side, p, q)
        elif isinstance(e, Gap):
            self.book = None
            return
        else:
            return
        self.seq = e.seq
        assert self.book == self.truth[e.seq], f"published a wrong book at seq {e.seq}"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_fault_is_one_counted_resync_then_a_correct_book(
        futures: bool, fault: str, data: st.DataObject) -> None:
    v = data.draw(venues(futures))
    n = len(v.events)
    k0 = data.draw(st.integers(0, 2), label="first snapshot in event")
    r0 = data.draw(st.integers(0, 3), label="first snapshot delivered before event")
    j = data.draw(st.integers(max(k0, r0) + 2, n - 2), label="fault at event")
    k1 = data.draw(st.integers(j + 1, n - 1), label="second snapshot in event")
    r1 = data.draw(st.integers(j + 2, n), label="second snapshot delivered before event")
    snap0, state0 = v.snapshot(k0, data.draw(st.integers(0, 4)))
    snap1, state1 = v.snapshot(k1, data.draw(st.integers(0, 4)))
    consumer = Consumer(v, {snap0["lastUpdateId"]: state0, snap1["lastUpdateId"]: state1})
    events: list = []
    feed = _feed(v, lambda e: (events.append(e), consumer(e)))
    symbol = feed.symbols[0]
    frames: list[tuple[int, str]] = []  # (event index, frame text)
    for i, ev in enumerate(v.events):
        frame = _frame(v, ev)
        if i == j:
            if fault == "drop":
                continue
            if fault == "stale":
                frames.append((i, jsonlib.dumps(_frame(v, v.events[i - 1])).decode()))
            elif fault == "crossed":
                frame["data"]["b"] = ev.bids + [["99.00", "1"]]  # above every ask
            elif fault == "bad_json":
                frames.append((i, jsonlib.dumps(frame).decode()[:-7]))
                continue
            elif fault == "missing_field":
                del frame["data"]["u"]
            elif fault == "bad_level":
                frame["data"]["b"] = [["abc", "1"]] + ev.bids
        frames.append((i, jsonlib.dumps(frame).decode()))
    delivered = [False, False]
    for i, text in frames:
        for which, (r, body) in enumerate(((r0, snap0), (r1, snap1))):
            if not delivered[which] and i >= r:
                feed.apply_snapshot(symbol, body, 1, 1)
                delivered[which] = True
        feed.handle_frame(text, 2, 2)
    for which, body in enumerate((snap0, snap1)):
        if not delivered[which]:
            feed.apply_snapshot(symbol, body, 1, 1)
    resyncs, malformed = _expected(fault, futures)
    assert feed.stats.resyncs == resyncs
    assert feed.stats.malformed == malformed
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == sum(resyncs.values())
    assert sum(isinstance(e, BookSnapshot) for e in events) == 1 + len(gaps)
    assert feed.old_snapshots == 0
    book = feed.books[symbol]
    assert book.synced and _book_state(book) == v.states[-1]
    assert consumer.book == v.states[-1]
