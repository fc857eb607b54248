"""The soak's figures and invariants, as one JSON-able document and a text summary.

:func:`build_report` takes everything a run collected (:class:`Collected`) and returns the
report; ``report["ok"]`` is the exit status. The invariants, each with the figures that
decide it:

1. **no loss outside announced gaps**: every ring seq of every instance reached the
   analyzer's plug-in, or lies in a lap the analyzer announced and the ring counted;
2. **exactly once**: no seq reached the plug-in twice across the analyzer restarts;
3. **every venue sequence break shows as a Gap event**: no book delta in any ring breaks
   its chain silently, and every sequence-breaking fault injected is followed by a Gap on
   that symbol (or the collector restarted from a fresh snapshot meanwhile);
4. **RSS and open descriptors grow less than 5% after warm-up** for every process judged
   (alive from the baseline to the end), with at least one collector and one analyzer judged;
5. **no socket left in CLOSE_WAIT** by any process at the end;
6. **no unit permanently failed**: none ever ``failed``, all active after the settle;
7. **restarts are the injected ones**: each unit's NRestarts equals the kill -9s and the
   over-long SIGSTOPs it received, and the watchdog replaced every process stopped for
   longer than WatchdogSec.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from typing import Any

from soak import ledger
from soak.figures import Bank, growth, merge_hist, percentiles, series
from soak.inject import Entry
from soak.plan import Action, summary
from supervisor.replay.faults import canonical_venue

LIMIT_PCT = 5.0
REPLAY_UNIT = "soak-replay.service"


@dataclass
class Collected:
    """Everything one run gathered (see :mod:`soak.run`)."""

    args: dict[str, Any]
    seconds: float  # fault phase
    warmup: float
    marks: dict[str, float]  # wall-clock milestones
    instances: dict[str, tuple[str, tuple[str, ...]]]
    witnesses: list[str]
    plan: list[Action]
    entries: list[Entry]
    violations: list[str]
    bank: Bank
    accounts: dict[str, ledger.Account]
    journals: dict[str, ledger.Journal]
    unit_logs: dict[str, dict[str, Any]]
    rings: dict[str, Any]
    final_units: dict[str, dict[str, str]]
    final_health: int
    replay_start: dict[str, Any]
    replay_end: dict[str, Any]
    settled: bool
    drained: bool
    notes: list[str] = field(default_factory=list)


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


# ----- sections -----------------------------------------------------------------------------
def fault_section(c: Collected) -> dict[str, Any]:
    applied: dict[str, int] = {}
    skipped = errors = unfired = 0
    for e in c.entries:
        if e.outcome.startswith("skipped"):
            skipped += 1
        elif e.outcome.startswith("error"):
            errors += 1
        elif e.fault_id and not e.applied_at:
            unfired += 1
        else:
            applied[e.action.kind] = applied.get(e.action.kind, 0) + 1
    breaking = [ledger.Applied(e.action.instance, e.action.symbol, e.action.kind,
                               int(e.at * 1e9), int(e.applied_at * 1e9))
                for e in c.entries if e.action.kind in ledger.BREAKING and e.applied_at]
    starts = {i: [int(t * 1e9) for t in c.unit_logs.get(f"collector@{i}.service", {})
                  .get("starts", [])[1:]] for i in c.instances}
    matching = ledger.match_faults(breaking, {i: j.gaps for i, j in c.journals.items()},
                                   starts)
    replay = {v: row.get("faults_applied", {})
              for v, row in c.replay_end.get("venues", {}).items()}
    return {"planned": summary(c.plan), "applied": dict(sorted(applied.items())),
            "skipped": skipped, "errors": errors, "never_fired": unfired,
            "replay_applied": replay, "gap_matching": matching,
            "witnesses": c.witnesses,
            "log": [e.to_dict(c.marks.get("faults_start", 0.0)) for e in c.entries]}


def restart_section(c: Collected) -> dict[str, Any]:
    expected: dict[str, dict[str, int]] = {}
    for e in c.entries:
        if e.action.is_process and e.outcome == "signalled" and e.action.kind != "stop_short":
            row = expected.setdefault(e.action.unit, {"kill9": 0, "stop_long": 0})
            row[e.action.kind] += 1
    out = {}
    for unit, props in sorted(c.final_units.items()):
        n = int(props.get("NRestarts") or 0)
        exp = expected.get(unit, {"kill9": 0, "stop_long": 0})
        logs = c.unit_logs.get(unit, {})
        out[unit] = {"NRestarts": n, "expected": exp, "unexpected": n - sum(exp.values()),
                     "results": logs.get("results", {}), "exits": logs.get("exits", {})}
    return out


def process_section(c: Collected) -> dict[str, Any]:
    m = c.marks
    min_span = max(30.0, c.seconds / 4)
    out = {}
    for unit, samples in sorted(c.bank.series.items()):
        g = growth(samples, m["baseline_after"], m["end_after"], c.warmup, min_span, LIMIT_PCT,
                   started_before=m["faults_start"])
        by_pid: dict[int, float] = {}
        for s in samples:
            by_pid[s["pid"]] = max(by_pid.get(s["pid"], 0.0), s["cpu"])
        g["cpu_seconds"] = round(sum(by_pid.values()), 1)
        g["infra"] = unit == REPLAY_UNIT  # the test exchange: reported, not judged
        g["series"] = series(samples, m["faults_start"])
        out[unit] = g
    return out


def event_section(c: Collected) -> dict[str, Any]:
    span = max(1.0, c.marks.get("stopped", 0) - c.marks.get("started", 0))
    out: dict[str, Any] = {}
    for inst, acc in c.accounts.items():
        d = acc.to_dict()
        d["records_per_s"] = round(acc.produced / span, 1)
        ring = c.rings.get(inst, {})
        d["ring_bytes"] = ring.get("bytes_written", 0)
        d["ring_attaches"] = ring.get("writer_attach_count", 0)
        d["journal_ranges"] = len(c.journals[inst].ranges) if inst in c.journals else 0
        d["announced_laps"] = [list(x) for x in c.unit_logs.get(
            f"analyzer@{inst}.service", {}).get("laps", [])[:20]]
        out[inst] = d
    keys = ("produced", "consumed", "lapped", "lost_outside_gaps", "duplicates",
            "silent_breaks", "snapshots")
    out["total"] = {k: sum(a.to_dict()[k] for a in c.accounts.values()) for k in keys}
    out["total"]["records_per_s"] = round(out["total"]["produced"] / span, 1)
    return out


def counters_section(c: Collected) -> dict[str, Any]:
    b = c.bank
    collectors = {i: {k: b.totals(i, k) for k in (
        "messages", "resyncs", "reconnects", "malformed", "rest_errors", "rate_limited",
        "zmq_dropped", "ring_records")} | {"processes": b.pids(i)} for i in c.instances}
    analyzers = {i: {k: b.totals(f"{i}.analyzer", k) for k in (
        "events", "lost", "overruns", "sequence_gaps", "upstream_gaps", "malformed",
        "seeds", "no_book")} | {"processes": b.pids(f"{i}.analyzer")} for i in c.instances}
    resyncs = {i: {"gap_events": c.accounts[i].gaps_by_reason if i in c.accounts else {},
                   "collector_stats": collectors[i]["resyncs"]} for i in c.instances}
    return {"collectors": collectors, "analyzers": analyzers, "resyncs": resyncs}


# (replay fault kind, collector counter): every firing must show in the counter
CROSS = (("malformed", "malformed"), ("rate_limit", "rate_limited"),
         ("fail_snapshot", "rest_errors"))


def crosscheck_section(c: Collected, collectors: dict[str, Any]) -> dict[str, Any]:
    """Faults the replay applied next to what the collectors counted, per replay venue.

    Counters come from the banked stats blocks, so a collector killed within a second of
    a fault may miss it; hence figures to read, not an invariant.
    """
    out: dict[str, Any] = {}
    for inst in c.instances:
        venue = canonical_venue(inst)
        applied = c.replay_end.get("venues", {}).get(venue, {}).get("faults_applied", {})
        row = out.setdefault(venue, {kind: {"applied": applied.get(kind, 0), "counted": 0}
                                     for kind, _ in CROSS})
        for kind, counter in CROSS:
            row[kind]["counted"] += collectors[inst].get(counter) or 0
    return out


def latency_section(c: Collected) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ring_all, ana_all = [], []
    for i in c.instances:
        r = c.bank.histogram(i, "latency_recv_ring")
        a = c.bank.histogram(f"{i}.analyzer", "latency_recv_analyzer")
        ring_all.append(r or {})
        ana_all.append(a or {})
        out[i] = {"recv_to_ring": percentiles(r), "recv_to_analyzer": percentiles(a)}
    out["all"] = {"recv_to_ring": percentiles(merge_hist(ring_all)),
                  "recv_to_analyzer": percentiles(merge_hist(ana_all))}
    out["note"] = ("bucket upper bounds (histogram buckets 5us..1s; null = above 1 s); "
                   "recv_to_analyzer is observed once per batch, for its oldest record")
    return out


def replay_section(c: Collected) -> dict[str, Any]:
    span = max(1.0, c.marks.get("settled", 0) - c.marks.get("faults_start", 0))
    out = {}
    for venue, row in c.replay_end.get("venues", {}).items():
        before = c.replay_start.get("venues", {}).get(venue, {})
        sent = row.get("messages_sent", 0) - before.get("messages_sent", 0)
        n = sum(1 for i in c.instances if canonical_venue(i) == venue) or 1
        out[venue] = {"messages_sent": sent, "messages_per_s": round(sent / span, 1),
                      "instances": n, "per_connection_per_s": round(sent / span / n, 1),
                      "connections_accepted": row.get("connections", 0)}
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__),
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_end": os.getloadavg(),
            "commit": commit}


# ----- invariants ---------------------------------------------------------------------------
def invariants(c: Collected, r: dict[str, Any]) -> list[dict[str, Any]]:
    accs = c.accounts.values()
    out = []
    bad = [p for a in accs for p in a.problems() if "lost outside" in p or "laps hold" in p]
    total = r["events"]["total"]
    out.append(check("no events lost outside announced gaps", not bad and len(c.accounts)
                     == len(c.instances),
                     "; ".join(bad) or f"{total['produced']:,} ring records: "
                     f"{total['consumed']:,} processed + {total['lapped']:,} in announced laps"))
    dup = [p for a in accs for p in a.problems() if "more than once" in p or "beyond" in p
           or "unparsable" in p]
    out.append(check("exactly once", not dup, "; ".join(dup) or
                     "no ring seq reached the analyzer twice across its restarts"))
    m = r["faults"]["gap_matching"]
    silent = sum(a.silent_breaks for a in accs)
    n = m["announced"] + m["absorbed"] + m["unannounced"]
    where = [p for a in accs for p in a.problems() if "broke the chain" in p]
    out.append(check("every venue sequence break shows as a Gap event",
                     silent == 0 and m["unannounced"] == 0,
                     "; ".join(where + [""]) +
                     f"{silent} silent chain breaks; of {n} sequence-breaking faults: "
                     f"{m['announced']} followed by a Gap, "
                     f"{m['absorbed']} absorbed by a collector restart, {m['unannounced']} "
                     f"unannounced"))
    procs = {u: g for u, g in r["processes"].items() if not g["infra"]}
    judged = {u: g for u, g in procs.items() if g["verdict"] != "not judged"}
    grew = [f"{u}: {k} {g[f'{k}_start']}->{g[f'{k}_end']} (+{g[f'{k}_growth_pct']}%)"
            for u, g in judged.items() for k in ("rss", "fds")
            if g[f"{k}_growth_pct"] >= LIMIT_PCT]
    roles = {u.split("@")[0] for u in judged}
    enough = {"collector", "analyzer"} <= roles
    out.append(check(f"RSS and open descriptors grow < {LIMIT_PCT:g}% after warm-up",
                     enough and not grew,
                     "; ".join(grew) if grew else
                     f"{len(judged)} processes judged, worst RSS "
                     f"{max((g['rss_growth_pct'] for g in judged.values()), default=0):+.2f}%"
                     f", worst fds "
                     f"{max((g['fds_growth_pct'] for g in judged.values()), default=0):+.2f}%"
                     + ("" if enough else "; not enough processes judged (run too short?)")))
    cw = [f"{u}: {g.get('close_wait_end')}" for u, g in procs.items()
          if g.get("close_wait_end")]
    out.append(check("no socket left in CLOSE_WAIT", not cw, "; ".join(cw) or
                     "0 CLOSE_WAIT sockets in every process at the end"))
    failed = sorted(u for u, n in c.bank.states.items() if n.get("failed"))
    inactive = sorted(u for u, p in c.final_units.items() if p.get("ActiveState") != "active")
    out.append(check("no unit permanently failed", not failed and not inactive and c.settled,
                     f"ever failed: {failed or 'none'}; not active after settling: "
                     f"{inactive or 'none'}; final /health {c.final_health}"))
    odd = [f"{u}: NRestarts {row['NRestarts']}, expected {sum(row['expected'].values())}"
           for u, row in r["restarts"].items() if row["unexpected"]]
    out.append(check("restarts are the injected ones", not odd and not c.violations,
                     "; ".join(odd + c.violations) or
                     f"{sum(x['NRestarts'] for x in r['restarts'].values())} restarts, each "
                     f"from a kill -9 or a SIGSTOP longer than WatchdogSec"))
    return out


def build_report(c: Collected) -> dict[str, Any]:
    r: dict[str, Any] = {
        "run": {"fault_phase_s": c.seconds, "warmup_s": c.warmup, "seed": c.args.get("seed"),
                "rate_per_connection": c.args.get("rate"), "args": c.args,
                "marks": {k: round(v, 3) for k, v in c.marks.items()},
                "wall_s": round(c.marks.get("stopped", 0) - c.marks.get("started", 0), 1),
                "settled": c.settled, "drained": c.drained, "machine": machine(),
                "notes": c.notes},
        "events": event_section(c),
        "faults": fault_section(c),
        "restarts": restart_section(c),
        "processes": process_section(c),
        "latency": latency_section(c),
        "replay": replay_section(c),
    }
    r.update(counters_section(c))
    r["crosscheck"] = crosscheck_section(c, r["collectors"])
    r["invariants"] = invariants(c, r)
    r["ok"] = all(i["ok"] for i in r["invariants"])
    # invariants first when read top to bottom
    return {"ok": r.pop("ok"), "invariants": r.pop("invariants"), **r}


# ----- text -------------------------------------------------------------------------------
def _pcts(p: dict[str, Any]) -> str:
    if not p.get("count"):
        return "-"
    return "/".join(">1000" if p[k] is None else f"{p[k]:g}"
                    for k in ("p50_ms", "p99_ms", "p99.9_ms"))


def render(r: dict[str, Any]) -> str:
    run = r["run"]
    lines = [f"marketprism soak: {run['fault_phase_s'] / 60:g} min of faults, seed "
             f"{run['seed']}, {run['rate_per_connection']:g} msgs/s per connection: "
             f"{'PASSED' if r['ok'] else 'FAILED'}",
             "replay sent per connection: " + ", ".join(
                 f"{v} {row['per_connection_per_s']:,.0f}/s" for v, row in r["replay"].items())
             + f"; load average at the end {run['machine']['loadavg_end'][0]:.1f} on "
               f"{run['machine']['cpus']} CPUs", ""]
    for inv in r["invariants"]:
        lines.append(f"  [{'ok' if inv['ok'] else 'FAIL'}] {inv['name']}: {inv['detail']}")
    lines += ["", f"{'events (ring seq)':22}{'produced':>11}{'consumed':>11}{'lapped':>8}"
              f"{'lost*':>7}{'dup':>5}{'rec/s':>8}  gaps by reason"]
    for inst, e in r["events"].items():
        if inst == "total":
            continue
        gaps = ", ".join(f"{k} {v}" for k, v in sorted(e["gaps_by_reason"].items())) or "-"
        lines.append(f"  {inst:20}{e['produced']:>11,}{e['consumed']:>11,}{e['lapped']:>8,}"
                     f"{e['lost_outside_gaps']:>7,}{e['duplicates']:>5}"
                     f"{e['records_per_s']:>8,.0f}  {gaps}")
    f = r["faults"]
    lines += ["", "faults applied: " + ", ".join(f"{k} {v}" for k, v in f["applied"].items())
              + f"; skipped {f['skipped']}, never fired {f['never_fired']}, errors "
              f"{f['errors']}",
              "seen by the collectors (applied/counted): " + ("; ".join(
                  f"{v} " + ", ".join(f"{k} {x['applied']}/{x['counted']}"
                                      for k, x in row.items() if x["applied"])
                  for v, row in r["crosscheck"].items()
                  if any(x["applied"] for x in row.values())) or "-"),
              "", f"{'restarts':36}{'n':>4}{'expected':>9}  results"]
    for unit, row in r["restarts"].items():
        if row["NRestarts"] or row["expected"]["kill9"] or row["expected"]["stop_long"]:
            res = ", ".join(f"{k} {v}" for k, v in row["results"].items()) or "-"
            lines.append(f"  {unit:34}{row['NRestarts']:>4}"
                         f"{sum(row['expected'].values()):>9}  {res}")
    lines += ["", f"{'process':36}{'RSS MiB start>end':>20}{'fds':>10}{'CW':>4}{'cpu s':>8}"
                  "  verdict"]
    for unit, g in r["processes"].items():
        if "rss_start" in g:
            rss = (f"{g['rss_start'] / 2**20:.1f}>{g['rss_end'] / 2**20:.1f} "
                   f"{g['rss_growth_pct']:+.1f}%")
            fds = f"{g['fds_start']}>{g['fds_end']}"
        else:
            rss, fds = f"{g.get('rss_end', 0) / 2**20:.1f}", str(g.get("fds_end", ""))
        verdict = g["verdict"] + (f" ({g['why']})" if g.get("why") else "")
        lines.append(f"  {unit:34}{rss:>20}{fds:>10}{g.get('close_wait_end', 0):>4}"
                     f"{g['cpu_seconds']:>8.1f}  {'infra, ' if g['infra'] else ''}{verdict}")
    lines += ["", f"{'latency ms (bucket bounds)':28}{'recv>ring p50/p99/p99.9':>26}"
                  f"{'recv>analyzer p50/p99/p99.9':>30}"]
    for inst, lat in r["latency"].items():
        if inst == "note":
            continue
        a, b = lat["recv_to_ring"], lat["recv_to_analyzer"]
        lines.append(f"  {inst:26}{_pcts(a):>26}{_pcts(b):>30}")
    return "\n".join(lines)


__all__ = ["Collected", "build_report", "invariants", "render"]
