"""/metrics families from a sample: names, values, histograms, promtool, the textfile view."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from supervisor.aggregator.metrics import (
    TEXTFILE_FAMILIES,
    MarketprismCollector,
    cumulative_buckets,
)
from supervisor.aggregator.sources import RingRead
from supervisor.aggregator.textfile import write_atomic, write_textfile
from supervisor.aggregator.units import SystemdView
from tests.test_aggregator_health import (
    NOW,
    analyzer_doc,
    block,
    collector_doc,
    make_sample,
    unit,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
OKX = {"instance": "okx_spot", "exchange": "okx", "market": "spot"}


def exposition(sample, textfile: bool = False) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MarketprismCollector(lambda: sample, textfile=textfile, version="0.1.0",
                                           json_backend="orjson"))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got, name: str, **labels: str) -> float:
    return got[(name, frozenset({**OKX, **labels}.items()))]


def systemd_sample():
    sd = SystemdView(True, "", {
        "collector@okx_spot.service": unit("collector@okx_spot.service", restarts=3),
        "analyzer@okx_spot.service": unit("analyzer@okx_spot.service", "failed", "failed",
                                          result="exit-code"),
    })
    return make_sample(systemd=sd)


def test_collector_counters_match_the_stats_document():
    got = samples(exposition(make_sample()))
    doc = collector_doc()
    assert value(got, "marketprism_messages_total") == doc["messages"]
    assert value(got, "marketprism_message_bytes_total") == doc["bytes"]
    assert value(got, "marketprism_reconnects_total") == 4
    assert value(got, "marketprism_malformed_messages_total") == 5
    assert value(got, "marketprism_rest_errors_total") == 6
    assert value(got, "marketprism_rate_limited_responses_total") == 7
    assert value(got, "marketprism_zmq_dropped_messages_total") == 8
    assert value(got, "marketprism_zmq_unsubscribed_messages_total") == 77
    assert value(got, "marketprism_zmq_subscriptions") == 2
    assert value(got, "marketprism_resyncs_total", reason="checksum") == 2
    assert value(got, "marketprism_resyncs_total", reason="sequence gap") == 1
    assert value(got, "marketprism_events_total", type="BookDelta") == 120000
    assert value(got, "marketprism_books_synced") == 2
    assert value(got, "marketprism_books_configured") == 2
    assert value(got, "marketprism_last_message_age_seconds") == 0.25
    assert value(got, "marketprism_connected") == 1


def test_process_metrics_are_per_role_in_base_units():
    got = samples(exposition(make_sample()))
    assert value(got, "marketprism_process_resident_memory_bytes", role="collector") == 50 * 2**20
    assert value(got, "marketprism_process_resident_memory_bytes", role="analyzer") == 30 * 2**20
    assert value(got, "marketprism_process_cpu_seconds_total", role="collector") == 12.5
    assert value(got, "marketprism_memory_hard_limit_bytes", role="collector") == 160 * 2**20
    assert value(got, "marketprism_memory_soft_limit_bytes", role="collector") == 120 * 2**20
    assert value(got, "marketprism_event_loop_lag_max_seconds", role="collector") == 0.02
    assert value(got, "marketprism_instance_healthy") == 1
    assert value(got, "marketprism_stats_block_up", role="analyzer") == 1
    assert value(got, "marketprism_process_running", role="collector") == 1
    assert value(got, "marketprism_ready", role="collector") == 1


def test_latency_histogram_exports_cumulative_buckets_with_inf_equal_to_count():
    got = samples(exposition(make_sample()))
    stage = {"stage": "receive_to_ring"}
    # observed: 3 µs, 7 µs, 7 µs, 40 µs, 2 s (beyond the last 1 s bound)
    assert value(got, "marketprism_latency_seconds_bucket", le="5e-06", **stage) == 1
    assert value(got, "marketprism_latency_seconds_bucket", le="1e-05", **stage) == 3
    assert value(got, "marketprism_latency_seconds_bucket", le="2e-05", **stage) == 3
    assert value(got, "marketprism_latency_seconds_bucket", le="5e-05", **stage) == 4
    assert value(got, "marketprism_latency_seconds_bucket", le="1.0", **stage) == 4
    assert value(got, "marketprism_latency_seconds_bucket", le="+Inf", **stage) == 5
    assert value(got, "marketprism_latency_seconds_count", **stage) == 5
    assert value(got, "marketprism_latency_seconds_sum", **stage) == pytest.approx(2.000057)


@pytest.mark.parametrize("bad", [
    None, [], {"bounds": [1.0], "counts": [1], "sum": 0}, {"bounds": [2.0, 1.0],
                                                            "counts": [0, 0, 0], "sum": 0},
    {"bounds": [1.0], "counts": [1, -1], "sum": 0}, {"bounds": ["a"], "counts": [0, 0],
                                                     "sum": 0},
    {"bounds": [1.0], "counts": [0, 0]},
])
def test_malformed_histograms_are_skipped(bad):
    assert cumulative_buckets(bad) is None
    got = samples(exposition(make_sample(collector=block(collector_doc(latency_recv_ring=bad)))))
    assert not any(dict(labels).get("stage") == "receive_to_ring"
                   and dict(labels)["instance"] == "okx_spot" for _, labels in got)
    assert value(got, "marketprism_messages_total") == 123456  # the rest is still there


def test_symbol_label_is_bounded_by_the_configured_symbols():
    got = samples(exposition(make_sample()))
    assert value(got, "marketprism_book_levels", symbol="BTC-USDT") == 800
    assert not any(dict(labels).get("symbol") == "XRP-USDT" for _, labels in got)


def test_analyzer_counters_quality_and_plugin_are_exported():
    text = exposition(make_sample())
    got = samples(text)
    assert value(got, "marketprism_analyzer_lag_records") == 12
    assert value(got, "marketprism_analyzer_committed_sequence") == 123000
    assert value(got, "marketprism_analyzer_lost_records_total") == 3
    assert value(got, "marketprism_analyzer_overruns_total") == 1
    assert value(got, "marketprism_analyzer_gaps_total") == 1
    assert value(got, "marketprism_analyzer_events_total", type="trade") == 3391
    assert ("marketprism_analyzer_events_total", frozenset(OKX.items())) not in got
    assert value(got, "marketprism_analyzer_upstream_gaps_total", reason="checksum") == 2
    assert value(got, "marketprism_quality_violations_total", check="time_gap") == 2
    assert value(got, "marketprism_quality_violations_total", check="crossed_book") == 1
    assert value(got, "marketprism_quality_symbol_violations_total", check="time_gap",
                 symbol="BTC-USDT") == 2
    assert not any(dict(labels).get("symbol") == "DOGE-USDT" for _, labels in got)
    assert value(got, "marketprism_quality_crossed_symbols") == 1
    assert value(got, "marketprism_analyzer_plugin_errors_total") == 1
    assert value(got, "marketprism_analyzer_plugin_info", plugin="example", state="ok") == 1
    assert value(got, "marketprism_latency_seconds_count", stage="receive_to_analyzer") == 1
    assert "marketprism_analyzer_event_rate" not in text  # derivable: rate(events_total)


def test_unknown_analyzer_fields_are_exported_generically():
    got = samples(exposition(make_sample()))
    assert value(got, "marketprism_analyzer_plugin_calls_total") == 77
    assert value(got, "marketprism_analyzer_batch_fill") == 0.5
    assert "# TYPE marketprism_analyzer_batch_fill untyped" in exposition(make_sample())


def test_analyzer_field_colliding_with_a_known_family_is_dropped():
    doc = analyzer_doc(lag_records=5.5)  # would be analyzer_lag_records, already a gauge
    got = samples(exposition(make_sample(analyzer=block(doc))))
    assert value(got, "marketprism_analyzer_lag_records") == 12


def test_ring_and_reader_metrics_come_from_the_ring_stats():
    got = samples(exposition(make_sample()))
    assert value(got, "marketprism_ring_records_written_total") == 123403
    assert value(got, "marketprism_ring_last_sequence") == 123403
    assert value(got, "marketprism_ring_writer_running") == 1
    assert value(got, "marketprism_ring_reader_lag_records", reader="analyzer") == 12
    assert value(got, "marketprism_ring_reader_lost_records_total", reader="analyzer") == 3
    assert value(got, "marketprism_ring_reader_overruns_total", reader="analyzer") == 1
    assert value(got, "marketprism_ring_reader_lag_records", reader="nats") == 0
    text = exposition(make_sample(ring=RingRead(None, "no ring")))
    assert "marketprism_ring_last_sequence{" not in text.split("deribit")[0]


def test_unit_state_restarts_and_since_under_systemd():
    got = samples(exposition(systemd_sample()))
    assert value(got, "marketprism_unit_restarts_total", role="collector") == 3
    assert value(got, "marketprism_unit_active", role="collector") == 1
    assert value(got, "marketprism_unit_active", role="analyzer") == 0
    assert value(got, "marketprism_unit_state", role="analyzer", state="failed") == 1
    assert value(got, "marketprism_unit_state", role="analyzer", state="active") == 0
    assert value(got, "marketprism_unit_active_since_seconds", role="collector") == NOW - 60
    assert value(got, "marketprism_instance_healthy") == 0
    assert got[("marketprism_systemd_available", frozenset())] == 1


def test_missing_blocks_export_up_zero_and_read_errors():
    got = samples(exposition(make_sample()))
    off = {"instance": "binance_spot", "exchange": "binance", "market": "spot",
           "role": "collector"}
    assert got[("marketprism_stats_block_up", frozenset(off.items()))] == 0
    assert got[("marketprism_stats_block_read_errors_total", frozenset(off.items()))] == 4
    assert got[("marketprism_instance_enabled", frozenset(
        {k: v for k, v in off.items() if k != "role"}.items()))] == 0


def test_garbage_documents_never_raise():
    garbage = collector_doc(messages="many", resyncs=[1], events={"Trade": None}, rss=None,
                            book_levels="x", latency_recv_ring={"bounds": 3})
    text = exposition(make_sample(collector=block(garbage), analyzer=block({"x": {}})))
    got = samples(text)
    assert ("marketprism_messages_total", frozenset(OKX.items())) not in got
    assert value(got, "marketprism_reconnects_total") == 4


@needs_promtool
@pytest.mark.parametrize("variant", ["foreground", "systemd", "textfile"])
def test_exposition_passes_promtool_check_metrics(variant):
    sample = systemd_sample() if variant == "systemd" else make_sample()
    text = exposition(sample, textfile=variant == "textfile")
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


def test_textfile_view_keeps_only_instance_level_families():
    text = exposition(systemd_sample(), textfile=True)
    names = {fam.name for fam in text_string_to_metric_families(text)}
    assert names <= TEXTFILE_FAMILIES
    assert {"marketprism_instance_healthy", "marketprism_unit_restarts",
            "marketprism_process_resident_memory_bytes"} <= names
    assert "marketprism_latency_seconds" not in names


def test_textfile_write_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "marketprism.prom"
    path.write_text("old\n")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MarketprismCollector(make_sample, textfile=True))
    inode = path.stat().st_ino
    size = write_textfile(str(path), registry)
    assert path.stat().st_size == size and path.stat().st_ino != inode  # renamed over
    assert "marketprism_instance_healthy" in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(tmp_path)) == ["marketprism.prom"]


def test_textfile_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "marketprism.prom"
    path.write_text("old\n")
    os.mkdir(tmp_path / f".marketprism.prom.{os.getpid()}.tmp")  # the temp name is taken
    with pytest.raises(OSError):
        write_atomic(str(path), b"new\n")
    assert path.read_text() == "old\n"
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "missing" / "x.prom"), b"new\n")
