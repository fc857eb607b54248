"""dashboards/: alert rules pass promtool (syntax and behaviour), and the rules and the Grafana
dashboard only use metrics that something in marketprism actually exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from supervisor import units
from supervisor.aggregator.metrics import MarketprismCollector
from supervisor.aggregator.units import SystemdView
from tests.test_aggregator_health import make_sample, unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARDS = os.path.join(ROOT, "dashboards")
ALERTS = os.path.join(DASHBOARDS, "alerts.yml")
GRAFANA = os.path.join(DASHBOARDS, "marketprism.json")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus); CI has it")
METRIC = re.compile(r"\bmarketprism_[a-z0-9_]+")


def dashboard_exprs() -> list[str]:
    with open(GRAFANA, encoding="utf-8") as fh:
        dash = json.load(fh)
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def exported_sample_names(tmp_path) -> set[str]:
    """Every sample name marketprism can expose: the aggregator's families for a full sample
    (collector, analyzer, ring, systemd units) and the record-failure textfile."""
    sd = SystemdView(True, "", {"collector@okx_spot.service": unit("collector@okx_spot.service"),
                                "analyzer@okx_spot.service": unit("analyzer@okx_spot.service")})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MarketprismCollector(lambda: make_sample(systemd=sd)))
    text = generate_latest(registry).decode()
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    units.record_failure("collector@okx_spot.service", state_dir=str(tmp_path / "state"),
                         textfile_dir=str(textdir))
    for name in os.listdir(textdir):
        text += (textdir / name).read_text()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


@needs_promtool
def test_alert_rules_pass_promtool_check_rules():
    proc = subprocess.run([PROMTOOL, "check", "rules", ALERTS], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 15 rules found" in proc.stdout


@needs_promtool
def test_alert_rules_fire_as_specified_in_alerts_test():
    proc = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=DASHBOARDS,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    """Each panel query, with Grafana's variables filled in, as a recording rule for promtool."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(rules) + "\n")
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_and_dashboard_only_use_exported_metrics(tmp_path):
    exported = exported_sample_names(tmp_path)
    with open(ALERTS, encoding="utf-8") as fh:
        alert_text = "\n".join(line for line in fh if not line.lstrip().startswith("#"))
    used = set(METRIC.findall(alert_text))
    for expr in dashboard_exprs():
        used |= set(METRIC.findall(expr))
    assert used, "no metrics referenced?"
    assert sorted(used - exported) == []


def test_dashboard_covers_the_promised_panels_and_is_well_formed():
    with open(GRAFANA, encoding="utf-8") as fh:
        dash = json.load(fh)
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    exprs = " ".join(dashboard_exprs())
    for needed in ("marketprism_messages_total", "marketprism_latency_seconds_bucket",
                   "marketprism_resyncs_total", "marketprism_unit_restarts_total",
                   "marketprism_memory_hard_limit_bytes", "marketprism_ring_reader_lag_bytes"):
        assert needed in exprs, needed
