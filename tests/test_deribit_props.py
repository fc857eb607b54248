"""Property tests of the Deribit book sync against a reference model.

A simulated venue keeps the true book (decimal text -> decimal text) and writes frames with
those exact numeric texts; the adapter parses them as floats and publishes ``repr`` strings.
Books are compared as ``Decimal`` values, so the tests also check that no value changes on
the way through.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import jsonlib
from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.exchanges.base import BOOKS, TRADES
from supervisor.exchanges.deribit import SUBSCRIBE, from_venue_symbol, to_venue_symbol
from tests.test_deribit import book_as_decimals, make_feed

INST = "BTC-PERPETUAL"
SYMBOL = "BTC-USD-PERP"
CHANNEL = f"book.{INST}.100ms"
TICK_SIZES = ["0.5", "0.0005", "1", "2.5", "0.01"]
BID_TICKS = range(1, 41)  # bids and asks of a valid stream never cross
ASK_TICKS = range(41, 81)
PROPS = settings(max_examples=75, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


AMOUNTS = st.integers(1, 10**6)  # amount = k * 0.1


def _amount(k: int) -> str:
    return str(k * Decimal("0.1"))


class Venue:
    """The venue's true book for one instrument, and the frames describing it."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.tick = Decimal(draw(st.sampled_from(TICK_SIZES)))
        self.change_id = draw(st.integers(1, 10**12))
        self.sides: tuple[dict[Decimal, str], dict[Decimal, str]] = ({}, {})

    def price(self, tick: int) -> str:
        return str(tick * self.tick)

    def snapshot(self) -> str:
        self.change_id += self.draw(st.integers(1, 1000))
        for side, ticks in zip(self.sides, (BID_TICKS, ASK_TICKS), strict=True):
            drawn = self.draw(st.dictionaries(st.sampled_from(ticks), AMOUNTS, max_size=12))
            side.clear()
            side.update((Decimal(self.price(t)), _amount(k)) for t, k in drawn.items())
        levels = [",".join(f'["new",{p},{a}]' for p, a in side.items()) for side in self.sides]
        return self._frame("snapshot", levels, None)

    def change(self, apply: bool = True) -> str:
        prev = self.change_id
        self.change_id += self.draw(st.integers(1, 1000))
        levels = []
        for side, ticks in zip(self.sides, (BID_TICKS, ASK_TICKS), strict=True):
            out = []
            ops = self.draw(st.lists(st.tuples(st.sampled_from(ticks), AMOUNTS, st.booleans()),
                                     max_size=5, unique_by=lambda op: op[0]))
            for t, k, delete in ops:
                key = Decimal(self.price(t))
                action = "new" if key not in side else ("delete" if delete else "change")
                amount = "0.0" if action == "delete" else _amount(k)
                out.append(f'["{action}",{self.price(t)},{amount}]')
                if apply:
                    side.pop(key, None) if action == "delete" else side.__setitem__(key, amount)
            levels.append(",".join(out))
        return self._frame("change", levels, prev)

    def crossing_change(self) -> str:
        """A bogus change putting a bid and an ask at one price (the venue never sends it)."""
        prev = self.change_id
        self.change_id += 1
        p = self.price(self.draw(st.sampled_from(ASK_TICKS)))
        return self._frame("change", [f'["new",{p},1.0]', f'["new",{p},1.0]'], prev)

    def _frame(self, kind: str, levels: list[str], prev: int | None) -> str:
        prev_text = "" if prev is None else f'"prev_change_id":{prev},'
        return ('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"' + CHANNEL
                + '","data":{"type":"' + kind + '","timestamp":1626993724318,'
                + f'"instrument_name":"{INST}",{prev_text}"change_id":{self.change_id},'
                + f'"bids":[{levels[0]}],"asks":[{levels[1]}]' + "}}}")

    def reference(self) -> tuple[list[Any], list[Any]]:
        bids, asks = ({p: Decimal(a) for p, a in side.items()} for side in self.sides)
        return sorted(bids.items(), reverse=True), sorted(asks.items())


def _send(feed: Any, frame: str | bytes) -> None:
    feed.handle_frame(frame, 1, 2)


@PROPS
@given(st.data())
def test_random_valid_change_sequences_equal_the_reference_model(data: st.DataObject) -> None:
    feed, events = make_feed((SYMBOL,), frozenset({BOOKS}))
    venue = Venue(data.draw)
    _send(feed, venue.snapshot())
    assert book_as_decimals(feed, SYMBOL) == venue.reference()
    n = data.draw(st.integers(0, 40))
    for _ in range(n):
        _send(feed, venue.change())
        assert book_as_decimals(feed, SYMBOL) == venue.reference()
    assert feed.stats.resyncs == {} and feed.stats.malformed == 0
    assert feed.stats.events == ({"BookSnapshot": 1, "BookDelta": n} if n else
                                 {"BookSnapshot": 1})
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert all(d.prev_seq == e.seq for e, d in zip(events, deltas, strict=False))


