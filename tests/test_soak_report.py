"""The soak's invariants: each failure flips exactly its own check, and the exit status."""

from __future__ import annotations

import pytest

from soak import ledger
from soak.figures import Bank
from soak.inject import Entry
from soak.plan import Action
from soak.report import Collected, build_report, render

MB = 1 << 20
S = 10**9
A, B = "okx_spot", "binance_spot"
INSTANCES = {A: ("okx", ("X",)), B: ("binance", ("Y",))}
UNITS = [f"{role}@{i}.service" for role in ("collector", "analyzer") for i in (A, B)] + [
    "marketprism-aggregator.service", "soak-replay.service"]


def steady_bank(rss_end: dict[str, int] | None = None, close_wait: int = 0) -> Bank:
    bank = Bank()
    for t in range(0, 601, 10):
        procs = {}
        for i, unit in enumerate(UNITS):
            rss = (rss_end or {}).get(unit, 50 * MB) if t >= 560 else 50 * MB
            procs[unit] = {"pid": 100 + i, "rss": rss, "fds": 20, "cpu": t / 10,
                           "close_wait": close_wait if t >= 560 else 0, "started": 0.0}
        bank.feed({"t": float(t), "procs": procs, "stats": {},
                   "units": {u: {"ActiveState": "active", "NRestarts": "0"} for u in UNITS}})
    return bank


def collected(**over) -> Collected:
    journals = {"okx_spot": ledger.parse_journal("R 1 100\nG 50 X sequence_gap 105000000000\n"),
                "binance_spot": ledger.parse_journal("R 1 200\n")}
    accounts = {A: ledger.account(A, journals[A], 100, 0, []),
                B: ledger.account(B, journals[B], 200, 0, [])}
    drop = Entry(0.0, 100.0, Action(0.0, "drop", "okx_spot", "X"), "armed", fault_id=1,
                 applied_at=101.0)
    kill = Entry(0.0, 200.0, Action(0.0, "kill9", B, role="collector"), "signalled", pid=5)
    units = {u: {"ActiveState": "active", "NRestarts": "0"} for u in UNITS}
    units["collector@binance_spot.service"]["NRestarts"] = "1"
    c = Collected(
        args={"seed": 1, "rate": 2000}, seconds=600.0, warmup=60.0,
        marks={"started": 0.0, "faults_start": 0.0, "baseline_after": 60.0,
               "end_after": 560.0, "settled": 600.0, "stopped": 610.0},
        instances=INSTANCES, witnesses=["okx_spot"], plan=[drop.action, kill.action],
        entries=[drop, kill], violations=[], bank=steady_bank(), accounts=accounts,
        journals=journals, unit_logs={"collector@binance_spot.service": {"starts": [0.0, 202.0],
                                                              "results": {"signal": 1}}},
        rings={}, final_units=units, final_health=200, replay_start={}, replay_end={},
        settled=True, drained=True)
    for k, v in over.items():
        setattr(c, k, v)
    return c


def verdicts(c: Collected) -> dict[str, bool]:
    return {i["name"]: i["ok"] for i in build_report(c)["invariants"]}


def failing(c: Collected) -> list[str]:
    return [name for name, ok in verdicts(c).items() if not ok]


def test_a_clean_run_passes_every_invariant():
    r = build_report(collected())
    assert r["ok"] and all(i["ok"] for i in r["invariants"]) and len(r["invariants"]) == 7
    assert r["events"]["total"]["produced"] == 300
    assert r["restarts"][f"collector@{B}.service"]["expected"] == {"kill9": 1, "stop_long": 0}
    assert r["faults"]["gap_matching"]["announced"] == 1
    assert "PASSED" in render(r)


def test_loss_outside_gaps_fails_only_the_loss_invariant():
    j = ledger.parse_journal("R 1 90\n")
    c = collected()
    c.accounts["binance_spot"] = ledger.account("binance_spot", j, 200, 0, [])
    assert failing(c) == ["no events lost outside announced gaps"]
    assert not build_report(c)["ok"] and "FAILED" in render(build_report(c))


def test_a_duplicate_fails_exactly_once():
    c = collected()
    c.accounts[B] = ledger.account(B, ledger.parse_journal("R 1 200\nR 5 5\n"), 200, 0, [])
    assert failing(c) == ["exactly once"]


def test_a_fault_without_a_gap_fails_the_gap_invariant():
    c = collected()
    c.journals["okx_spot"] = ledger.parse_journal("R 1 100\n")
    assert failing(c) == ["every venue sequence break shows as a Gap event"]


def test_memory_growth_after_warm_up_fails_the_growth_invariant():
    c = collected(bank=steady_bank({"analyzer@okx_spot.service": 53 * MB}))
    assert failing(c) == ["RSS and open descriptors grow < 5% after warm-up"]


def test_the_test_exchange_growing_is_reported_but_not_judged():
    r = build_report(collected(bank=steady_bank({"soak-replay.service": 80 * MB})))
    assert r["ok"] and r["processes"]["soak-replay.service"]["verdict"] == "grew"


@pytest.mark.parametrize("cw", [1, 3])
def test_close_wait_sockets_at_the_end_fail(cw):
    assert "no socket left in CLOSE_WAIT" in failing(collected(bank=steady_bank(close_wait=cw)))


def test_a_unit_left_failed_fails():
    c = collected()
    c.final_units["analyzer@okx_spot.service"] = {"ActiveState": "failed", "NRestarts": "0"}
    assert failing(c) == ["no unit permanently failed"]


def test_a_restart_nobody_caused_fails():
    c = collected()
    c.final_units["analyzer@okx_spot.service"] = {"ActiveState": "active", "NRestarts": "2"}
    assert failing(c) == ["restarts are the injected ones"]


def test_a_watchdog_that_did_not_fire_fails():
    c = collected(violations=["collector@binance_spot.service: pid 5 still stopped"])
    assert failing(c) == ["restarts are the injected ones"]


def test_faults_applied_are_set_beside_what_the_collectors_counted_per_venue():
    c = collected(replay_end={"venues": {"okx": {"faults_applied": {"malformed": 3}},
                                         "binance_spot": {"faults_applied": {
                                             "rate_limit": 2, "fail_snapshot": 1}}}})
    for pid, n in ((1, 1), (2, 2)):  # a restarted collector: both processes count
        c.bank.feed({"t": 700.0 + pid, "stats": {A: {"pid": pid, "malformed": n}}})
    c.bank.feed({"t": 710.0, "stats": {B: {"pid": 3, "rate_limited": 2, "rest_errors": 1}}})
    x = build_report(c)["crosscheck"]
    assert x["okx"]["malformed"] == {"applied": 3, "counted": 3}
    assert x["binance_spot"]["rate_limit"] == {"applied": 2, "counted": 2}
    assert x["binance_spot"]["fail_snapshot"] == {"applied": 1, "counted": 1}
