"""Memory per instance and in total for the five instances, and CPU per instance at a fixed rate.

The deployed set against the replay exchange: the five collectors of
``supervisor/data/demo.toml`` (same symbols and channels, ZeroMQ PUB and snapshot service on,
16 MiB rings) each with its analyzer (built-in analysis on, results on ZeroMQ), all started
with the real entry points (``python -m supervisor.collector.main`` /
``supervisor.analyzer.main``). The replay sends ``--rate`` messages/s on each collector's
connection (five connections). The replay is pinned to the first CPU; the ten daemons are
left to the scheduler (both CPUs), all at nice -20.

After every book has synced and ``--warmup`` seconds more, over a ``--seconds`` window:

- **CPU**: user+system seconds of each process over the window (``/proc/PID/stat``), as %
  of one core; **msg/s**: records its ring gained per second;
- **memory** at the end of the window (``psutil.Process.memory_full_info``): RSS, PSS
  (shared pages split among the processes mapping them: the honest per-process share of
  the ring, which the collector writes and its analyzer reads, and of the shared
  libraries) and USS (pages only this process maps). Totals are sums over the processes;
  the sum of PSS is the physical memory the set uses.

Each figure is the median of ``--runs`` runs with fresh processes (min-max). The previous
plan budgeted 418.8 MB for its one process and 510 MB soft / 720 MB hard for five
collectors (the per-instance limits in ``supervisor.config.MEMORY_DEFAULTS``).

Usage: ``.venv/bin/python bench/memory.py [--quick] [--json PATH] [--runs 3] [--rate 1000]
[--seconds 10]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import collector as cb  # noqa: E402  (bench/collector.py: the shared harness)

from supervisor import jsonlib  # noqa: E402
from supervisor.config import MEMORY_DEFAULTS  # noqa: E402

DEMO = cb.ROOT / "supervisor" / "data" / "demo.toml"
MB = 1e6  # the previous plan's figures are in MB


def five_instances(rx: cb.Replay, tag: str) -> tuple[list[str], list[str]]:
    """(instance names, TOML tables): demo.toml's five instances pointed at ``rx``."""
    demo = tomllib.loads(DEMO.read_text())["instances"]
    names, tables = [], []
    for inst, body in demo.items():
        name = f"{inst}_{tag}"
        ws, rest = rx.endpoints(inst)
        quoted = ", ".join(f'"{x}"' for x in body["symbols"])
        chans = ", ".join(f'"{x}"' for x in body["channels"])
        soft, hard = MEMORY_DEFAULTS[inst]
        tables.append("\n".join([
            f"[instances.{name}]", f'exchange = "{body["exchange"]}"',
            f'market = "{body["market"]}"', f"symbols = [{quoted}]", f"channels = [{chans}]",
            f'ws_url = "{ws}"', f'rest_url = "{rest}"',
            f"memory_soft_mb = {soft}", f"memory_hard_mb = {hard}",
            f'zmq_pub = "tcp://127.0.0.1:{cb.free_port()}"',
            f'zmq_snapshot = "tcp://127.0.0.1:{cb.free_port()}"',
            f'analyzer = {{ zmq_pub = "tcp://127.0.0.1:{cb.free_port()}", '
            'settings = { source = "ring" } }']) + "\n")
        names.append(name)
    return names, tables


def memory(pid: int) -> dict[str, float]:
    import psutil

    info = psutil.Process(pid).memory_full_info()
    return {"rss": info.rss / MB, "pss": info.pss / MB, "uss": info.uss / MB}


