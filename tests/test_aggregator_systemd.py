"""The aggregator as ``marketprism-aggregator.service`` in a real booted systemd (tests/lab).

A real collector@X runs under its hardened unit against the replay exchange (served by this
test on the host: the container shares the network namespace), and the aggregator under
its own: /health must read the unit states through ``systemctl show``, see the collector's
pid although ``ProtectProc=invisible`` hides it from /proc, follow a ``kill -9`` and
systemd's restart, and count the restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor import jsonlib
from tests import lab as lablib
from tests.test_aggregator_daemon import free_port, get, metric_values, wait_for

pytestmark = pytest.mark.systemd
harness = pytest.importorskip("supervisor.replay.harness",
                              reason="replay exchange not available")
if lablib.available():
    pytest.skip(lablib.available(), allow_module_level=True)

INSTANCE = "binance_spot"
VENUE = "binance_spot"


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Any, int, int]]:
    health, metrics = free_port(), free_port()
    with harness.ReplayThread(rate=100, seed=11) as rx:
        ws, rest = rx.endpoints(VENUE)
        config = (f"[aggregator]\nhealth_port = {health}\nmetrics_port = {metrics}\n"
                  f"interval = 0.5\n\n[instances.{INSTANCE}]\nexchange = \"binance\"\n"
                  f"market = \"spot\"\nsymbols = [\"BTC-USDT\", \"ETH-USDT\"]\n"
                  f"ws_url = \"{ws}\"\nrest_url = \"{rest}\"\n"
                  "analyzer = { enabled = false }\n")
        with lablib.SystemdLab(name=f"mpagg{os.getpid() % 10000}") as box:
            box.install_checkout(config)
            box.systemctl("start", f"collector@{INSTANCE}.service")
            box.systemctl("start", "marketprism-aggregator.service")
            yield box, health, metrics


def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(f"http://127.0.0.1:{port}/health")
    return status, jsonlib.loads(body)


def test_health_reads_unit_states_and_sees_the_sandboxed_collector(lab):
    box, hport, mport = lab
    # Type=notify: `systemctl start` returned, so both ports already answer.
    assert get(f"http://127.0.0.1:{mport}/metrics")[0] == 200
    doc = wait_for(lambda: (lambda s, d: d if s == 200 else None)(*health(hport)), 30,
                   "/health 200 under systemd")
    assert doc["mode"] == "systemd" and doc["systemd"] == {"available": True, "error": ""}
    proc = doc["processes"][INSTANCE]
    unit = proc["units"]["collector"]
    assert (unit["active_state"], unit["sub_state"]) == ("active", "running")
    main_pid = int(box.prop(f"collector@{INSTANCE}.service", "MainPID"))
    assert unit["main_pid"] == main_pid == proc["collector"]["pid"]
    assert proc["collector"]["pid_alive"] is True
    status = box.prop("marketprism-aggregator.service", "StatusText")
    assert status == "1/1 instances healthy"


def test_kill_9_is_seen_and_systemd_restart_is_counted(lab):
    box, hport, mport = lab
    wait_for(lambda: health(hport)[0] == 200, 30, "/health 200")
    unit = f"collector@{INSTANCE}.service"
    before = int(box.prop(unit, "NRestarts"))
    box.run("kill", "-9", box.prop(unit, "MainPID"))
    wait_for(lambda: health(hport)[0] == 503, 15, "/health 503 after kill -9")
    doc = wait_for(lambda: (lambda s, d: d if s == 200 else None)(*health(hport)), 60,
                   "/health 200 after systemd's restart")
    assert doc["processes"][INSTANCE]["units"]["collector"]["n_restarts"] == before + 1
    status, body = get(f"http://127.0.0.1:{mport}/metrics")
    values = metric_values(body.decode())
    key = frozenset({"instance": INSTANCE, "exchange": "binance", "market": "spot",
                     "role": "collector"}.items())
    assert values[("marketprism_unit_restarts_total", key)] == before + 1


def test_marketprism_status_shows_unit_states_with_and_without_the_aggregator(lab):
    box, hport, _ = lab
    wait_for(lambda: health(hport)[0] == 200, 60, "/health 200")
    status = [str(lablib.VENV_BIN / "marketprism"), "status"]
    proc = box.run(*status, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(INSTANCE))
    assert row.split()[1:3] == ["healthy", "active/running"]
    box.systemctl("stop", "marketprism-aggregator.service")
    proc = box.run(*status, check=False)  # built locally from shm and systemctl show
    assert "aggregator not reachable at http://127.0.0.1:" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith(INSTANCE))
    assert row.split()[1:3] == ["healthy", "active/running"], proc.stdout
    assert "mode systemd" in proc.stdout.splitlines()[0]


# The node_exporter flags the README documents for our units' state and restart counts
# (Debian: ARGS= in /etc/default/prometheus-node-exporter). No quotes or backslashes: the
# unit passes $ARGS split on whitespace, without a shell.
NODE_EXPORTER_ARGS = ("--collector.systemd "
                      "--collector.systemd.unit-include=(collector|analyzer)@.+[.]service"
                      "|marketprism-.+[.]service "
                      "--collector.systemd.enable-restarts-metrics "
                      "--collector.systemd.enable-start-time-metrics")


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus-node-exporter"),
                    reason="prometheus-node-exporter not installed")
def test_documented_node_exporter_flags_export_our_unit_states_and_restarts(lab):
    box, _, _ = lab
    port = free_port()
    box.write("/etc/default/prometheus-node-exporter",
              f'ARGS="--web.listen-address=127.0.0.1:{port} --collector.disable-defaults '
              f'{NODE_EXPORTER_ARGS}"\n')
    box.systemctl("restart", "prometheus-node-exporter.service")
    unit = f"collector@{INSTANCE}.service"
    active = f'node_systemd_unit_state{{name="{unit}",state="active",type="notify"}} 1'

    def scraped() -> str | None:
        try:
            status, body = get(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            return None
        return body.decode() if status == 200 and active in body.decode() else None

    text = wait_for(scraped, 30, f"node_exporter to report {unit} active")
    restarts = int(box.prop(unit, "NRestarts"))
    assert f'node_systemd_service_restart_total{{name="{unit}"}} {restarts}' in text
    assert 'node_systemd_unit_state{name="marketprism-aggregator.service"' in text
    assert 'name="dbus.service"' not in text  # only our units
