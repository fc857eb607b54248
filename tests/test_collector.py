"""The collector as systemd runs it: a real process against the replay exchange.

Notifications are recorded on a datagram socket standing in for ``$NOTIFY_SOCKET``; events
are read back from the real ring and a real ZeroMQ subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
import zmq

import shm
from supervisor import codec, config, jsonlib, statsblock
from supervisor.collector.main import Collector
from supervisor.events import BookDelta, BookSnapshot, Gap
from supervisor.replay.harness import ReplayThread


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30.0,
             interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifyRecorder:
    """A stand-in for systemd's notify socket: records (monotonic time, message)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mpn")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def poll(self) -> list[tuple[float, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append((time.monotonic(), data.decode()))

    def has(self, prefix: str) -> bool:
        return any(m.startswith(prefix) for _, m in self.poll())

    def times(self, prefix: str) -> list[float]:
        return [t for t, m in self.poll() if m.startswith(prefix)]

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture(scope="module")
def replay():
    with ReplayThread(port=0, rate=300, seed=11, okx_checksum=True) as rx:
        yield rx


@pytest.fixture
def notify():
    rec = NotifyRecorder()
    yield rec
    rec.close()


class Instance:
    """A uniquely named instance config pointing at the replay exchange."""

    def __init__(self, tmp_path, rx, venue: str, symbols: list[str], **extra) -> None:
        self.venue = venue
        self.name = f"t{uuid.uuid4().hex[:6]}_{venue}"
        self.ring = self.name
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.snap = f"tcp://127.0.0.1:{free_port()}"
        ws, rest = rx.endpoints(venue)
        exchange, market = venue.split("_")
        lines = [f"[instances.{self.name}]", f'exchange = "{exchange}"',
                 f'market = "{market}"', f"symbols = {symbols!r}".replace("'", '"'),
                 f'ws_url = "{ws}"', f'rest_url = "{rest}"', f'zmq_pub = "{self.pub}"',
                 f'zmq_snapshot = "{self.snap}"', "ring_capacity = 4194304"]
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
        self.path = tmp_path / f"{self.name}.toml"
        self.path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, notify: NotifyRecorder | None = None, watchdog_usec: int = 0,
              preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
        env = dict(os.environ)
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.path
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.collector.main", self.name, "--config",
             str(self.path)], env=env, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        return self.proc

    def stats(self) -> dict:
        try:
            return statsblock.read_block(self.name)[0]
        except statsblock.StatsBlockError:
            return {}

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for remove in (lambda: shm.remove_ring(self.ring),
                       lambda: os.unlink(statsblock.block_path(self.name))):
            try:
                remove()
            except (shm.RingError, FileNotFoundError):
                pass


@pytest.fixture
def make_instance(tmp_path, replay):
    made: list[Instance] = []

    def make(venue: str, symbols: list[str], **extra) -> Instance:
        inst = Instance(tmp_path, replay, venue, symbols, **extra)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.cleanup()


def test_ready_waits_for_a_slow_snapshot_and_extends_the_timeout(make_instance, replay,
                                                                  notify):
    inst = make_instance("binance_derivatives", ["BTC-USDT-PERP", "ETH-USDT-PERP"])
    replay.inject("binance_derivatives", "slow_snapshot", symbol="ETH-USDT-PERP", seconds=3)
    t0 = time.monotonic()
    inst.start(notify, watchdog_usec=2_000_000)
    wait_for("READY=1", lambda: notify.has("READY=1"))
    ready_at = notify.times("READY=1")[0]
    assert ready_at - t0 >= 3.0  # not before the slow book synced
    extends = notify.times("EXTEND_TIMEOUT_USEC=")
    assert extends and extends[0] < ready_at  # asked systemd for time while waiting
    assert not [t for t in notify.times("WATCHDOG=1") if t < ready_at]
    ready_msg = next(m for _, m in notify.poll() if m.startswith("READY=1"))
    assert "STATUS=2/2 books synced" in ready_msg
    # Both books' snapshots are in the ring by the time READY went out.
    reader = shm.RingReader(inst.ring, start="oldest")
    kinds = {(codec.decode(r.type_id, r.payload).symbol, r.type_id) for r in reader.read_batch()}
    assert {("BTC-USDT-PERP", 1), ("ETH-USDT-PERP", 1)} <= kinds
    reader.close()
    wait_for("watchdog pings", lambda: len(notify.times("WATCHDOG=1")) >= 2)
    rc, err = inst.stop()
    assert rc == 0, err


