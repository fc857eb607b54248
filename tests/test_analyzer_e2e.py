"""Replay exchange -> collector process -> ring -> analyzer process, end to end.

The analyzer's books are checked against an independent rebuild from the same ring records
(supervisor.book.OrderBook over the decoded events), after a replay fault made the collector
resync a book mid-stream.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from supervisor import codec, statsblock
from supervisor.book import OrderBook
from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.replay.harness import ReplayThread
from tests.test_analyzer_process import Notify, wait_for

shm = pytest.importorskip("shm")
ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTC-USDT-PERP", "ETH-USDT-PERP"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def replay():
    with ReplayThread(port=0, rate=300, seed=23) as rx:
        yield rx


def block(name: str) -> dict:
    try:
        return statsblock.read_block(name)[0]
    except statsblock.StatsBlockError:
        return {}


def rebuild(ring: str) -> dict[str, OrderBook]:
    """Every book as the ring's records say, from the oldest record (the ring never wrapped)."""
    reader = shm.RingReader(ring, start="oldest", batch_records=65536)
    books: dict[str, OrderBook] = {}
    try:
        while True:
            batch = reader.read_batch()
            if not batch.count:
                return books
            assert batch.first_seq == 1 or books, "the ring wrapped"
            for i in range(batch.count):
                ev = codec.decode(batch.types[i], batch.payload(i))
                book = books.setdefault(ev.symbol, OrderBook(ev.symbol))
                if isinstance(ev, BookSnapshot):
                    book.load(ev.bids, ev.asks, ev.seq)
                elif isinstance(ev, BookDelta):
                    book.apply(ev.bids, ev.asks, ev.seq)
                elif isinstance(ev, Gap):
                    book.invalidate()
    finally:
        reader.close()


def test_analyzer_follows_a_real_collector_through_a_resync(tmp_path, replay):
    name = f"e{uuid.uuid4().hex[:6]}_binance_derivatives"
    ws, rest = replay.endpoints("binance_derivatives")
    cfg = tmp_path / "marketprism.toml"
    cfg.write_text(textwrap.dedent(f"""
        [service]
        state_dir = "{tmp_path}"
        [instances.{name}]
        exchange = "binance"
        market = "derivatives"
        symbols = ["BTC-USDT-PERP", "ETH-USDT-PERP"]
        ws_url = "{ws}"
        rest_url = "{rest}"
        zmq_pub = "tcp://127.0.0.1:{free_port()}"
        zmq_snapshot = "tcp://127.0.0.1:{free_port()}"
        ring_capacity = 16777216
        [instances.{name}.analyzer]
        zmq_pub = "tcp://127.0.0.1:{free_port()}"
        """))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MARKETPRISM_SHM_DIR", None)
    procs: list[subprocess.Popen] = []
    notify = Notify()
    log = tmp_path / "analyzer.log"

    def start(module: str, **extra: str) -> subprocess.Popen:
        out = open(log if "analyzer" in module else tmp_path / "collector.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", module, name, "--config", str(cfg)],
                             env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT,
                             cwd=ROOT)
        out.close()
        procs.append(p)
        return p

    try:
        collector = start("supervisor.collector.main")
        wait_for(lambda: block(name).get("books_synced") == 2, 30, "collector in sync",
                 proc=collector)
        analyzer = start("supervisor.analyzer.main", NOTIFY_SOCKET=notify.path)
        wait_for(lambda: notify.lines("READY=1"), 30, "analyzer READY", proc=analyzer)
        wait_for(lambda: block(f"{name}.analyzer").get("books_valid") == 2, 30,
                 "analyzer books", proc=analyzer)
        replay.inject("binance_derivatives", "drop", symbol="BTC-USDT-PERP")
        wait_for(lambda: block(f"{name}.analyzer").get("upstream_gaps") == {"sequence_gap": 1},
                 30, "the collector's Gap reached the analyzer", proc=analyzer)
        wait_for(lambda: block(f"{name}.analyzer").get("books_valid") == 2, 30,
                 "the book back after the collector's new snapshot", proc=analyzer)
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(timeout=20) == 0
        last = shm.ring_stats(name).last_seq
        wait_for(lambda: block(f"{name}.analyzer").get("committed_seq") == last, 30,
                 "analyzer caught up with the stopped ring", proc=analyzer)
        wait_for(lambda: block(f"{name}.analyzer").get("ring_seq") == last, 10, "stats")
        ref = rebuild(name)
        s = block(f"{name}.analyzer")
        assert s["events"] == last and s["lost"] == 0 and s["sequence_gaps"] == 0
        assert s["quality"]["totals"] == dict.fromkeys(s["quality"]["totals"], 0)
        for symbol in SYMBOLS:
            a = s["analysis"][symbol]
            book = ref[symbol]
            assert a["book_valid"] and book.synced
            assert (a["best_bid"], a["best_ask"]) == (float(book.bids.best()[0]),
                                                      float(book.asks.best()[0]))
            assert a["book_levels"] == len(book.bids) + len(book.asks)
        analyzer.send_signal(signal.SIGTERM)
        assert analyzer.wait(timeout=20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        notify.close()
        for remove in (lambda: shm.remove_ring(name, force=True),
                       lambda: os.unlink(statsblock.block_path(name)),
                       lambda: os.unlink(statsblock.block_path(f"{name}.analyzer"))):
            try:
                remove()
            except (shm.RingError, FileNotFoundError):
                pass
