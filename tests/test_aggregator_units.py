"""Unit states from ``systemctl show``: parsing, a stand-in systemctl, no systemd at all."""

from __future__ import annotations

import asyncio
import os
import stat

from supervisor.aggregator.units import (
    PROPERTIES,
    UnitQuery,
    parse_show,
    service_mode,
    systemd_booted,
    unit_name,
)

# What systemd 252 prints for `systemctl show -p <PROPERTIES> -- a b c` (property order is
# systemd's own, not the -p order; one blank line between units).
SHOW = """\
Id=collector@okx_spot.service
MainPID=4242
NRestarts=2
Result=success
LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=Mon 2026-11-23 11:20:22 UTC
ActiveEnterTimestampMonotonic=5000000
UnitFileState=enabled

Id=analyzer@okx_spot.service
MainPID=0
NRestarts=10
Result=watchdog
LoadState=loaded
ActiveState=failed
SubState=failed
ActiveEnterTimestamp=
ActiveEnterTimestampMonotonic=0

Id=collector@typo.service
MainPID=0
NRestarts=[not set]
Result=success
LoadState=not-found
ActiveState=inactive
SubState=dead
ActiveEnterTimestamp=n/a
ActiveEnterTimestampMonotonic=0
"""


def run(coro):
    return asyncio.run(coro)


def fake_systemctl(tmp_path, body: str) -> str:
    """A stand-in ``systemctl`` that records its argv and runs ``body`` (sh)."""
    path = tmp_path / "systemctl"
    path.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_parse_show_reads_every_unit_block():
    states = parse_show(SHOW, now_wall=1_000_000.0, now_mono=65.0)
    assert list(states) == ["collector@okx_spot.service", "analyzer@okx_spot.service",
                            "collector@typo.service"]
    col = states["collector@okx_spot.service"]
    assert (col.active_state, col.sub_state, col.result) == ("active", "running", "success")
    assert col.n_restarts == 2 and col.main_pid == 4242
    assert col.since == 1_000_000.0 - 60.0  # entered at monotonic 5 s, now is 65 s
    assert col.since_text == "Mon 2026-11-23 11:20:22 UTC"
    assert col.unit_file_state == "enabled" and col.managed
    ana = states["analyzer@okx_spot.service"]
    assert (ana.active_state, ana.result, ana.n_restarts) == ("failed", "watchdog", 10)
    assert ana.since is None
    assert ana.managed  # failed, not inactive: systemd ran it
    typo = states["collector@typo.service"]
    assert typo.load_state == "not-found" and typo.n_restarts == 0
    assert not typo.managed


def test_parse_show_ignores_junk():
    assert parse_show("") == {}
    assert parse_show("garbage\n\nActiveState=active\n") == {}


def test_unit_names_follow_the_templates():
    assert unit_name("collector", "okx_spot") == "collector@okx_spot.service"
    assert unit_name("analyzer", "okx_spot") == "analyzer@okx_spot.service"


def test_fetch_runs_one_systemctl_show_for_all_units(tmp_path):
    exe = fake_systemctl(tmp_path, f"cat <<'EOF'\n{SHOW}EOF")
    view = run(UnitQuery(booted=True, systemctl=exe).fetch(
        ["collector@okx_spot.service", "analyzer@okx_spot.service"]))
    assert view.available and view.error == ""
    assert view.units["analyzer@okx_spot.service"].result == "watchdog"
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:2] == ["show", "--no-pager"]
    assert argv[argv.index("-p") + 1] == ",".join(PROPERTIES)
    assert argv[-3:] == ["--", "collector@okx_spot.service", "analyzer@okx_spot.service"]


def test_fetch_reports_a_failing_systemctl_without_raising(tmp_path):
    exe = fake_systemctl(tmp_path, "echo 'Failed to connect to bus: Host is down' >&2; exit 1")
    view = run(UnitQuery(booted=True, systemctl=exe).fetch(["collector@x.service"]))
    assert view.available and view.units == {}
    assert view.error == "systemctl show failed (1): Failed to connect to bus: Host is down"


def test_fetch_gives_up_on_a_hung_systemctl(tmp_path):
    exe = fake_systemctl(tmp_path, "exec sleep 30")
    view = run(UnitQuery(booted=True, systemctl=exe, timeout=0.3).fetch(["x.service"]))
    assert view.error == "systemctl show timed out after 0.3s" and view.units == {}


def test_without_systemd_nothing_is_run_and_the_reason_is_given(tmp_path):
    exe = fake_systemctl(tmp_path, "exit 0")
    query = UnitQuery(booted=False, systemctl=exe)
    view = run(query.fetch(["collector@x.service"]))
    assert not view.available
    assert view.error == "systemd unavailable (PID 1 is not systemd)"
    assert not (tmp_path / "argv").exists()


def test_systemd_booted_looks_for_run_systemd_system(tmp_path):
    assert not systemd_booted(str(tmp_path / "nope"))
    os.mkdir(tmp_path / "system")
    assert systemd_booted(str(tmp_path / "system"))


def test_service_mode_is_systemd_only_for_a_service_of_a_booted_systemd():
    assert service_mode({"INVOCATION_ID": "abc"}, booted=True) == ("systemd", "")
    assert service_mode({}, booted=True) == (
        "foreground", "systemd unavailable (foreground mode: not started by systemd)")
    assert service_mode({"INVOCATION_ID": "abc"}, booted=False) == (
        "foreground", "systemd unavailable (PID 1 is not systemd)")


def test_a_given_reason_explains_why_units_are_not_queried():
    query = UnitQuery(booted=False, reason="systemd unavailable (foreground mode: x)")
    view = run(query.fetch(["collector@x.service"]))
    assert view.error == "systemd unavailable (foreground mode: x)" and not view.available