def _thread_policies(pid: int) -> set[int]:
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("policy", ["other", "fifo"])
def test_zeromq_threads_yield_to_the_event_loop_under_any_scheduling_policy(make_instance,
                                                                            notify, policy):
    """libzmq's I/O thread goes to SCHED_BATCH under the default policy; under a realtime
    one (CPUSchedulingPolicy=fifo) it keeps the inherited policy instead of aborting."""
    def realtime() -> None:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))

    if policy == "fifo" and os.geteuid() != 0:
        pytest.skip("SCHED_FIFO needs root")
    inst = make_instance("okx_spot", ["BTC-USDT"])
    proc = inst.start(notify, preexec_fn=realtime if policy == "fifo" else None)
    wait_for("READY=1", lambda: notify.has("READY=1") or proc.poll() is not None)
    assert proc.poll() is None, inst.stop()[1]
    main = os.SCHED_FIFO if policy == "fifo" else os.SCHED_OTHER
    want = {main} if policy == "fifo" else {main, os.SCHED_BATCH}
    assert _thread_policies(proc.pid) == want
    rc, err = inst.stop()
    assert rc == 0, err


def test_sigterm_sends_stopping_and_marks_the_ring_stopped(make_instance, notify):
    inst = make_instance("okx_spot", ["BTC-USDT"])
    inst.start(notify)
    wait_for("READY=1", lambda: notify.has("READY=1"))
    assert shm.ring_stats(inst.ring).writer_state == "running"
    rc, err = inst.stop()
    assert rc == 0, err
    assert notify.has("STOPPING=1")
    assert shm.ring_stats(inst.ring).writer_state == "stopped"
    assert "stopped cleanly" in err
    assert inst.stats()["status"] == "stopped"


def test_stale_feed_starves_the_watchdog_until_data_returns(make_instance, replay, notify):
    inst = make_instance("deribit_derivatives", ["BTC-USD-PERP"], stale_after=1.0)
    inst.start(notify, watchdog_usec=400_000)
    wait_for("READY=1", lambda: notify.has("READY=1"))
    wait_for("pings", lambda: len(notify.times("WATCHDOG=1")) >= 3)
    replay.inject("deribit", "stall", seconds=3)
    stalled_at = time.monotonic()
    wait_for("pings after the stall", lambda: any(
        t > stalled_at + 3.0 for t in notify.times("WATCHDOG=1")), timeout=20)
    pings = notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) >= 1.5  # starved while no data arrived
    rc, err = inst.stop()
    assert rc == 0 and "not feeding the watchdog: no data" in err


def test_blocked_event_loop_starves_the_watchdog(make_instance, notify, monkeypatch, caplog):
    inst = make_instance("binance_spot", ["BTC-USDT"], max_loop_lag=0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    cfg = config.load(str(inst.path))
    collector = Collector(cfg, cfg.instance(inst.name), logging.getLogger("test"))

    async def scenario() -> int:
        task = asyncio.ensure_future(collector.run(signals=False))
        while len(notify.times("WATCHDOG=1")) < 3:
            await asyncio.sleep(0.05)
        time.sleep(1.5)  # the loop is blocked: nothing can ping
        blocked_until = time.monotonic()
        while not [t for t in notify.times("WATCHDOG=1") if t > blocked_until]:
            await asyncio.sleep(0.05)
        collector.request_stop()
        return await task

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == 0
    pings = notify.times("WATCHDOG=1")
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) >= 1.5
    assert "not feeding the watchdog: event loop lag" in caplog.text


FAULTS = [
    # (instance venue, replay venue, fault, params, counter check)
    ("binance_derivatives", "binance_derivatives", "drop", {},
     lambda s: s["resyncs"].get("sequence_gap", 0) == 1),
    ("binance_spot", "binance_spot", "disconnect", {},
     lambda s: s["reconnects"] == 1 and s["resyncs"].get("disconnect", 0) == 1),
    ("binance_spot", "binance_spot", "malformed", {},
     lambda s: s["malformed"] == 1),
    ("okx_spot", "okx", "bad_checksum", {},
     lambda s: s["resyncs"].get("checksum_mismatch", 0) == 1),
    ("okx_spot", "okx", "reset", {},
     lambda s: s["resyncs"].get("sequence_reset", 0) == 1),
    ("deribit_derivatives", "deribit", "drop", {},
     lambda s: s["resyncs"].get("sequence_gap", 0) == 1),
]


