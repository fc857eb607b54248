"""The soak's seeded fault plan and the injector that applies it (fake lab, real replay)."""

from __future__ import annotations

import subprocess
from collections import defaultdict

import pytest

from soak.inject import Injector
from soak.plan import NET_KINDS, PROC_KINDS, Action, PlanConfig, choose_witnesses, make_plan
from supervisor.replay.harness import ReplayThread

INSTANCES = {
    "okx_spot": ("okx", ("BTC-USDT", "ETH-USDT")),
    "okx_derivatives": ("okx", ("BTC-USDT-PERP", "ETH-USDT-PERP")),
    "binance_spot": ("binance", ("BTC-USDT", "ETH-USDT")),
    "binance_derivatives": ("binance", ("BTC-USDT-PERP", "ETH-USDT-PERP")),
    "deribit_derivatives": ("deribit", ("BTC-USD-PERP", "ETH-USD-PERP")),
}
CFG = PlanConfig(seconds=3600, seed=5)


@pytest.fixture(scope="module")
def plan():
    return make_plan(CFG, INSTANCES)


def test_the_same_seed_gives_the_same_plan(plan):
    assert make_plan(CFG, INSTANCES) == plan
    assert make_plan(PlanConfig(seconds=3600, seed=6), INSTANCES) != plan


def test_faults_run_throughout_and_are_sorted(plan):
    times = [a.at for a in plan]
    assert times == sorted(times)
    assert CFG.quiet_start <= times[0] and times[-1] < CFG.seconds + 1
    assert times[-1] > CFG.seconds * 0.9
    # about one network fault every net_every seconds
    net = [a for a in plan if not a.is_process]
    assert 0.7 < len(net) * CFG.net_every / CFG.seconds < 1.5


def test_every_kind_the_brief_names_is_planned(plan):
    kinds = {a.kind for a in plan}
    assert set(NET_KINDS) | set(PROC_KINDS) <= kinds


def test_venue_specific_faults_target_only_their_venue(plan):
    for a in plan:
        allowed = NET_KINDS.get(a.kind, (0, ()))[1]
        if allowed:
            assert INSTANCES[a.instance][0] in allowed, a
        if not a.is_process:
            assert a.symbol in INSTANCES[a.instance][1]


def test_rest_faults_are_followed_by_a_drop_that_forces_a_snapshot(plan):
    for i, a in enumerate(plan):
        if a.kind in ("slow_snapshot", "fail_snapshot", "rate_limit"):
            follow = [b for b in plan[i + 1:] if b.at <= a.at + 0.3 + 1e-9]
            assert Action(a.at + 0.3, "drop", a.instance, a.symbol) in follow


def test_witnesses_are_never_killed_or_stopped(plan):
    spared = choose_witnesses(list(INSTANCES), CFG.witnesses, CFG.seed)
    assert len(spared) == 2
    hit = {a.instance for a in plan if a.is_process}
    assert hit and not hit & set(spared)


def test_process_faults_on_one_unit_keep_their_spacing_and_the_start_limit(plan):
    by_unit: dict[str, list[float]] = defaultdict(list)
    for a in plan:
        if a.is_process:
            assert a.role in ("collector", "analyzer")
            by_unit[a.unit].append(a.at)
    for times in by_unit.values():
        assert all(b - a >= CFG.unit_spacing for a, b in zip(times, times[1:], strict=False))
        # systemd gives up after 10 starts in 300 s
        assert all(sum(1 for t in times if s <= t < s + 300) < 10 for s in times)


def test_short_stops_end_well_before_the_watchdog(plan):
    stops = [a.params["seconds"] for a in plan if a.kind == "stop_short"]
    assert stops and max(stops) <= CFG.watchdog_sec / 2