def run_once(args: argparse.Namespace, tmp: Path, run: int) -> dict[str, Any]:
    import shm

    rcpu, _ = cb.cpus()
    rx = cb.Replay(["--rate", str(args.rate)], rcpu)
    procs: dict[tuple[str, str], cb.Daemon] = {}
    names: list[str] = []
    try:
        names, tables = five_instances(rx, f"m{run}{os.getpid() % 1000}")
        cfg = cb.write_config(tmp, tables)
        for name in names:
            procs[(name, "collector")] = cb.start_collector(name, cfg, None, tmp)
        for name in names:
            cb.wait_synced(name, procs[(name, "collector")], 60)
        for name in names:
            procs[(name, "analyzer")] = cb.Daemon(
                [cb.PY, "-m", "supervisor.analyzer.main", name, "--config", str(cfg)], None,
                tmp / f"{name}.analyzer.log")
        time.sleep(args.warmup)
        cpu0 = {k: cb.cpu_seconds(p.pid) for k, p in procs.items()}
        seq0 = {n: shm.ring_stats(n).last_seq for n in names}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        window = time.monotonic() - t0
        cpu = {k: (cb.cpu_seconds(p.pid) - cpu0[k]) / window for k, p in procs.items()}
        rates = {n: (shm.ring_stats(n).last_seq - seq0[n]) / window for n in names}
        mem = {k: memory(p.pid) for k, p in procs.items()}
        for key, proc in procs.items():
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{key} exited {proc.proc.returncode}:\n{proc.tail()}")
    finally:
        for proc in procs.values():
            proc.stop()
        rx.stop()
        for name in names:
            cb.cleanup(name)
    out: dict[str, Any] = {}
    for name in names:
        inst = name.rsplit("_", 1)[0]
        out[inst] = {"rate": rates[name],
                     "collector": {**mem[(name, "collector")], "cpu": cpu[(name, "collector")]},
                     "analyzer": {**mem[(name, "analyzer")], "cpu": cpu[(name, "analyzer")]}}
    print(f"  run {run}: " + "  ".join(
        f"{i} {v['collector']['rss']:.0f}/{v['analyzer']['rss']:.0f} MB "
        f"{v['collector']['cpu']:.0%}/{v['analyzer']['cpu']:.0%}" for i, v in out.items())
        + f"  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    cb.NICE[0] = args.nice
    start = cb.machine()
    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-memory-"))
    try:
        runs = [run_once(args, tmp, i) for i in range(args.runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows: dict[str, Any] = {}
    for inst in runs[0]:
        row: dict[str, Any] = {"rate": cb.med([r[inst]["rate"] for r in runs]),
                               "soft_mb": MEMORY_DEFAULTS[inst][0],
                               "hard_mb": MEMORY_DEFAULTS[inst][1]}
        for role in ("collector", "analyzer"):
            row[role] = {k: cb.med([r[inst][role][k] for r in runs])
                         for k in ("rss", "pss", "uss", "cpu")}
        rows[inst] = row
    totals: dict[str, Any] = {}
    for role in ("collector", "analyzer"):
        for k in ("rss", "pss", "uss", "cpu"):
            totals[f"{role}_{k}"] = cb.med([sum(r[i][role][k] for i in r) for r in runs])
    for k in ("rss", "pss", "uss", "cpu"):
        totals[f"all_{k}"] = cb.med([sum(r[i][role][k] for i in r
                                         for role in ("collector", "analyzer")) for r in runs])
    soft = sum(v[0] for v in MEMORY_DEFAULTS.values())
    hard = sum(v[1] for v in MEMORY_DEFAULTS.values())
    worst = max(rows.values(), key=lambda r: r["collector"]["rss"]["median"] / r["soft_mb"])
    result: dict[str, Any] = {
        "script": "memory", "machine": start, "loadavg_end": list(os.getloadavg()),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "rows": rows, "totals": totals, "soft_total_mb": soft, "hard_total_mb": hard,
        "runs": runs}
    result["targets"] = [
        {"target": f"five collectors' RSS within the plan's {soft} MB soft total",
         "value": f"{totals['collector_rss']['median']:.1f} MB",
         "met": totals["collector_rss"]["median"] <= soft},
        {"target": "every collector's RSS under its own soft limit",
         "value": f"highest {worst['collector']['rss']['median']:.1f} / {worst['soft_mb']} MB",
         "met": all(r["collector"]["rss"]["max"] <= r["soft_mb"] for r in rows.values())},
        {"target": "the whole set (5 collectors + 5 analyzers, PSS) below the previous "
                   "one-process 418.8 MB", "value": f"{totals['all_pss']['median']:.1f} MB",
         "met": totals["all_pss"]["median"] <= 418.8}]
    result["markdown"] = markdown(result)
    return result


def markdown(result: dict[str, Any]) -> str:
    s, t = result["settings"], result["totals"]
    f = cb.fmt
    lines = ["### Memory and CPU per instance: the five instances against the replay\n",
             f"{cb.machine_line(result['machine'])}; load at end "
             + "/".join(f"{x:.2f}" for x in result["loadavg_end"]) + ".",
             f"demo.toml's five instances, each a collector and its analyzer; replay at "
             f"{s['rate']:,.0f} msg/s per connection; {s['warmup']:g} s after sync, "
             f"{s['seconds']:g} s window; median of {s['runs']} runs (min-max). MB = 10^6 "
             "bytes, as the previous plan's figures. CPU in % of one core.\n",
             "| instance | msg/s | collector RSS | PSS | USS | soft / hard limit | collector CPU "
             "| analyzer RSS | PSS | USS | analyzer CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for inst, r in result["rows"].items():
        c, a = r["collector"], r["analyzer"]
        lines.append(f"| {inst} | {f(r['rate'], spread=False)} | {f(c['rss'], digits=1)} "
                     f"| {f(c['pss'], digits=1, spread=False)} "
                     f"| {f(c['uss'], digits=1, spread=False)} | {r['soft_mb']} / {r['hard_mb']} "
                     f"| {f(c['cpu'], 100, 1)}% | {f(a['rss'], digits=1)} "
                     f"| {f(a['pss'], digits=1, spread=False)} "
                     f"| {f(a['uss'], digits=1, spread=False)} | {f(a['cpu'], 100, 1)}% |")
    lines.append(
        f"| **total** | | {f(t['collector_rss'], digits=1)} "
        f"| {f(t['collector_pss'], digits=1, spread=False)} "
        f"| {f(t['collector_uss'], digits=1, spread=False)} "
        f"| {result['soft_total_mb']} / {result['hard_total_mb']} "
        f"| {f(t['collector_cpu'], 100, 1)}% | {f(t['analyzer_rss'], digits=1)} "
        f"| {f(t['analyzer_pss'], digits=1, spread=False)} "
        f"| {f(t['analyzer_uss'], digits=1, spread=False)} "
        f"| {f(t['analyzer_cpu'], 100, 1)}% |")
    lines.append(f"\nAll ten processes: RSS {f(t['all_rss'], digits=1)} MB, PSS "
                 f"{f(t['all_pss'], digits=1)} MB (physical memory used), USS "
                 f"{f(t['all_uss'], digits=1)} MB; CPU {f(t['all_cpu'], 100, 1)}% of one core "
                 f"at {5 * s['rate']:,.0f} msg/s in total. RSS counts each 16 MiB ring and the "
                 "shared libraries in every process that maps them; PSS splits them.\n")
    lines += cb.targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run, short window (< 1 minute)")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="replay msg/s per connection")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--nice", type=int, default=-20)
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.warmup = 1, 4.0, 2.0
    result = bench(args)
    print(result["markdown"])
    if args.json:
        Path(args.json).write_text(jsonlib.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