@pytest.mark.parametrize("venue, rvenue, fault, params, check", FAULTS,
                         ids=[f"{v}-{f}" for v, _, f, _, _ in FAULTS])
def test_replay_fault_is_counted_and_the_book_recovers(make_instance, replay, venue, rvenue,
                                                       fault, params, check):
    symbol = {"binance_derivatives": "BTC-USDT-PERP", "deribit_derivatives": "BTC-USD-PERP"}.get(
        venue, "BTC-USDT")
    inst = make_instance(venue, [symbol])
    inst.start()
    wait_for("first sync", lambda: inst.stats().get("books_synced") == 1)
    replay.inject(rvenue, fault, symbol=symbol, **params)
    wait_for(f"{fault} counted", lambda: check(inst.stats()) and inst.stats())
    wait_for("book back in sync", lambda: inst.stats().get("books_synced") == 1)
    stats = inst.stats()
    assert check(stats), stats  # exactly one, not more
    rc, err = inst.stop()
    assert rc == 0, err


def test_ring_and_zeromq_carry_the_same_events(make_instance):
    inst = make_instance("binance_derivatives", ["BTC-USDT-PERP"])
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, inst.name.encode())
    sub.connect(inst.pub)
    inst.start()
    docs = []
    deadline = time.monotonic() + 30
    while len(docs) < 200 and time.monotonic() < deadline:
        if sub.poll(1000):
            topic, body = sub.recv_multipart()
            doc = jsonlib.loads(body)
            assert topic.decode() == f"{inst.name}/{doc['type']}/{doc['symbol']}"
            docs.append(doc)
    assert len(docs) >= 200
    reader = shm.RingReader(inst.ring, start="oldest", batch_records=100_000)
    by_seq = {}
    while True:
        batch = reader.read_batch()
        if not len(batch):
            break
        for r in batch:
            by_seq[r.seq] = codec.decode(r.type_id, bytes(r.payload))
    for doc in docs:
        event = by_seq[doc["ring_seq"]]
        assert codec.KIND_NAMES[codec.KIND_OF[type(event)]] == doc["type"]
        assert (event.symbol, event.seq, event.ts_recv) == (doc["symbol"], doc["seq"],
                                                            doc["ts_recv"])
    reader.close()
    sub.close(0)
    ctx.term()
    assert inst.stop()[0] == 0


def _apply(side: dict[Decimal, str], levels) -> None:
    for price, size, *_ in levels:
        if Decimal(size) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = size


def test_snapshot_service_plus_deltas_rebuild_the_book(make_instance):
    inst = make_instance("okx_spot", ["BTC-USDT"])
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, f"{inst.name}/book_".encode())
    sub.connect(inst.pub)
    req = ctx.socket(zmq.REQ)
    req.connect(inst.snap)
    inst.start()
    wait_for("book synced", lambda: inst.stats().get("books_synced") == 1)

    def snapshot() -> dict:
        req.send(jsonlib.dumps({"symbol": "BTC-USDT"}))
        assert req.poll(5000), "no snapshot reply"
        return jsonlib.loads(req.recv())

    first = snapshot()
    assert "error" not in first, first
    bids: dict[Decimal, str] = {}
    asks: dict[Decimal, str] = {}
    _apply(bids, first["bids"])
    _apply(asks, first["asks"])
    seq = first["seq"]
    history = {seq: (dict(bids), dict(asks))}
    applied = 0
    deadline = time.monotonic() + 30
    while applied < 50 and time.monotonic() < deadline:
        if not sub.poll(1000):
            continue
        doc = jsonlib.loads(sub.recv_multipart()[1])
        if doc["type"] != "book_delta" or doc["seq"] <= seq:
            continue  # before the snapshot
        assert doc["prev_seq"] == seq, "a delta is missing after the snapshot"
        _apply(bids, doc["bids"])
        _apply(asks, doc["asks"])
        seq = doc["seq"]
        history[seq] = (dict(bids), dict(asks))
        applied += 1
    assert applied >= 50
    second = snapshot()
    while second["seq"] not in history:  # the service may be a few deltas ahead
        doc = jsonlib.loads(sub.recv_multipart()[1])
        if doc["type"] == "book_delta" and doc["seq"] > seq:
            _apply(bids, doc["bids"])
            _apply(asks, doc["asks"])
            seq = doc["seq"]
            history[seq] = (dict(bids), dict(asks))
    want_b, want_a = {}, {}
    _apply(want_b, second["bids"])
    _apply(want_a, second["asks"])
    got_b, got_a = history[second["seq"]]
    assert {p: Decimal(s) for p, s in got_b.items()} == {p: Decimal(s) for p, s in want_b.items()}
    assert {p: Decimal(s) for p, s in got_a.items()} == {p: Decimal(s) for p, s in want_a.items()}
    for sock in (sub, req):
        sock.close(0)
    ctx.term()
    assert inst.stop()[0] == 0


