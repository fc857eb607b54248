"""Shared helpers of the analyzer tests (no tests here).

- :class:`FakeBatch`: events encoded with the real codec into the shape of ``shm.Batch``,
  for unit tests of the engine without a ring;
- :func:`binance_recording` / :func:`deribit_recording`: the shared real recordings run
  through the real adapters, giving the normalized events a collector would publish;
- :func:`docs_of`: the same events as the collector's ZeroMQ JSON documents.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from supervisor import codec
from supervisor.analyzer.engine import Engine
from supervisor.analyzer.settings import Settings
from supervisor.events import Event
from supervisor.exchanges.base import BOOKS, FUNDING, OPEN_INTEREST, TRADES, FeedConfig
from supervisor.replay.recording import read_http, read_ws

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cryptofeed-sample"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/fixtures/cryptofeed-sample")
NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # an arbitrary wall-clock origin for synthetic events


class FakeBatch:
    """Encoded records laid out like ``shm.Batch`` (payloads 8-byte aligned in ``data``)."""

    def __init__(self, first_seq: int, events: list[Event], lost: int = 0) -> None:
        enc = codec.Encoder()
        data = bytearray()
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.types: list[int] = []
        for ev in events:
            kind, view = enc.encode(ev)
            self.offsets.append(len(data))
            self.lengths.append(len(view))
            self.types.append(kind)
            data += view
            data += b"\0" * (-len(data) % 8)
        self.data = memoryview(bytes(data))
        self.count = len(events)
        self.first_seq = first_seq
        self.lost = lost


def make_engine(log: logging.Logger | None = None, **settings: Any) -> Engine:
    return Engine("test", Settings(**settings), log or logging.getLogger("test.analyzer"))


def feed(engine: Engine, events: list[Event], first_seq: int = 1, batch: int = 256) -> int:
    """Run events through ``engine.process_batch`` in batches; returns the next seq."""
    seq = first_seq
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        engine.process_batch(FakeBatch(seq, chunk))
        seq += len(chunk)
    return seq


def docs_of(events: list[Event], instance: str = "test", first_ring_seq: int = 1
            ) -> list[dict[str, Any]]:
    """The collector's ZeroMQ documents for ``events`` (as parsed JSON)."""
    out = []
    for i, ev in enumerate(events):
        doc = json.loads(codec.to_json(instance, ev))
        doc["ring_seq"] = first_ring_seq + i
        out.append(doc)
    return out


def binance_recording(name: str) -> list[Event]:
    """``BINANCE`` (spot) or ``BINANCE_FUTURES`` through the Binance adapter.

    REST snapshots are delivered at their recorded time, interleaved with the frames, as
    tests/test_binance_recordings.py does; receive times are the recorded ones.
    """
    from supervisor.exchanges.binance import BinanceFuturesFeed, BinanceSpotFeed, std_symbol

    market = "derivatives" if name == "BINANCE_FUTURES" else "spot"
    cls = BinanceFuturesFeed if market == "derivatives" else BinanceSpotFeed
    http = list(read_http(FIXTURES / f"{name}.http.0.0"))
    symbols = tuple(std_symbol(h.params["symbol"], market) for h in http)
    events: list[Event] = []
    feed_ = cls(FeedConfig(f"binance_{market}", "binance", market, symbols,
                           frozenset({BOOKS, TRADES})), events.append,
                logging.getLogger("test.binance"))
    recv = [ln for ln in read_ws(FIXTURES / f"{name}.ws.1.0") if ln.direction == "recv"]
    timeline = sorted([(ln.ts, 1, ln) for ln in recv] + [(h.ts, 0, h) for h in http],
                      key=lambda item: (item[0], item[1]))
    for ts, kind, item in timeline:
        t = int(ts * 1e9)
        if kind == 0:
            feed_.apply_snapshot(std_symbol(item.params["symbol"], market), item.body, t, t)
        else:
            feed_.handle_frame(item.message, t, t)
    return events


def deribit_recording() -> list[Event]:
    """``DERIBIT.ws.1.0`` through the Deribit adapter (books, open interest, funding)."""
    from supervisor.exchanges.deribit import DeribitFeed

    lines = list(read_ws(FIXTURES / "DERIBIT.ws.1.0"))
    sent = [ln.message for ln in lines if ln.direction == "sent"]
    channels = json.loads(sent[0])["params"]["channels"]
    insts = tuple(sorted({c.split(".")[1] for c in channels if c.startswith("book.")}))
    events: list[Event] = []
    feed_ = DeribitFeed(FeedConfig("deribit_derivatives", "deribit", "derivatives", insts,
                                   frozenset({BOOKS, TRADES, FUNDING, OPEN_INTEREST})),
                        events.append, logging.getLogger("test.deribit"))
    for ln in lines:
        if ln.direction == "recv":
            t = int(ln.ts * 1e9)
            feed_.handle_frame(ln.message, t, t)
    return events


def recordings() -> dict[str, list[Event]]:
    return {"BINANCE": binance_recording("BINANCE"),
            "BINANCE_FUTURES": binance_recording("BINANCE_FUTURES"),
            "DERIBIT": deribit_recording()}
