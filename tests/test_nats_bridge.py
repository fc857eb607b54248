"""The bridge against a real nats-server with JetStream (a loopback port, a temp store).

Every test ends by reading the stream back and checking it holds each ring record exactly
once, in ring order, byte for byte: the one property the bridge exists for.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shm
from supervisor import codec, jsonlib
from supervisor.config import NatsConfig
from tests import test_nats_support as support
from tests.test_nats_support import (
    BridgeThread,
    fill_ring,
    read_stream,
    stream_state,
    synthetic_events,
    wait_until,
    write_config,
)

REPO = Path(__file__).resolve().parent.parent
nats_server = support.nats_server  # fixtures
instance = support.instance


def assert_stream_is_exactly(url: str, stream: str, records: list[tuple[int, int, bytes]],
                             source: str | None = None) -> None:
    """The stream holds ``records`` (seq, type, payload) once each, in ring order."""
    got = read_stream(url, stream, expect=len(records))
    assert [g[0] for g in got] == [r[0] for r in records]
    assert [g[3] for g in got] == [r[2] for r in records]
    assert stream_state(url, stream).messages == len(records)
    if source is not None:
        assert {g[2] for g in got} == {source}


@pytest.fixture
def writer(ring_name):
    w = shm.RingWriter(ring_name, capacity=1 << 22)
    yield w
    w.close()


def config(server, instance, **kw) -> NatsConfig:
    return NatsConfig(servers=(server.url,), stream=f"s_{instance}", **kw)


def test_every_record_reaches_the_stream_once_in_ring_order_with_subject_and_id(
        nats_server, instance, ring_name, writer):
    records = fill_ring(writer, synthetic_events(3000))
    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    try:
        run.wait_acked(3000)
        doc = run.doc()
    finally:
        run.stop()
    epoch = shm.ring_stats(ring_name).created_ns
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", records, f"{instance}:{epoch}")
    got = read_stream(nats_server.url, f"s_{instance}", expect=3)
    kinds = {1: "book_snapshot", 2: "book_delta", 3: "trade"}
    symbol = codec.decode(records[0][1], records[0][2]).symbol
    assert got[0][1] == f"marketprism.{instance}.{kinds[records[0][1]]}.{symbol}"
    assert doc["published"] == doc["acked"] == 3000 and doc["duplicates"] == 0
    assert doc["lag"] == 0 and doc["acked_seq"] == 3000 and doc["state"] == "connected"
    assert doc["in_flight_max"] <= 1024 and doc["publish_to_ack"]["count"] == 3000
    reader = {r.name: r for r in shm.ring_stats(ring_name).readers}["nats-bridge"]
    assert reader.committed_seq == 3000  # the clean stop drained the acks and committed


def test_json_encoding_publishes_the_collectors_zeromq_document(
        nats_server, instance, ring_name, writer):
    records = fill_ring(writer, synthetic_events(50))
    run = BridgeThread(instance, ring_name, config(nats_server, instance, encoding="json",
                                                   subject_prefix="md.raw"))
    try:
        run.wait_acked(50)
    finally:
        run.stop()
    got = read_stream(nats_server.url, f"s_{instance}", expect=50)
    for (seq, subject, _, data), (rseq, kind, payload) in zip(got, records, strict=True):
        event = codec.decode(kind, payload)
        doc = jsonlib.loads(data)
        assert seq == rseq and doc["ring_seq"] == rseq and doc["instance"] == instance
        assert doc["type"] == codec.KIND_NAMES[codec.Kind(kind)]
        assert subject == f"md.raw.{instance}.{doc['type']}.{event.symbol}"
        assert {k: doc[k] for k in event._fields} == {
            k: (list(map(list, v)) if k in ("bids", "asks") else v)
            for k, v in event._asdict().items()}


def test_nats_down_keeps_the_cursor_reports_lag_and_catches_up_when_it_returns(
        nats_server, instance, ring_name, writer):
    nats_server.stop()
    records = fill_ring(writer, synthetic_events(1000))
    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    try:
        wait_until(lambda: run.stats.connect_failures >= 2, 15, "two failed connects")
        doc = run.doc()
        assert doc["state"] in ("backoff", "connecting") and doc["lag"] == 1000
        assert doc["committed_seq"] == 0 and doc["published"] == 0
        assert "NoServersError" in doc["last_error"] or "refused" in doc["last_error"]
        nats_server.start()
        records += fill_ring(writer, synthetic_events(500, start=1001))
        run.wait_acked(1500, timeout=40)
        assert run.doc()["lag"] == 0
    finally:
        run.stop()
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", records)


def test_nats_restarted_mid_stream_loses_and_duplicates_nothing(
        nats_server, instance, ring_name, writer):
    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    records: list[tuple[int, int, bytes]] = []
    events = synthetic_events(6000)
    try:
        for i in range(0, 2000, 100):  # a paced stream: the bridge keeps up
            records += fill_ring(writer, events[i:i + 100])
            time.sleep(0.005)
        nats_server.stop()  # SIGTERM: a clean restart, as systemctl restart does
        for i in range(2000, 4000, 100):  # the collector goes on meanwhile
            records += fill_ring(writer, events[i:i + 100])
        wait_until(lambda: run.bridge.state != "connected", 10, "the bridge to notice")
        assert run.doc()["lag"] > 0
        nats_server.start()
        records += fill_ring(writer, events[4000:])
        run.wait_acked(6000, timeout=40)
        doc = run.doc()
    finally:
        run.stop()
    assert doc["sessions_ended"] >= 1 and doc["connects"] >= 2 and doc["lost"] == 0
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", records)


def test_a_hung_server_ends_the_session_by_ack_timeout_within_a_bounded_window(
        nats_server, instance, ring_name, writer):
    run = BridgeThread(instance, ring_name, config(nats_server, instance, max_in_flight=16,
                                                   ack_timeout=1.0))
    try:
        records = fill_ring(writer, synthetic_events(200))
        run.wait_acked(200)
        nats_server.freeze()  # SIGSTOP: the TCP connection stays up, nothing answers
        records += fill_ring(writer, synthetic_events(300, start=201))
        wait_until(lambda: run.stats.ack_timeouts >= 1, 10, "an ack timeout")
        st = run.stats
        assert st.published - 200 <= 16  # never more than max_in_flight unacknowledged
        nats_server.thaw()
        run.wait_acked(500, timeout=40)
        doc = run.doc()
    finally:
        run.stop()
    assert doc["in_flight_max"] <= 16 and doc["lost"] == 0
    assert "no ack for ring seq 201 within 1s" in doc["last_error"] or doc["sessions_ended"]
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", records)


def test_a_lap_while_nats_is_down_is_an_exact_counted_gap_and_never_slows_the_writer(
        nats_server, instance, ring_name):
    small = shm.RingWriter(ring_name, capacity=1 << 16)
    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    try:
        first = fill_ring(small, synthetic_events(100))
        run.wait_acked(100)
        nats_server.stop()
        wait_until(lambda: run.bridge.state != "connected", 10, "the bridge to notice")
        started = time.perf_counter()
        more = fill_ring(small, synthetic_events(5000, start=101))  # ~30 rings' worth
        elapsed = time.perf_counter() - started
        oldest = shm.ring_stats(ring_name).oldest_seq
        assert oldest > 101  # the ring no longer holds what the bridge has not sent
        nats_server.start()
        run.wait_acked(5100, timeout=40)
        doc = run.doc()
    finally:
        run.stop()
        small.close()
    assert elapsed < 2.0, f"5000 ring writes took {elapsed:.2f}s with the bridge stuck"
    assert doc["lost"] == oldest - 101 and doc["overruns"] == 1
    kept = first + [r for r in more if r[0] >= oldest]
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", kept)


def test_a_slow_jetstream_consumer_neither_slows_the_bridge_nor_misses_anything(
        nats_server, instance, ring_name, writer):
    import nats

    stream = f"s_{instance}"
    slow_got: list[int] = []

    async def slow_consumer(stop: asyncio.Event) -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await wait_stream(js)
        sub = await js.pull_subscribe(f"marketprism.{instance}.>", durable="slow",
                                      stream=stream)
        while not stop.is_set() or len(slow_got) < 4000:
            try:
                msgs = await sub.fetch(10 if not stop.is_set() else 1000, timeout=0.5)
            except TimeoutError:  # nats' and asyncio's
                continue
            for m in msgs:
                slow_got.append(int(m.headers["Nats-Msg-Id"].rsplit(":", 1)[1]))
                await m.ack()
            if not stop.is_set():
                await asyncio.sleep(0.05)  # 200 msg/s at most while the bridge publishes
        await nc.close()

    async def wait_stream(js) -> None:
        while True:
            try:
                await js.stream_info(stream)
                return
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.02)

    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    consumer = loop.create_task(slow_consumer(stop))
    try:
        records = fill_ring(writer, synthetic_events(4000))
        deadline = time.monotonic() + 20
        while run.bridge.acked_seq < 4000 and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))
        assert run.bridge.acked_seq == 4000
        assert len(slow_got) < 1000  # the consumer is still far behind: it did not hold us
        stop.set()
        loop.run_until_complete(asyncio.wait_for(consumer, 30))
    finally:
        run.stop()
        loop.close()
    assert slow_got == [r[0] for r in records]


def test_a_stream_that_does_not_capture_our_subjects_is_reported_and_nothing_is_sent(
        nats_server, instance, ring_name, writer):
    import nats

    async def make() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name=f"s_{instance}", subjects=["other.>"])
        await nc.close()

    asyncio.run(make())
    fill_ring(writer, synthetic_events(10))
    run = BridgeThread(instance, ring_name, config(nats_server, instance))
    try:
        wait_until(lambda: run.stats.connect_failures >= 1, 10, "the stream check")
        assert "captures other.>, not marketprism." in run.stats.last_error
        assert run.stats.published == 0 and run.doc()["lag"] == 10
    finally:
        run.stop()


def test_a_missing_stream_is_not_created_when_create_stream_is_off(
        nats_server, instance, ring_name, writer):
    fill_ring(writer, synthetic_events(10))
    run = BridgeThread(instance, ring_name, config(nats_server, instance,
                                                   create_stream=False))
    try:
        wait_until(lambda: run.stats.connect_failures >= 1, 10, "the stream check")
        assert run.stats.last_error == (f"stream s_{instance} does not exist and "
                                        "create_stream is false")
    finally:
        run.stop()


# ----- the daemon, as a process ---------------------------------------------------------------
def _spawn(cfg: Path, instance: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.nats_bridge.main", instance, "--config", str(cfg)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_9_mid_stream_neither_loses_nor_duplicates(nats_server, instance, ring_name,
                                                        tmp_path):
    """Three kill -9 at random points while the bridge catches up with 60k records, each
    followed by a restart; the stream ends up with every record once, in order."""
    cfg = write_config(tmp_path / "mp.toml", instance, ring_name, nats_server.url,
                       ring_capacity=1 << 24, stream=f"s_{instance}", commit_interval=0.3)
    writer = shm.RingWriter(ring_name, capacity=1 << 24)  # holds all 60k records
    records = fill_ring(writer, synthetic_events(60_000))
    rng = random.Random()
    resent = []
    for _ in range(3):
        before = _stored(nats_server.url, f"s_{instance}")
        proc = _spawn(cfg, instance)
        # Kill while this process is publishing (not while it is still importing).
        wait_until(lambda b=before: _stored(nats_server.url, f"s_{instance}", -1) > b, 20,
                   "this process's first publishes", interval=0.002)
        time.sleep(rng.uniform(0.02, 0.3))
        proc.kill()
        proc.wait(10)
        reader = {r.name: r for r in shm.ring_stats(ring_name).readers}["nats-bridge"]
        resent.append(_stored(nats_server.url, f"s_{instance}") - reader.committed_seq)
    assert max(resent) > 0, "no kill landed between a publish and its commit"
    proc = _spawn(cfg, instance)
    try:
        wait_until(lambda: _stored(nats_server.url, f"s_{instance}", -1) == 60_000, 60,
                   "the last restart to catch up")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
        writer.close()
    assert proc.returncode == 0, out
    assert "resuming after ring seq" in out
    assert_stream_is_exactly(nats_server.url, f"s_{instance}", records)


def _stored(url: str, stream: str, on_timeout: int | None = None) -> int:
    """Ring seq of the newest message in the stream (0: none yet).

    ``on_timeout``: returned when the server does not answer in time (a loaded machine), for
    polls that simply ask again; ``None`` lets the timeout raise.

    Asks for the stream's info first and gets the last message only from a stream that holds
    some: Debian's nats-server 2.9.10 once crashed (nil dereference in jsMsgGetRequest) on a
    get that a 2 ms poll sent while the bridge was creating the stream.
    """
    import nats

    async def last() -> int:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            if not (await js.stream_info(stream)).state.messages:
                return 0
            msg = await js.get_last_msg(stream, ">")
            return int(msg.headers["Nats-Msg-Id"].rsplit(":", 1)[1])
        except nats.js.errors.NotFoundError:
            return 0
        except nats.errors.TimeoutError:
            if on_timeout is None:
                raise
            return on_timeout
        finally:
            await nc.close()

    return asyncio.run(last())


def test_daemon_reports_ready_status_and_stats_then_stops_cleanly_on_sigterm(
        nats_server, instance, ring_name, writer, tmp_path):
    from supervisor.statsblock import read_block
    from tests.test_analyzer_process import Notify

    cfg = write_config(tmp_path / "mp.toml", instance, ring_name, nats_server.url,
                       stream=f"s_{instance}")
    fill_ring(writer, synthetic_events(500))
    notify = Notify()
    proc = _spawn(cfg, instance, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
    try:
        wait_until(lambda: notify.lines("READY=1"), 20, "READY=1")
        wait_until(lambda: read_block(f"{instance}.nats")[0].get("acked_seq") == 500, 20,
                   "the stats block to show everything acked")
        doc = read_block(f"{instance}.nats")[0]
        assert doc["role"] == "nats-bridge" and doc["instance"] == instance
        assert doc["connected"] and doc["lag"] == 0 and doc["stream"] == f"s_{instance}"
        wait_until(lambda: [s for s in notify.lines("STATUS=") if "lag 0" in s], 10,
                   "a STATUS line with the lag")
        wait_until(lambda: len(notify.lines("WATCHDOG=1")) >= 2, 10, "watchdog pings")
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0, out
    assert notify.lines("STOPPING=1")
    doc = read_block(f"{instance}.nats")[0]
    assert doc["status"] == "stopped" and doc["committed_seq"] == 500


def test_daemon_exits_78_without_a_nats_table(tmp_path, instance):
    cfg = tmp_path / "mp.toml"
    cfg.write_text(f'[instances.{instance}]\nexchange = "okx"\nmarket = "spot"\n'
                   'symbols = ["BTC-USDT"]\n')
    proc = _spawn(cfg, instance)
    out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 78
    assert f"instances.{instance}.nats: no NATS sink configured for this instance" in out


def test_daemon_exits_78_when_the_credentials_file_is_unreadable(tmp_path, instance):
    cfg = write_config(tmp_path / "mp.toml", instance, "r", "nats://127.0.0.1:4222",
                       credentials=str(tmp_path / "missing.creds"))
    proc = _spawn(cfg, instance)
    out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 78
    assert f"instances.{instance}.nats.credentials: cannot read {tmp_path}/missing.creds" in out
