"""The NATS bridge in the aggregator: its stats block read, /health, /metrics, promtool."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import psutil

from supervisor import statsblock
from supervisor.aggregator.health import build_health
from supervisor.aggregator.sources import Sampler
from supervisor.aggregator.units import SystemdView
from supervisor.config import parse
from supervisor.histogram import Histogram
from tests.test_aggregator_health import block, make_sample, unit
from tests.test_aggregator_metrics import PROMTOOL, exposition, needs_promtool, samples, value


def bridge_doc(**over: Any) -> dict[str, Any]:
    """A document shaped like the bridge's ``stats_doc()`` (nats_bridge/main.py + bridge.py)."""
    hist = Histogram()
    for ns in (200_000, 900_000, 3_000_000):
        hist.observe(ns)
    doc: dict[str, Any] = {
        "role": "nats-bridge", "instance": "okx_spot", "pid": os.getpid(),
        "started": psutil.Process().create_time() + 0.5,
        "status": "connected to nats://127.0.0.1:4222, lag 12", "ready": True,
        "loop_lag": 0.001, "rss": 40 * 2**20, "cpu_seconds": 3.5,
        "state": "connected", "connected": True, "server": "nats://127.0.0.1:4222",
        "stream": "marketprism_okx_spot", "reader": "nats-bridge", "encoding": "binary",
        "ring": "okx_spot", "ring_seq": 1000, "acked_seq": 990, "committed_seq": 980,
        "lag": 12, "in_flight": 10, "max_in_flight": 1024, "backoff_seconds": 0.0,
        "published": 1010, "acked": 990, "duplicates": 2, "skipped": 0, "lost": 0,
        "overruns": 0, "oversize": 0, "malformed": 0, "ack_errors": 1, "ack_timeouts": 0,
        "connects": 2, "connect_failures": 3, "sessions_ended": 1, "commits": 40,
        "in_flight_max": 64, "last_error": "", "publish_to_ack": hist.to_dict(),
        "reconnect_storms": 7,
    }
    doc.update(over)
    return doc


def with_bridge(doc: dict[str, Any] | None, error: str = "", systemd: SystemdView | None = None,
                age: float = 0.5):
    sample = make_sample(systemd=systemd) if systemd else make_sample()
    okx = sample.instances["okx_spot"]
    sample.instances["okx_spot"] = okx._replace(bridge=block(doc, error, age=age))
    return sample


def test_a_healthy_bridge_shows_in_health_without_reasons():
    doc = build_health(with_bridge(bridge_doc()))
    proc = doc["processes"]["okx_spot"]
    assert proc["reasons"] == [] and proc["warnings"] == []
    assert proc["nats_bridge"]["lag"] == 12 and proc["nats_bridge"]["state"] == "connected"
    assert "nats-bridge" in proc["units"]
    assert doc["processes"]["deribit_derivatives"]["nats_bridge"] is None


def test_a_missing_or_stale_bridge_block_makes_the_instance_unhealthy():
    doc = build_health(with_bridge(None, "no stats block /dev/shm/marketprism-stats.x"))
    assert doc["status"] == "unhealthy"
    assert [r for r in doc["processes"]["okx_spot"]["reasons"]
            if r.startswith("nats-bridge: no stats block")]
    doc = build_health(with_bridge(bridge_doc(), age=600))
    assert any("nats-bridge: stats block stale" in r
               for r in doc["processes"]["okx_spot"]["reasons"])


def test_a_bridge_cut_off_from_nats_is_a_warning_the_ring_keeps_the_data():
    doc = build_health(with_bridge(bridge_doc(state="backoff", connected=False, lag=5000,
                                              last_error="connection refused")))
    proc = doc["processes"]["okx_spot"]
    assert proc["reasons"] == []
    assert proc["warnings"] == ["nats-bridge: backoff, 5000 records waiting in the ring "
                                "(last error: connection refused)"]


def test_a_failed_bridge_unit_is_a_reason():
    sd = SystemdView(True, "", {
        "collector@okx_spot.service": unit("collector@okx_spot.service"),
        "analyzer@okx_spot.service": unit("analyzer@okx_spot.service"),
        "nats-bridge@okx_spot.service": unit("nats-bridge@okx_spot.service", "failed",
                                             "failed", result="exit-code"),
    })
    sample = with_bridge(bridge_doc(), systemd=sd)
    okx = sample.instances["okx_spot"]
    sample.instances["okx_spot"] = okx._replace(units={
        r: sd.units[f"{r}@okx_spot.service"] for r in ("collector", "analyzer", "nats-bridge")})
    reasons = build_health(sample)["processes"]["okx_spot"]["reasons"]
    assert reasons == ["nats-bridge@okx_spot.service is failed/failed, result exit-code"]


def test_bridge_metrics_have_names_types_and_the_role_label():
    got = samples(exposition(with_bridge(bridge_doc())))
    assert value(got, "marketprism_nats_bridge_lag_records") == 12
    assert value(got, "marketprism_nats_bridge_connected") == 1
    assert value(got, "marketprism_nats_bridge_published_total") == 1010
    assert value(got, "marketprism_nats_bridge_connect_failures_total") == 3
    assert value(got, "marketprism_nats_bridge_reconnect_storms") == 7  # unknown fields still out
    assert value(got, "marketprism_nats_bridge_publish_to_ack_seconds_count") == 3
    assert value(got, "marketprism_process_resident_memory_bytes", role="nats-bridge") == \
        40 * 2**20
    assert value(got, "marketprism_stats_block_up", role="nats-bridge") == 1
    # no bridge configured, no bridge series
    assert not [k for k in samples(exposition(make_sample())) if "nats_bridge" in k[0]]


@needs_promtool
def test_bridge_exposition_passes_promtool_check_metrics():
    text = exposition(with_bridge(bridge_doc(state="backoff", connected=False)))
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_the_sampler_reads_the_bridge_block_of_instances_with_a_nats_table():
    name = f"t{uuid.uuid4().hex[:8]}"
    cfg = parse(f"""
[instances.{name}]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
nats = {{ servers = ["nats://127.0.0.1:4222"] }}

[instances.{name}_plain]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
""")
    writer = statsblock.StatsWriter(f"{name}.nats")
    try:
        writer.publish(bridge_doc(instance=name))
        sampler = Sampler(cfg.instances, 1.0, "foreground")
        assert f"nats-bridge@{name}.service" in sampler.unit_names()
        assert f"nats-bridge@{name}_plain.service" not in sampler.unit_names()
        sample = sampler.sample(refresh=True)
        got = sample.instances[name].bridge
        assert got is not None and got.ok and got.doc["lag"] == 12 and got.pid_alive
        assert sample.instances[f"{name}_plain"].bridge is None
    finally:
        writer.close(unlink=True)