# ----- the injector ------------------------------------------------------------------------------
class FakeLab:
    """Records commands; ``units`` gives systemctl show answers, ``stopped`` the pids ps
    reports in state T."""

    def __init__(self) -> None:
        self.units: dict[str, dict[str, str]] = {}
        self.stopped: set[int] = set()
        self.commands: list[tuple[str, ...]] = []

    def show(self, unit: str, *props: str) -> dict[str, str]:
        return self.units.get(unit, {"ActiveState": "inactive", "SubState": "dead",
                                     "MainPID": "0"})

    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        if cmd[0] == "ps":
            pid = int(cmd[-1])
            return subprocess.CompletedProcess(cmd, 0 if pid in self.stopped else 1,
                                               "T\n" if pid in self.stopped else "", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def injector():
    lab, clock = FakeLab(), Clock()
    lab.units["collector@okx_spot.service"] = {"ActiveState": "active", "SubState": "running",
                                               "MainPID": "42"}
    return Injector(lab, "http://127.0.0.1:1", clock=clock), lab, clock


def test_kill9_signals_the_units_current_main_pid(injector):
    inj, lab, _ = injector
    e = inj.apply(Action(1, "kill9", "okx_spot", role="collector"), 1)
    assert e.outcome == "signalled" and e.pid == 42
    assert ("kill", "-KILL", "42") in lab.commands


def test_a_unit_that_is_not_active_is_skipped_and_the_skip_logged(injector):
    inj, lab, _ = injector
    e = inj.apply(Action(1, "kill9", "okx_spot", role="analyzer"), 1)
    assert e.outcome == "skipped: analyzer@okx_spot.service is inactive/dead"
    assert not [c for c in lab.commands if c[0] == "kill"]


def test_a_short_stop_is_continued_after_its_seconds(injector):
    inj, lab, clock = injector
    inj.apply(Action(1, "stop_short", "okx_spot", role="collector", params={"seconds": 5}), 1)
    assert lab.commands[-1] == ("kill", "-STOP", "42") and inj.pending == 1
    clock.now += 4.9
    inj.due()
    assert ("kill", "-CONT", "42") not in lab.commands
    clock.now += 0.2
    inj.due()
    assert lab.commands[-1] == ("kill", "-CONT", "42") and inj.pending == 0


def test_a_long_stop_the_watchdog_resolved_is_fine(injector):
    inj, lab, clock = injector
    e = inj.apply(Action(1, "stop_long", "okx_spot", role="collector"), 1)
    clock.now += 30 + 15 + 20
    inj.due()
    assert e.notes == ["replaced by the watchdog"] and not inj.violations
    assert ("kill", "-CONT", "42") not in lab.commands


def test_a_long_stop_still_stopped_is_a_violation_and_is_continued(injector):
    inj, lab, clock = injector
    inj.apply(Action(1, "stop_long", "okx_spot", role="collector"), 1)
    lab.stopped.add(42)
    clock.now += 65
    inj.due()
    assert inj.violations and "watchdog did not fire" in inj.violations[0]
    assert lab.commands[-1] == ("kill", "-CONT", "42")


def test_release_continues_whatever_is_still_stopped(injector):
    inj, lab, _ = injector
    inj.apply(Action(1, "stop_short", "okx_spot", role="collector", params={"seconds": 9}), 1)
    inj.release()
    assert lab.commands[-1] == ("kill", "-CONT", "42") and inj.pending == 0


def test_network_faults_are_armed_on_the_replay_and_unfired_ones_disarmed_at_the_end():
    with ReplayThread() as rx:
        inj = Injector(FakeLab(), rx.url)
        e = inj.apply(Action(1, "slow_snapshot", "binance_spot", "BTC-USDT",
                             params={"seconds": 2.5}), 1)
        assert e.outcome == "armed" and e.fault_id
        armed = rx.stats()["faults_armed"]
        assert [(f["venue"], f["kind"], f["symbol"], f["params"]) for f in armed] == [
            ("binance_spot", "slow_snapshot", "BTCUSDT", {"seconds": 2.5})]
        assert inj.finish() == 1
        assert e.notes == ["never fired (disarmed at the end)"] and not e.applied_at
        assert rx.stats()["faults_armed"] == []


def test_a_fault_that_fired_gets_its_time():
    with ReplayThread() as rx:
        inj = Injector(FakeLab(), rx.url)
        e = inj.apply(Action(1, "drop", "okx_spot", "BTC-USDT"), 1)
        rx.call(rx.rx.faults.take, "okx", "drop", "BTC-USDT")  # as the server would
        inj.due()
        assert e.applied_at >= e.at and inj.finish() == 0


def test_a_rejected_fault_is_logged_as_an_error():
    with ReplayThread() as rx:
        inj = Injector(FakeLab(), rx.url)
        e = inj.apply(Action(1, "bad_checksum", "deribit_derivatives", "BTC-USD-PERP"), 1)
        assert e.outcome.startswith("error: ValueError: HTTP 400")


# ----- conditioning --------------------------------------------------------------------------
def test_conditioning_runs_every_path_at_its_largest_size_before_the_baseline():
    cfg = PlanConfig(seconds=600, seed=5, condition_until=65)
    plan = make_plan(cfg, INSTANCES)
    early = [a for a in plan if a.at < cfg.condition_until]
    spared = choose_witnesses(list(INSTANCES), cfg.witnesses, cfg.seed)
    for inst, (exchange, symbols) in INSTANCES.items():
        mine = [a for a in early if a.instance == inst]
        kinds = {a.kind for a in mine}
        assert {"disconnect", "stall", "malformed", "drop"} <= kinds
        assert {a.params["mode"] for a in mine if a.kind == "malformed"} == {"json", "fields"}
        assert [a.params["seconds"] for a in mine if a.kind == "stall"] == [4.0]
        for sym in symbols:
            on = {a.kind for a in mine if a.symbol == sym}
            if exchange == "okx":
                assert {"bad_checksum", "reset"} <= on
            if exchange == "binance":
                assert {"slow_snapshot", "fail_snapshot", "rate_limit"} <= on
                assert [a.params["seconds"] for a in mine
                        if a.kind == "slow_snapshot" and a.symbol == sym] == [8.0]
        stops = sorted(a.role for a in mine if a.kind == "stop_short")
        assert stops == ([] if inst in spared else ["analyzer", "collector"])
        assert all(a.params["seconds"] == 15.0 for a in mine if a.kind == "stop_short")
    assert not [a for a in early if a.kind in ("kill9", "stop_long")]


def test_conditioning_stops_end_before_the_random_process_faults_start_on_that_unit():
    cfg = PlanConfig(seconds=600, seed=9, condition_until=65)
    plan = make_plan(cfg, INSTANCES)
    for a in plan:
        if a.kind == "stop_short" and a.at < cfg.condition_until:
            later = [b for b in plan if b.unit == a.unit and b.at > a.at]
            assert not later or later[0].at >= a.at + 15.0 + 30.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_process_fault_kind_hits_both_roles_in_a_ten_minute_run(seed):
    plan = make_plan(PlanConfig(seconds=600, seed=seed, condition_until=65), INSTANCES)
    pairs = {(a.kind, a.role) for a in plan if a.is_process and a.at >= 65}
    assert pairs == {(k, r) for k in PROC_KINDS for r in ("collector", "analyzer")}
