"""ZeroMQ mode (no ring segment): the analyzer process subscribes to a collector's PUB stream,
seeds books from its snapshot service, counts dropped documents by ``ring_seq``, re-seeds a
book whose chain broke, and publishes its own results.

The "collector" is the test: a PUB socket sending the collector's JSON documents and a
ROUTER answering with :func:`supervisor.collector.snapshots.snapshot_reply`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq

from supervisor import codec
from supervisor.book import OrderBook
from supervisor.collector.snapshots import snapshot_reply
from supervisor.events import BookDelta, Trade
from supervisor.statsblock import block_path
from tests.test_analyzer_process import Notify, wait_for

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("BTC-USDT", "ETH-USDT")


class FakeCollector:
    """Random-walk books for SYMBOLS, published as the collector does, plus snapshots."""

    def __init__(self, instance: str, pub: str, snap: str) -> None:
        self.instance = instance
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(pub)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(snap)
        self.lock = threading.Lock()
        self.books = {s: OrderBook(s) for s in SYMBOLS}
        for i, book in enumerate(self.books.values()):
            base = 100 * (i + 1)
            book.load([[f"{base - k}", "1"] for k in range(1, 6)],
                      [[f"{base + k}", "1"] for k in range(1, 6)], 1000)
        self.ring_seq = 0
        self.drop = 0  # documents to skip (counted as published, never sent)
        self.dropped = 0
        self.snapshots = 0
        self.rng = random.Random(5)
        self.running = True
        self.publishing = True
        self.threads = [threading.Thread(target=self._publish, daemon=True),
                        threading.Thread(target=self._serve, daemon=True)]
        for t in self.threads:
            t.start()

    def _event(self):
        symbol = self.rng.choice(SYMBOLS)
        book = self.books[symbol]
        now = time.time_ns()
        if self.rng.random() < 0.2:
            return Trade(symbol, 0, now, now, time.monotonic_ns(), "1", "buy",
                         book.asks.best()[0], "0.5")
        base = 100 * (SYMBOLS.index(symbol) + 1)
        bids = [[f"{base - self.rng.randint(1, 8)}", str(self.rng.randint(0, 3))]]
        asks = [[f"{base + self.rng.randint(1, 8)}", str(self.rng.randint(0, 3))]]
        ev = BookDelta(symbol, book.seq + self.rng.randint(1, 3), now, now,
                       time.monotonic_ns(), book.seq, bids, asks)
        book.apply(bids, asks, ev.seq)
        return ev

    def _publish(self) -> None:
        while self.running and self.publishing:
            with self.lock:
                ev = self._event()
                self.ring_seq += 1
                if self.drop:
                    self.drop -= 1
                    self.dropped += 1
                    continue
                doc = json.loads(codec.to_json(self.instance, ev))
                doc["ring_seq"] = self.ring_seq
                self.pub.send_multipart([codec.topic(self.instance, ev),
                                         json.dumps(doc).encode()])
            time.sleep(0.0005)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while self.running:
            if not poller.poll(50):
                continue
            frames = self.router.recv_multipart()
            with self.lock:
                reply = snapshot_reply(self.instance, self.books, frames[-1], self.ring_seq)
                self.snapshots += 1
            self.router.send_multipart([frames[0], json.dumps(reply).encode()])

    def best(self, symbol: str) -> tuple[float, float]:
        with self.lock:
            b = self.books[symbol]
            return float(b.bids.best()[0]), float(b.asks.best()[0])

    def close(self) -> None:
        self.running = False
        for t in self.threads:
            t.join()
        self.pub.close(0)
        self.router.close(0)
        self.ctx.term()


@pytest.fixture
def zmq_rig(tmp_path):
    ipc = tempfile.mkdtemp(prefix="mpz")  # short: ipc:// paths are AF_UNIX paths
    instance = "z" + uuid.uuid4().hex[:10]
    endpoints = {k: f"ipc://{ipc}/{k}" for k in ("pub", "snap", "results")}
    collector = FakeCollector(instance, endpoints["pub"], endpoints["snap"])
    config = tmp_path / "marketprism.toml"
    config.write_text(textwrap.dedent(f"""
        [service]
        state_dir = "{tmp_path}"
        [instances.{instance}]
        exchange = "binance"
        market = "spot"
        symbols = {list(SYMBOLS)!r}
        zmq_pub = "{endpoints['pub']}"
        zmq_snapshot = "{endpoints['snap']}"
        [instances.{instance}.analyzer]
        zmq_pub = "{endpoints['results']}"
        [instances.{instance}.analyzer.settings]
        snapshot_timeout = 0.5
        ring_wait = 0
        """).replace("'", '"'))
    notify = Notify()
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, PYTHONPATH=str(ROOT),
               MARKETPRISM_SHM_DIR=str(tmp_path))  # no ring segment there: ZeroMQ mode
    log = tmp_path / "analyzer.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor.analyzer.main", instance,
                                 "--config", str(config)], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    yield collector, proc, notify, log, endpoints, instance
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    collector.close()
    notify.close()
    shutil.rmtree(ipc, ignore_errors=True)
    path = block_path(f"{instance}.analyzer")
    if os.path.exists(path):
        os.unlink(path)


def stats(instance):
    from supervisor.statsblock import StatsBlockError, read_block
    try:
        return read_block(f"{instance}.analyzer")[0]
    except StatsBlockError:
        return {}


def in_sync(collector, instance):
    s = stats(instance)
    if s.get("state") != "running":
        return False
    for symbol in SYMBOLS:
        a = s.get("analysis", {}).get(symbol, {})
        if not a.get("book_valid") or (a.get("best_bid"), a.get("best_ask")) != \
                collector.best(symbol):
            return False
    return True


def test_zeromq_mode_seeds_books_counts_drops_and_reseeds_after_a_gap(zmq_rig):
    collector, proc, notify, log, endpoints, instance = zmq_rig
    wait_for(lambda: notify.lines("READY=1"), 30, "READY=1", proc=proc)
    assert "consuming " + endpoints["pub"] + " over ZeroMQ" in log.read_text()
    wait_for(lambda: stats(instance).get("books_valid") == 2, 20, "books seeded", proc=proc)
    results = zmq.Context.instance().socket(zmq.SUB)
    results.setsockopt(zmq.SUBSCRIBE, f"{instance}/analysis/".encode())
    results.connect(endpoints["results"])
    with collector.lock:
        collector.drop = 25  # lost on the way: deltas of both books among them
    wait_for(lambda: stats(instance).get("lost") == 25, 20, "the drop counted", proc=proc)
    assert stats(instance)["overruns"] == 1
    collector.publishing = False  # the analyzer must end on exactly the collector's books
    collector.threads[0].join()
    wait_for(lambda: in_sync(collector, instance), 20, "books equal the collector's",
             proc=proc)
    s = stats(instance)
    assert s["lost"] == collector.dropped == 25
    # each broken chain (a dropped delta of that book) cost exactly one re-seed
    assert 1 <= s["sequence_gaps"] <= 2 and s["seeds"] == 2 + s["sequence_gaps"]
    assert s["quality"]["totals"] == dict.fromkeys(s["quality"]["totals"], 0)
    docs = []
    while results.poll(2000 if not docs else 100):
        topic, body = results.recv_multipart()
        docs.append(json.loads(body))
    assert docs and all(d["ring_seq"] > 0 and d["type"] == "analysis" for d in docs)
    results.close(0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "STOPPING=1" in notify.lines()