def test_snapshot_service_answers_unknown_symbols_and_bad_requests():
    from supervisor.book import OrderBook
    from supervisor.collector.snapshots import snapshot_reply

    book = OrderBook("BTC-USDT")
    books = {"BTC-USDT": book}
    assert "resyncing" in snapshot_reply("x", books, b'{"symbol": "BTC-USDT"}', 0)["error"]
    book.load([["1", "2"]], [["3", "4"]], seq=9)
    ok = snapshot_reply("x", books, b"BTC-USDT", 5)
    assert (ok["seq"], ok["ring_seq"], ok["bids"], ok["asks"]) == (9, 5, [["1", "2"]],
                                                                   [["3", "4"]])
    assert snapshot_reply("x", books, b'{"symbol": "ETH"}', 0)["symbols"] == ["BTC-USDT"]
    assert "bad request" in snapshot_reply("x", books, b"{nope", 0)["error"]


def test_gap_events_reach_the_ring_when_a_book_breaks(make_instance, replay):
    inst = make_instance("deribit_derivatives", ["ETH-USD-PERP"])
    inst.start()
    wait_for("first sync", lambda: inst.stats().get("books_synced") == 1)
    reader = shm.RingReader(inst.ring, start="latest", batch_records=100_000)
    replay.inject("deribit", "drop", symbol="ETH-USD-PERP")
    wait_for("resync", lambda: inst.stats().get("resyncs", {}).get("sequence_gap") == 1)
    wait_for("book back in sync", lambda: inst.stats().get("books_synced") == 1)
    events = []
    wait_for("records", lambda: events.extend(
        codec.decode(r.type_id, bytes(r.payload)) for r in reader.read_batch()) or any(
        isinstance(e, BookSnapshot) for e in events))
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and gaps[0].reason == "sequence_gap"
    # After the gap the next book record is a fresh snapshot, never a delta.
    after = events[events.index(gaps[0]) + 1:]
    first_book = next(e for e in after if isinstance(e, BookSnapshot | BookDelta))
    assert isinstance(first_book, BookSnapshot)
    reader.close()
    assert inst.stop()[0] == 0


def test_a_restarted_collector_announces_what_it_missed_before_new_data(make_instance, notify):
    inst = make_instance("binance_derivatives", ["BTC-USDT-PERP", "ETH-USDT-PERP"],
                         channels=["books", "trades"])
    inst.start(notify)
    wait_for("READY=1", lambda: notify.has("READY=1"))
    assert inst.stop()[0] == 0
    first_run = shm.ring_stats(inst.ring).last_seq
    fresh = [codec.decode(r.type_id, bytes(r.payload)) for r in
             shm.RingReader(inst.ring, start="oldest", batch_records=100_000).read_batch()]
    assert not [e for e in fresh if isinstance(e, Gap)]  # a new ring: nothing to announce
    proc = inst.start()
    wait_for("second sync", lambda: inst.stats().get("pid") == proc.pid
             and inst.stats().get("books_synced") == 2)
    reader = shm.RingReader(inst.ring, start="oldest", batch_records=100_000)
    records = list(reader.read_batch())
    reader.close()
    assert inst.stop()[0] == 0
    second = [codec.decode(r.type_id, bytes(r.payload)) for r in records if r.seq > first_run]
    head = second[:2]
    assert all(isinstance(e, Gap) and e.reason == "collector_restart" for e in head), head
    assert {e.symbol for e in head} == {"BTC-USDT-PERP", "ETH-USDT-PERP"}
    assert f"after ring seq {first_run}" in head[0].detail
    assert not [e for e in second[2:] if isinstance(e, Gap)]