FAULTS = ["gap", "crossed", "truncated", "missing_field", "rpc_error"]
REASON = {"gap": "sequence_gap", "crossed": "crossed_book", "truncated": "sequence_gap",
          "missing_field": "sequence_gap", "rpc_error": "snapshot_failed"}
FIELDS = ["type", "prev_change_id", "change_id", "timestamp", "bids", "asks", "channel",
          "data", "params"]


def _without(frame: str, field: str) -> str:
    msg = json.loads(frame)
    holder = msg if field == "params" else (
        msg["params"] if field in ("channel", "data") else msg["params"]["data"])
    del holder[field]
    return json.dumps(msg)


@PROPS
@given(st.data(), st.lists(st.sampled_from(FAULTS), min_size=1, max_size=6))
def test_every_fault_gives_one_counted_resync_and_a_correct_book_after(
        data: st.DataObject, faults: list[str]) -> None:
    feed, events = make_feed((SYMBOL,), frozenset({BOOKS}))
    venue = Venue(data.draw)
    _send(feed, venue.snapshot())
    expected: dict[str, int] = {}
    malformed = 0
    for fault in faults:
        for _ in range(data.draw(st.integers(0, 3))):
            _send(feed, venue.change())
            assert book_as_decimals(feed, SYMBOL) == venue.reference()
        if fault == "gap":
            venue.change()  # lost on the way
        elif fault == "crossed":
            _send(feed, venue.crossing_change())
        elif fault == "truncated":
            frame = venue.change()
            _send(feed, frame[: data.draw(st.integers(1, len(frame) - 1))])
            malformed += 1
        elif fault == "missing_field":
            _send(feed, _without(venue.change(), data.draw(st.sampled_from(FIELDS))))
            malformed += 1
        else:
            req = feed.request(SUBSCRIBE, {"channels": [CHANNEL]}, [CHANNEL])
            _send(feed, json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                    "error": {"code": 10028, "message": "too_many_requests"}}))
        _send(feed, venue.change())  # exposes a silent loss; skipped once the book is invalid
        expected[REASON[fault]] = expected.get(REASON[fault], 0) + 1
        assert not feed.books[SYMBOL].synced
        _send(feed, venue.snapshot())  # what resubscribing brings
        assert feed.books[SYMBOL].synced
        assert book_as_decimals(feed, SYMBOL) == venue.reference()
    for _ in range(data.draw(st.integers(0, 3))):
        _send(feed, venue.change())
    assert book_as_decimals(feed, SYMBOL) == venue.reference()
    assert feed.stats.resyncs == expected
    assert feed.stats.malformed == malformed
    assert feed.stats.subscribe_errors == faults.count("rpc_error")
    assert [e.reason for e in events if isinstance(e, Gap)] == [REASON[f] for f in faults]
    assert sum(isinstance(e, BookSnapshot) for e in events) == len(faults) + 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _mutate(msg: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following ``path`` (indices taken mod width) with ``value``."""
    parent: Any = None
    key: Any = None
    node = msg
    for step in path:
        if isinstance(node, dict) and node:
            k: Any = sorted(node)[step % len(node)]
        elif isinstance(node, list) and node:
            k = step % len(node)
        else:
            break
        parent, key, node = node, k, node[k]
    if parent is not None:
        parent[key] = value
    return msg


@PROPS
@given(st.data(), st.one_of(st.binary(max_size=64), st.text(max_size=64),
                            JSON.map(json.dumps)))
def test_arbitrary_input_never_raises_and_never_leaves_a_crossed_book(
        data: st.DataObject, junk: str | bytes) -> None:
    feed, _ = make_feed((SYMBOL,), frozenset({BOOKS, TRADES}))
    venue = Venue(data.draw)
    _send(feed, venue.snapshot())
    _send(feed, junk)
    frame = json.loads(venue.change())
    path = data.draw(st.lists(st.integers(0, 7), min_size=1, max_size=5))
    _send(feed, json.dumps(_mutate(frame, path, data.draw(JSON))))
    _send(feed, venue.change())
    book = feed.books[SYMBOL]
    assert feed.stats.messages == 4
    assert not (book.synced and book.crossed())


@given(st.from_regex(r"[A-Z]{2,5}", fullmatch=True), st.sampled_from(["USD", "USDC", "USDT"]))
def test_perpetual_symbols_round_trip(base: str, quote: str) -> None:
    ours = f"{base}-{quote}-PERP"
    assert from_venue_symbol(to_venue_symbol(ours)) == ours


@given(st.integers(1, 10**15 - 1), st.integers(-12, 6))
def test_repr_of_a_parsed_decimal_of_15_digits_is_the_same_value(digits: int, exp: int) -> None:
    """The exactness argument in the module docstring, through the adapter's own parser."""
    text = str(Decimal(digits).scaleb(exp))  # e.g. "0.0015", "1.23E+7": valid JSON numbers
    assert Decimal(repr(jsonlib.loads(text))) == Decimal(text)
