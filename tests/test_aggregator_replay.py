"""The aggregator in front of a real collector fed by the replay exchange.

A real ``marketprism-collector`` process (Binance spot, two symbols) connects to the
in-test replay exchange and writes its real ring and stats block; a real aggregator serves
them. The replay's own counters are the reference: while a ``stall`` fault holds the
connection quiet, the aggregator's ``marketprism_messages_total`` must equal the frames the
replay sent, and an injected malformed frame must show up as exactly one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisor import statsblock
from tests.test_aggregator_daemon import (
    ROOT,
    Aggregator,
    free_port,
    metric_values,
    wait_for,
)

harness = pytest.importorskip("supervisor.replay.harness",
                              reason="replay exchange not available")
shm = pytest.importorskip("shm")
if not hasattr(shm, "ring_stats"):
    pytest.skip("shm ring not built", allow_module_level=True)

VENUE = "binance_spot"


class Collector:
    def __init__(self, name: str, config: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.collector.main", name,
                                      "--config", config], cwd=ROOT,
                                     stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def setup(tmp_path) -> Iterator[tuple[object, Aggregator, str, list[Collector]]]:
    name = f"agr{os.getpid() % 100000}"
    rx = harness.ReplayThread(rate=200, seed=7).start()
    ws, rest = rx.endpoints(VENUE)
    extra = (f'exchange = "binance"\nmarket = "spot"\nws_url = "{ws}"\nrest_url = "{rest}"\n'
             'analyzer = { enabled = false }\n')
    agg = Aggregator(tmp_path, {name: extra}, interval=0.5)
    # The generic config writer says okx; this instance is Binance spot.
    agg.config.write_text(agg.config.read_text().replace(
        'exchange = "okx"\nmarket = "spot"\n', "", 1))
    collectors = [Collector(name, str(agg.config))]
    agg.recv_until("READY=1")
    try:
        yield rx, agg, name, collectors
    finally:
        for c in collectors:
            c.stop()
        agg.stop()
        rx.stop()
        for path in (statsblock.block_path(name),):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(Exception):
            shm.remove_ring(name)


def labels(name: str, **extra: str) -> frozenset:
    return frozenset({"instance": name, "exchange": "binance", "market": "spot",
                      **extra}.items())


def test_counters_match_what_the_replay_sent(setup):
    rx, agg, name, _ = setup
    agg.wait_health(200, timeout=30)
    rx.inject(VENUE, "malformed")
    wait_for(lambda: metric_values(agg.metrics()).get(
        ("marketprism_malformed_messages_total", labels(name))) == 1, 20,
        "the malformed frame to be counted")
    # A stall queues what follows it: armed alone, so nothing else is held back.
    rx.inject(VENUE, "stall", seconds=30)

    def quiet_and_equal() -> bool:
        sent = rx.stats()["venues"][VENUE]
        if not sent["faults_applied"].get("stall"):
            return False
        values = metric_values(agg.metrics())
        return values.get(("marketprism_messages_total", labels(name))) == \
            sent["messages_sent"]
    wait_for(quiet_and_equal, 20, "messages_total to equal the replay's messages_sent")
    values = metric_values(agg.metrics())
    assert values[("marketprism_malformed_messages_total", labels(name))] == 1
    assert rx.stats()["venues"][VENUE]["faults_applied"]["malformed"] == 1
    assert values[("marketprism_books_synced", labels(name))] == 2
    # The ring the collector writes is the ring the aggregator reads.
    ring = shm.ring_stats(name)
    assert values[("marketprism_ring_last_sequence", labels(name))] == ring.last_seq > 0
    assert values[("marketprism_ring_writer_running", labels(name))] == 1


def test_health_follows_a_killed_and_restarted_collector(setup):
    rx, agg, name, collectors = setup
    agg.wait_health(200, timeout=30)
    dead = collectors[0].proc.pid
    collectors[0].proc.kill()
    collectors[0].proc.wait()
    doc = agg.wait_health(503)
    assert f"{name}: collector: pid {dead} is not running" in doc["reasons"]
    values = metric_values(agg.metrics())
    assert values[("marketprism_ring_writer_running", labels(name))] == 0
    collectors.append(Collector(name, str(agg.config)))
    doc = agg.wait_health(200, timeout=30)
    assert doc["processes"][name]["collector"]["pid"] == collectors[-1].proc.pid
    assert free_port()  # the loopback is still ours; nothing leaked a listener
