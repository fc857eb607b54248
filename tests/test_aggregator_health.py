"""/health document: a pure function of stats documents, ring stats and unit states.

The helpers here (``collector_doc``, ``analyzer_doc``, ``ring``, ``make_sample``) are shared
by the other aggregator tests.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from supervisor.aggregator.health import build_health, http_status
from supervisor.aggregator.sources import BlockRead, InstanceSample, RingRead, Sample
from supervisor.aggregator.units import SystemdView, UnitState
from supervisor.config import parse
from supervisor.histogram import Histogram

CONFIG = """
[instances.okx_spot]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT", "ETH-USDT"]
stale_after = 30

[instances.deribit_derivatives]
exchange = "deribit"
market = "derivatives"
symbols = ["BTC-USD-PERP"]
analyzer = { enabled = false }

[instances.binance_spot]
exchange = "binance"
market = "spot"
symbols = ["BTC-USDT"]
enabled = false
"""
NOW = 1_800_000_000.0
SYSTEMD_OFF = SystemdView(False, "systemd unavailable (PID 1 is not systemd)", {})


def collector_doc(**over: Any) -> dict[str, Any]:
    """A document shaped like ``Collector.stats_doc()``."""
    hist = Histogram()
    for ns in (3_000, 7_000, 7_000, 40_000, 2_000_000_000):
        hist.observe(ns)
    doc: dict[str, Any] = {
        "role": "collector", "instance": "okx_spot", "exchange": "okx", "market": "spot",
        "pid": os.getpid(), "started": psutil.Process().create_time() + 0.5,
        "status": "2/2 books synced, 1,234 msg/s, 3 resyncs", "ready": True,
        "connected": True, "books_synced": 2, "books_total": 2, "messages": 123456,
        "bytes": 98765432, "events": {"BookDelta": 120000, "Trade": 3400, "Gap": 3},
        "resyncs": {"checksum": 2, "sequence gap": 1}, "reconnects": 4, "malformed": 5,
        "rest_errors": 6, "rate_limited": 7, "subscribe_errors": 0, "last_message_age": 0.25,
        "message_rate": 1234.5, "loop_lag": 0.001, "loop_lag_max": 0.02,
        "rss": 50 * 2**20, "cpu_seconds": 12.5, "memory_soft": 120 << 20,
        "memory_hard": 160 << 20, "memory_soft_exceeded": 0,
        "book_levels": {"BTC-USDT": 800, "ETH-USDT": 750, "XRP-USDT": 1},
        "ring": "okx_spot", "symbols": ["BTC-USDT", "ETH-USDT"], "ring_records": 123403,
        "ring_bytes": 5_000_000, "ring_seq": 123403, "zmq_sent": 123403, "zmq_dropped": 8,
        "zmq_unsubscribed": 77, "zmq_subscriptions": 2,
        "encode_errors": 0, "latency_recv_ring": hist.to_dict(),
    }
    doc.update(over)
    return doc


def analyzer_doc(**over: Any) -> dict[str, Any]:
    """A document shaped like the analyzer's ``stats_doc`` (supervisor/analyzer/output.py),
    plus one field the aggregator does not know (read generically)."""
    hist = Histogram()
    hist.observe(50_000)
    doc: dict[str, Any] = {
        "role": "analyzer", "instance": "okx_spot", "mode": "ring",
        "status": "lag 12, 1,200 ev/s, 1 gaps, 3 quality", "ready": True,
        "started": psutil.Process().create_time() + 0.5, "lag": 12, "committed_seq": 123000,
        "ring_seq": 123391, "events": 123391,
        "events_by_type": {"book_delta": 120000, "trade": 3391}, "event_rate": 1200.0,
        "batches": 500, "lost": 3, "overruns": 1, "sequence_gaps": 0, "gaps": 1,
        "upstream_gaps": {"checksum": 2}, "no_book": 0, "seeds": 2,
        "quality": {"totals": {"time_gap": 2, "crossed_book": 1},
                    "by_symbol": {"time_gap": {"BTC-USDT": 2, "DOGE-USDT": 9},
                                  "crossed_book": {"ETH-USDT": 1}},
                    "stale": [], "crossed": ["ETH-USDT"], "misaligned": []},
        "plugin": {"plugin": "example", "state": "ok", "reason": "", "calls": 500,
                   "errors": 1, "results": 20},
        "results_sent": 400, "results_dropped": 0,
        "latency_recv_analyzer": hist.to_dict(), "symbols": 2, "books_valid": 2,
        "analysis": {"BTC-USDT": {"mid": "1"}}, "state": "running", "pid": os.getpid(),
        "rss": 30 * 2**20, "cpu_seconds": 4.0, "ring": "okx_spot", "reader": "analyzer",
        "snapshot_requests": 0, "batch_fill": 0.5, "plugin_calls_total": 77,
    }
    doc.update(over)
    return doc


class FakeReader:
    def __init__(self, name: str, lag: int, lost: int) -> None:
        self.name, self.slot, self.attached, self.pid = name, 0, True, os.getpid()
        self.next_seq, self.lag_records, self.lag_bytes = 100, lag, lag * 40
        self.lost, self.overruns, self.committed_seq = lost, 1 if lost else 0, 99
        self.committed_lag, self.last_commit_ns, self.attached_ns = lag + 1, 0, 0


class FakeRing:
    """The fields of ``shm.RingStats`` the aggregator reads."""

    def __init__(self, name: str = "okx_spot") -> None:
        self.name, self.capacity, self.records_written = name, 1 << 24, 123403
        self.bytes_written, self.last_seq, self.writer_state = 5_000_000, 123403, "running"
        self.writer_pid = os.getpid()
        self.readers = (FakeReader("analyzer", 12, 3), FakeReader("nats", 0, 0))


def block(doc: dict[str, Any] | None = None, error: str = "", age: float | None = 0.5,
          alive: bool = True) -> BlockRead:
    return BlockRead(doc, error, age if doc is not None else None,
                     os.getpid() if doc is not None else 0, alive and doc is not None, 2.5)


def unit(name: str, active: str = "active", sub: str = "running", restarts: int = 0,
         result: str = "success") -> UnitState:
    return UnitState(name, "loaded", active, sub, result, restarts, 42, NOW - 60,
                     "Mon 2026-11-23 11:20:22 UTC")


def make_sample(collector: BlockRead | None = None, analyzer: BlockRead | None = None,
                deribit: BlockRead | None = None, systemd: SystemdView = SYSTEMD_OFF,
                ring: RingRead | None = None) -> Sample:
    """okx_spot (collector + analyzer), deribit_derivatives (no analyzer), binance off."""
    cfg = parse(CONFIG)
    insts = cfg.instances
    units = systemd.units
    def units_of(instance: str, roles: tuple[str, ...]) -> dict[str, UnitState]:
        return {r: units[f"{r}@{instance}.service"] for r in roles
                if f"{r}@{instance}.service" in units}

    okx_units = units_of("okx_spot", ("collector", "analyzer"))
    der_units = units_of("deribit_derivatives", ("collector",))
    return Sample(
        NOW, NOW - 100, "systemd" if systemd.available else "foreground", systemd, 15.0,
        {
            "okx_spot": InstanceSample(
                insts["okx_spot"], collector or block(collector_doc()),
                analyzer or block(analyzer_doc()),
                ring or RingRead(FakeRing(), ""), okx_units),
            "deribit_derivatives": InstanceSample(
                insts["deribit_derivatives"],
                deribit or block(collector_doc(instance="deribit_derivatives",
                                               books_synced=1, books_total=1)),
                None, RingRead(FakeRing("deribit_derivatives"), ""), der_units),
            "binance_spot": InstanceSample(
                insts["binance_spot"], block(None, "no stats block"), block(None, "no block"),
                RingRead(None, "no ring"), {}),
        },
        {("binance_spot", "collector"): 4},
    )


def reasons(doc: dict[str, Any], instance: str = "okx_spot") -> list[str]:
    return doc["processes"][instance]["reasons"]


# ----- overall shape -----------------------------------------------------------------------
def test_all_enabled_instances_healthy_gives_200_with_legacy_shape():
    doc = build_health(make_sample(), "orjson", "0.1.0")
    assert http_status(doc) == 200
    assert doc["status"] == "healthy" and doc["reasons"] == []
    assert doc["uptime_seconds"] == 100.0 and doc["mode"] == "foreground"
    okx = doc["processes"]["okx_spot"]
    assert {"status", "cpu", "memory_mb"} <= okx.keys()
    assert okx["status"] == "healthy" and okx["cpu"] == 2.5 and okx["memory_mb"] == 50.0
    assert doc["healthy_instances"] == 2 and doc["enabled_instances"] == 2
    assert doc["json_backend"] == "orjson" and doc["version"] == "0.1.0"


def test_disabled_instance_is_listed_but_never_counted():
    doc = build_health(make_sample())
    assert doc["processes"]["binance_spot"]["status"] == "disabled"
    assert doc["processes"]["binance_spot"]["reasons"] == []
    assert http_status(doc) == 200


def test_instance_detail_carries_collector_counters_memory_and_ring():
    okx = build_health(make_sample())["processes"]["okx_spot"]
    col = okx["collector"]
    assert col["books_synced"] == 2 and col["books_total"] == 2
    assert col["messages"] == 123456 and col["reconnects"] == 4
    assert col["resyncs"] == {"checksum": 2, "sequence gap": 1} and col["resyncs_total"] == 3
    assert col["last_message_age"] == 0.25 and col["message_rate"] == 1234.5
    assert okx["status_line"] == "2/2 books synced, 1,234 msg/s, 3 resyncs"
    assert okx["memory"] == {"rss_mb": 50.0, "soft_mb": 120, "hard_mb": 160}
    assert okx["ring"]["write_seq"] == 123403
    assert okx["ring"]["readers"]["analyzer"]["lag"] == 12
    assert okx["ring"]["readers"]["analyzer"]["lost"] == 3
    ana = okx["analyzer"]
    assert ana["lag"] == 12 and ana["lost"] == 3 and ana["status_line"].startswith("lag 12")
    assert ana["quality"] == {"totals": {"time_gap": 2, "crossed_book": 1}, "stale": [],
                              "crossed": ["ETH-USDT"], "misaligned": []}
    assert ana["plugin"]["state"] == "ok" and ana["upstream_gaps"] == {"checksum": 2}
    assert "analysis" not in ana and "latency_recv_analyzer" not in ana


def test_without_systemd_units_say_systemd_unavailable_and_do_not_fail_health():
    doc = build_health(make_sample())
    assert doc["systemd"] == {"available": False,
                              "error": "systemd unavailable (PID 1 is not systemd)"}
    units = doc["processes"]["okx_spot"]["units"]
    assert units["collector"]["error"].startswith("systemd unavailable")
    assert units["analyzer"]["unit"] == "analyzer@okx_spot.service"
    assert "analyzer" not in doc["processes"]["deribit_derivatives"]["units"]


# ----- each check flips the instance ----------------------------------------------------------
def test_stale_stats_block_makes_instance_unhealthy_503():
    doc = build_health(make_sample(collector=block(collector_doc(), age=20.0)))
    assert http_status(doc) == 503
    assert reasons(doc) == ["collector: stats block stale (last update 20.0s ago, limit 15s)"]
    assert doc["reasons"] == ["okx_spot: " + reasons(doc)[0]]
    assert doc["processes"]["deribit_derivatives"]["status"] == "healthy"
    assert doc["healthy_instances"] == 1


def test_dead_writer_pid_makes_instance_unhealthy():
    doc = build_health(make_sample(collector=block(collector_doc(), alive=False)))
    assert reasons(doc) == [f"collector: pid {os.getpid()} is not running"]


def test_missing_block_is_reported_as_a_reason():
    doc = build_health(make_sample(collector=block(None, "/dev/shm/x: no stats block")))
    assert reasons(doc) == ["collector: /dev/shm/x: no stats block"]
    assert doc["processes"]["okx_spot"]["collector"] == {"error": "/dev/shm/x: no stats block"}
    assert doc["processes"]["okx_spot"]["memory_mb"] is None


def test_not_ready_collector_is_unhealthy_with_its_status_line():
    doc = build_health(make_sample(collector=block(collector_doc(
        ready=False, status="disconnected, 0/2 books synced"))))
    assert "collector: not ready (disconnected, 0/2 books synced)" in reasons(doc)


def test_stopped_collector_is_unhealthy():
    doc = build_health(make_sample(collector=block(collector_doc(status="stopped",
                                                                 ready=False))))
    assert "collector: stopped" in reasons(doc)


def test_unsynced_books_make_instance_unhealthy():
    doc = build_health(make_sample(collector=block(collector_doc(books_synced=1))))
    assert reasons(doc) == ["collector: 1/2 books synced"]


def test_last_message_older_than_stale_after_is_unhealthy():
    doc = build_health(make_sample(collector=block(collector_doc(last_message_age=31.0))))
    assert reasons(doc) == ["collector: last message 31.0s ago (stale_after 30s)"]
    doc = build_health(make_sample(collector=block(collector_doc(last_message_age=None))))
    assert reasons(doc) == ["collector: no message received yet"]


def test_enabled_analyzer_without_block_makes_instance_unhealthy():
    doc = build_health(make_sample(analyzer=block(None, "/dev/shm/a: no stats block")))
    assert reasons(doc) == ["analyzer: /dev/shm/a: no stats block"]
    assert doc["processes"]["okx_spot"]["analyzer"] == {"error": "/dev/shm/a: no stats block"}


def test_inactive_unit_under_systemd_is_unhealthy_and_unit_state_is_reported():
    sd = SystemdView(True, "", {
        "collector@okx_spot.service": unit("collector@okx_spot.service", "activating",
                                           "auto-restart", restarts=3, result="watchdog"),
        "analyzer@okx_spot.service": unit("analyzer@okx_spot.service"),
        "collector@deribit_derivatives.service": unit("collector@deribit_derivatives.service"),
    })
    doc = build_health(make_sample(systemd=sd))
    assert doc["mode"] == "systemd"
    assert reasons(doc) == ["collector@okx_spot.service is activating/auto-restart, "
                            "result watchdog"]
    state = doc["processes"]["okx_spot"]["units"]["collector"]
    assert state["n_restarts"] == 3 and state["result"] == "watchdog"
    assert state["since"] == NOW - 60 and state["main_pid"] == 42
    assert doc["processes"]["deribit_derivatives"]["status"] == "healthy"


def test_rss_above_soft_limit_warns_without_failing():
    doc = build_health(make_sample(collector=block(collector_doc(rss=130 * 2**20))))
    okx = doc["processes"]["okx_spot"]
    assert okx["status"] == "healthy"
    assert okx["warnings"] == ["collector: RSS 130.0 MB above the soft limit 120 MB "
                               "(hard 160 MB)"]


def test_wrongly_typed_document_fields_never_raise():
    garbage = collector_doc(books_synced="two", books_total=None, last_message_age=[1],
                            resyncs={"x": "y", "ok": 1}, rss=True, events=7, status=5)
    doc = build_health(make_sample(collector=block(garbage), analyzer=block({"lag": "?"})))
    okx = doc["processes"]["okx_spot"]
    assert okx["collector"]["resyncs"] == {"ok": 1}
    assert okx["memory_mb"] is None
    assert "collector: no message received yet" in okx["reasons"]


def test_no_enabled_instances_is_unhealthy():
    cfg = parse(CONFIG.replace('analyzer = { enabled = false }', 'enabled = false')
                .replace('stale_after = 30', 'enabled = false'))
    sample = Sample(NOW, NOW, "foreground", SYSTEMD_OFF, 15.0, {
        name: InstanceSample(inst, block(None, "x"), None, RingRead(None, "x"), {})
        for name, inst in cfg.instances.items()}, {})
    doc = build_health(sample)
    assert doc["reasons"] == ["no enabled instances in the configuration"]
    assert http_status(doc) == 503


def test_pid_alive_rejects_dead_zombie_and_recycled_pids():
    import subprocess
    import sys

    from supervisor.aggregator.sources import pid_alive

    me = psutil.Process()
    assert pid_alive(os.getpid(), me.create_time() + 0.1)
    assert pid_alive(os.getpid(), None)
    # A block whose writer "started" long before this process did: the pid was recycled.
    assert not pid_alive(os.getpid(), me.create_time() - 3600)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "child never exited"
        time.sleep(0.01)
    assert not pid_alive(child.pid, None)  # exited, not yet reaped
    child.wait()
    assert not pid_alive(child.pid, None)
    assert not pid_alive(0, None)


def test_pid_hidden_from_proc_falls_back_to_kill_zero(monkeypatch):
    """ProtectProc=invisible + PrivateUsers=yes hide other services' /proc entries."""
    import subprocess
    import sys

    from supervisor.aggregator import sources

    def hidden(pid: int) -> None:
        raise psutil.NoSuchProcess(pid)

    monkeypatch.setattr(sources.psutil, "Process", hidden)
    assert sources.pid_alive(os.getpid(), 0.0)  # exists: kill(pid, 0) succeeds
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not sources.pid_alive(child.pid, None)  # ESRCH
