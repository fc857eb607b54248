"""The analyzer consuming from JetStream (a durable pull consumer) instead of the ring.

Real recordings go collector-side into a ring, through the bridge into a real nats-server,
and out through :class:`JetStreamSource` into the analyzer's engine; the result must equal
the same engine fed from the ring, and a restart must resume after the last commit.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import shm
from supervisor import codec
from supervisor.analyzer.jetstream_source import JetStreamSource
from supervisor.config import NatsConfig
from supervisor.nats_bridge.wire import MSG_ID
from tests import test_nats_support as support
from tests.test_analyzer_support import binance_recording, docs_of, feed, make_engine
from tests.test_nats_support import BridgeThread, fill_ring, synthetic_events

nats_server = support.nats_server  # fixtures
instance = support.instance
LOG = logging.getLogger("test.jetstream")


def config(server, instance, **kw) -> NatsConfig:
    return NatsConfig(servers=(server.url,), stream=f"s_{instance}", **kw)


def bridge_all(server, instance, ring_name, events, capacity=1 << 24, **kw):
    """Ring + bridge: every event in the stream; returns the ring records."""
    with shm.RingWriter(ring_name, capacity=capacity) as writer:
        records = fill_ring(writer, events)
        run = BridgeThread(instance, ring_name, config(server, instance, **kw))
        try:
            run.wait_acked(len(records), timeout=60)
        finally:
            run.stop()
    return records


def drain(src: JetStreamSource, engine, limit: int | None = None, commit: bool = True
          ) -> list[int]:
    """Poll until caught up (or ``limit`` batches); returns the ring seqs processed."""
    seqs: list[int] = []
    batches = 0
    while limit is None or batches < limit:
        got = src.poll(0.5)
        if got is None:
            if src.caught_up and not src._held:
                break
            continue
        if src.binary:
            engine.process_batch(got)
            seqs += range(got.first_seq, got.first_seq + got.count)
        else:
            engine.process_docs(got)
            seqs += [d["ring_seq"] for d in got]
        if commit:
            src.commit()
        batches += 1
    return seqs


def book_state(engine) -> dict[str, tuple]:
    return {s: (a.book.valid, a.book.seq, a.book.levels()[0][:20], a.book.levels()[1][:20])
            for s, a in engine.symbols.items()}


def test_engine_fed_from_jetstream_equals_one_fed_from_the_ring(nats_server, instance,
                                                                  ring_name):
    events = binance_recording("BINANCE_FUTURES")
    records = bridge_all(nats_server, instance, ring_name, events)
    from_ring = make_engine()
    feed(from_ring, events)
    from_js = make_engine()
    src = JetStreamSource(instance, config(nats_server, instance), 512, LOG)
    try:
        seqs = drain(src, from_js)
    finally:
        src.close()
    assert seqs == [r[0] for r in records]
    assert from_js.events == from_ring.events == len(events)
    assert from_js.by_kind == from_ring.by_kind
    assert from_js.lost == 0 and from_js.sequence_gaps == from_ring.sequence_gaps
    assert book_state(from_js) == book_state(from_ring)
    assert from_js.ring_seq == len(events)


def test_json_encoded_stream_feeds_the_document_path(nats_server, instance, ring_name):
    events = synthetic_events(300)
    bridge_all(nats_server, instance, ring_name, events, encoding="json")
    from_docs = make_engine()
    from_docs.process_docs(docs_of(events))
    from_js = make_engine()
    src = JetStreamSource(instance, config(nats_server, instance, encoding="json"), 64, LOG)
    try:
        seqs = drain(src, from_js)
    finally:
        src.close()
    assert seqs == list(range(1, 301))
    assert from_js.by_kind == from_docs.by_kind and from_js.events == from_docs.events
    assert book_state(from_js) == book_state(from_docs)


def test_a_restart_resumes_right_after_the_last_commit(nats_server, instance, ring_name):
    """Two committed batches, a third processed but not committed (a crash): the restarted
    consumer starts with the third again, in order, and goes on to the end."""
    records = bridge_all(nats_server, instance, ring_name, synthetic_events(2000))
    engine = make_engine()
    cfg = config(nats_server, instance)
    src = JetStreamSource(instance, cfg, 100, LOG)
    try:
        first = drain(src, engine, limit=2)
        crashed = drain(src, engine, limit=1, commit=False)
        committed = src.committed_seq
    finally:
        src.close()  # no commit: the third batch is delivered but unacknowledged
    assert first == list(range(1, 201)) and crashed == list(range(201, 301))
    assert committed == 200
    src = JetStreamSource(instance, cfg, 100, LOG)
    try:
        assert src.committed_seq == 200
        rest = drain(src, engine)
    finally:
        src.close()
    assert rest == [r[0] for r in records][200:]  # exactly once across the restart


def test_a_seq_jump_is_lost_records_and_a_repeat_is_dropped(nats_server, instance):
    """Messages published by hand: ring seqs 1-10, 16-20, then 18 again past the duplicate
    window. The consumer reports 5 lost before 16 and drops the late 18."""
    import nats

    cfg = config(nats_server, instance)
    enc = codec.Encoder()
    payloads = {}
    for seq, ev in enumerate(synthetic_events(25), 1):
        kind, view = enc.encode(ev)
        payloads[seq] = (kind, bytes(view))

    async def publish() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name=cfg.stream, subjects=[f"marketprism.{instance}.>"],
                            duplicate_window=0.2)
        for seq in [*range(1, 11), *range(16, 21)]:
            kind, data = payloads[seq]
            token = codec.KIND_NAMES[codec.Kind(kind)]
            await js.publish(f"marketprism.{instance}.{token}.BTC-USDT", data,
                             headers={MSG_ID: f"{instance}:7:{seq}"})
        await asyncio.sleep(0.3)
        kind, data = payloads[18]
        await js.publish(f"marketprism.{instance}.trade.BTC-USDT", data,
                         headers={MSG_ID: f"{instance}:7:18"})
        await nc.close()

    asyncio.run(publish())
    src = JetStreamSource(instance, cfg, 100, LOG)
    try:
        first = src.poll(1)
        second = src.poll(1)
        src.commit()
        assert src.poll(0.3) is None
    finally:
        src.close()
    assert (first.first_seq, first.count, first.lost) == (1, 10, 0)
    assert (second.first_seq, second.count, second.lost) == (16, 5, 5)
    assert bytes(second.data[second.offsets[0]:second.offsets[0] + second.lengths[0]]) == \
        payloads[16][1]
    assert src.duplicates == 1 and src.committed_seq == 20


@pytest.mark.parametrize("batch", [1, 7])
def test_batches_hold_consecutive_seqs_whatever_the_fetch_size(nats_server, instance,
                                                               ring_name, batch):
    records = bridge_all(nats_server, instance, ring_name, synthetic_events(50))
    engine = make_engine()
    src = JetStreamSource(instance, config(nats_server, instance), batch, LOG)
    try:
        seqs = drain(src, engine)
    finally:
        src.close()
    assert seqs == [r[0] for r in records] and engine.lost == 0


def test_analyzer_daemon_consumes_the_stream_with_source_jetstream(nats_server, instance,
                                                                     ring_name, tmp_path):
    """The real ``marketprism-analyzer`` process, configured for another host: no ring."""
    import os
    import signal
    import subprocess
    import sys

    from supervisor import statsblock

    events = synthetic_events(3000)
    records = bridge_all(nats_server, instance, ring_name, events)
    cfg = support.write_config(tmp_path / "mp.toml", instance, f"absent_{ring_name}",
                               nats_server.url, stream=f"s_{instance}")
    with open(cfg, "a") as fh:
        fh.write(f'[instances.{instance}.analyzer.settings]\nsource = "jetstream"\n')
    block = f"{instance}.analyzer"
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.analyzer.main", instance,
                             "--config", str(cfg)], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, MARKETPRISM_SYSLOG_PREFIX="0"))
    try:
        def done():
            try:
                doc = statsblock.read_block(block)[0]
            except statsblock.StatsBlockError:
                return None
            return doc if doc.get("committed_seq") == records[-1][0] else None

        doc = support.wait_until(done, 60, "analyzer committed the last ring seq")
        assert doc["mode"] == "jetstream" and doc["events"] == len(records)
        assert doc["lost"] == 0 and doc["gaps"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        try:
            os.unlink(statsblock.block_path(block))
        except FileNotFoundError:
            pass
    assert proc.returncode == 0, err
