"""The real Binance recordings (spot and USD-M, cryptofeed's samples) through the adapters.

Frames go to ``handle_frame`` in file order; each recorded REST snapshot is delivered through
``apply_snapshot`` at its recorded time (interleaved by timestamp). Every expectation is
computed independently from the recording with plain dicts and ``Decimal`` (no float keys,
no sync machine), then compared with what the feed emitted and with its books.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from supervisor.events import BookDelta, BookSnapshot, Gap, Trade
from supervisor.exchanges.base import BOOKS, TRADES, FeedConfig
from supervisor.exchanges.binance import BinanceFuturesFeed, BinanceSpotFeed, std_symbol
from supervisor.replay.recording import read_http, read_ws

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cryptofeed-sample"
if not FIXTURES.is_dir():  # a checkout elsewhere: the shared tree sits beside the work tree
    FIXTURES = Path("/work/shared/fixtures/cryptofeed-sample")

RECORDINGS = {
    # name: (feed class, market, does an event ending at u add to a snapshot at lid?)
    "BINANCE": (BinanceSpotFeed, "spot", lambda u, lid: u > lid),
    # USD-M also keeps the event ending at lid (it starts the pu chain), but it adds nothing
    "BINANCE_FUTURES": (BinanceFuturesFeed, "derivatives", lambda u, lid: u > lid),
}
CHECKPOINT_EVERY = 25  # frames


@dataclass
class Replay:
    feed: BinanceSpotFeed | BinanceFuturesFeed
    events: list
    frames: list[dict]  # parsed received frames, in order
    snapshots: dict[str, tuple[float, dict]]  # symbol -> (delivery time, body)
    checkpoints: list[tuple[int, dict[str, tuple[list, list]] | None]]
    crossed_after_sync: list[str]


def _ref_side(levels: dict[Decimal, str], best_high: bool) -> list[tuple[str, str]]:
    return [(str(p), levels[p]) for p in sorted(levels, reverse=best_high)]


def _replay(name: str) -> Replay:
    cls, market, _ = RECORDINGS[name]
    http = list(read_http(FIXTURES / f"{name}.http.0.0"))
    symbols = tuple(std_symbol(h.params["symbol"], market) for h in http)
    events: list = []
    feed = cls(FeedConfig(f"binance_{market}", "binance", market, symbols,
                          frozenset({BOOKS, TRADES})), events.append)
    recv = [ln for ln in read_ws(FIXTURES / f"{name}.ws.1.0") if ln.direction == "recv"]
    timeline = sorted([(ln.ts, 1, ln) for ln in recv] + [(h.ts, 0, h) for h in http],
                      key=lambda item: (item[0], item[1]))
    replay = Replay(feed, events, [json.loads(ln.message) for ln in recv],
                    {std_symbol(h.params["symbol"], market): (h.ts, json.loads(h.body))
                     for h in http}, [], [])
    frame_no = 0
    for ts, kind, item in timeline:
        t = int(ts * 1e9)
        if kind == 0:
            feed.apply_snapshot(std_symbol(item.params["symbol"], market), item.body, t, t)
            continue
        feed.handle_frame(item.message, t, t)
        frame_no += 1
        for symbol, book in feed.books.items():
            if book.synced and book.crossed():
                replay.crossed_after_sync.append(f"{symbol} after frame {frame_no}")
        if frame_no % CHECKPOINT_EVERY == 0 or frame_no == len(recv):
            state = {s: (b.bids.top(len(b.bids)), b.asks.top(len(b.asks)))
                     for s, b in feed.books.items() if b.synced}
            replay.checkpoints.append((frame_no, state))
    return replay


@pytest.fixture(scope="module", params=sorted(RECORDINGS))
def replay(request: pytest.FixtureRequest) -> tuple[str, Replay]:
    return request.param, _replay(request.param)


def _depth_events(replay: Replay) -> list[tuple[int, dict]]:
    """(frame number, depthUpdate payload) in recorded order."""
    return [(i + 1, f["data"]) for i, f in enumerate(replay.frames)
            if f["data"].get("e") == "depthUpdate"]


def _frame_times(name: str) -> list[float]:
    return [ln.ts for ln in read_ws(FIXTURES / f"{name}.ws.1.0") if ln.direction == "recv"]


def test_every_book_syncs_without_resyncs(replay: tuple[str, Replay]) -> None:
    _, r = replay
    assert r.feed.books_synced() == (4, 4)
    assert r.feed.stats.resyncs == {}
    assert r.feed.old_snapshots == 0
    assert not [e for e in r.events if isinstance(e, Gap)]


def test_nothing_in_the_recording_counts_as_malformed(replay: tuple[str, Replay]) -> None:
    _, r = replay
    assert r.feed.stats.malformed == 0
    assert r.feed.stats.messages == len(r.frames)


def test_streams_we_do_not_handle_are_ignored(replay: tuple[str, Replay]) -> None:
    _, r = replay
    unhandled = sum(1 for f in r.frames if f["data"].get("e") not in ("depthUpdate", "aggTrade"))
    assert unhandled > 0  # bookTicker and kline frames are in both recordings
    assert r.feed.ignored == unhandled


def test_event_counts_match_the_recording(replay: tuple[str, Replay]) -> None:
    name, r = replay
    applies = RECORDINGS[name][2]
    times = _frame_times(name)
    deltas = stale = 0
    for frame_no, d in _depth_events(r):
        symbol = std_symbol(d["s"], RECORDINGS[name][1])
        snap_ts, body = r.snapshots[symbol]
        if times[frame_no - 1] < snap_ts:
            continue  # buffered, folded into the published snapshot
        if applies(d["u"], body["lastUpdateId"]):
            deltas += 1
        else:
            stale += 1
    trades = sum(1 for f in r.frames if f["data"].get("e") == "aggTrade")
    counts = Counter(type(e).__name__ for e in r.events)
    assert counts == {"BookSnapshot": 4, "BookDelta": deltas, "Trade": trades}
    assert r.feed.stale_events == stale
    assert r.feed.stats.events == dict(counts)


def test_deltas_chain_onto_the_published_snapshot(replay: tuple[str, Replay]) -> None:
    _, r = replay
    last: dict[str, int] = {}
    for e in r.events:
        if isinstance(e, BookSnapshot):
            last[e.symbol] = e.seq
        elif isinstance(e, BookDelta):
            assert e.prev_seq == last[e.symbol], e
            assert e.seq > e.prev_seq
            last[e.symbol] = e.seq


def test_best_bid_below_best_ask_after_every_frame(replay: tuple[str, Replay]) -> None:
    _, r = replay
    assert r.crossed_after_sync == []
    for e in r.events:
        if isinstance(e, BookSnapshot):
            assert Decimal(e.bids[0][0]) < Decimal(e.asks[0][0])


def test_books_match_an_independent_rebuild_at_checkpoints(replay: tuple[str, Replay]) -> None:
    """Reference: the snapshot as Decimal-keyed dicts + every later event of that symbol."""
    name, r = replay
    _, market, applies = RECORDINGS[name]
    ref: dict[str, tuple[dict[Decimal, str], dict[Decimal, str]]] = {
        symbol: ({Decimal(p): q for p, q in body["bids"]},
                 {Decimal(p): q for p, q in body["asks"]})
        for symbol, (_, body) in r.snapshots.items()}
    depth = _depth_events(r)
    di = 0
    compared = 0
    for frame_no, state in r.checkpoints:
        while di < len(depth) and depth[di][0] <= frame_no:
            d = depth[di][1]
            di += 1
            symbol = std_symbol(d["s"], market)
            if not applies(d["u"], r.snapshots[symbol][1]["lastUpdateId"]):
                continue
            for side, key in ((ref[symbol][0], "b"), (ref[symbol][1], "a")):
                for p, q in d[key]:
                    if Decimal(q) == 0:
                        side.pop(Decimal(p), None)
                    else:
                        side[Decimal(p)] = q
        for symbol, (bids, asks) in state.items():
            assert [(str(Decimal(p)), q) for p, q in bids] == _ref_side(ref[symbol][0], True)
            assert [(str(Decimal(p)), q) for p, q in asks] == _ref_side(ref[symbol][1], False)
            compared += 1
    assert compared >= 2 * len(r.checkpoints)  # most checkpoints see every book


def test_published_levels_are_the_venue_strings(replay: tuple[str, Replay]) -> None:
    """No float round trip: every published price and size is a string from the frame."""
    _, r = replay
    for e in r.events:
        if isinstance(e, (BookSnapshot, BookDelta)):
            for level in list(e.bids) + list(e.asks):
                assert isinstance(level[0], str) and isinstance(level[1], str)
        elif isinstance(e, Trade):
            assert isinstance(e.price, str) and e.side in ("buy", "sell")


def test_trades_follow_the_recorded_aggtrades(replay: tuple[str, Replay]) -> None:
    name, r = replay
    market = RECORDINGS[name][1]
    want = [(std_symbol(d["s"], market), d["a"], d["p"], d["q"], "sell" if d["m"] else "buy",
             d["E"] * 1_000_000)
            for d in (f["data"] for f in r.frames) if d.get("e") == "aggTrade"]
    got = [(t.symbol, t.seq, t.price, t.size, t.side, t.ts_exchange)
           for t in r.events if isinstance(t, Trade)]
    assert got == want
