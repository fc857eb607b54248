"""Run every benchmark and write ``bench/RESULTS.md`` (what ``make bench`` does).

Scripts, one after the other (never two at once: they pin processes to the same cores):

==================  ===============================================================
``ring.py``         the shared-memory ring against Pipe, Queue, pyzmq ipc, faster-fifo
``book.py``         book handling against cryptofeed on the recorded Binance USD-M stream
``collector.py``    receive->ring latency, CPU per 10k msg/s, highest sustained rate
``analyzer.py``     events/s one analyzer drains from a filled ring
``e2e.py``          replay send -> collector -> ring -> analyzer result latency
``memory.py``       memory per instance and for the five, CPU per instance
==================  ===============================================================

Scripts that take ``--json PATH`` (ours) hand over their figures and their Markdown
section as JSON (kept in ``bench/out/``); for the others their stdout (a Markdown table)
goes into the report as printed. Each script's own section says how its figures were
measured; the report starts with the machine (CPU, cores, memory, kernel, Python, load
average at start and end) and a table of every target with its verdict.

Usage: ``.venv/bin/python bench/run_all.py [--quick] [--only collector,e2e] [--out PATH]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import collector as cb  # noqa: E402  (machine description)

from supervisor import jsonlib  # noqa: E402

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
# name -> (title, args for a full run, args for --quick)
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "ring": ("Shared-memory ring vs Python IPC (bench/ring.py)", ["--rt"], ["--quick", "--rt"]),
    "book": ("Book handling vs cryptofeed (bench/book.py)", [],
             ["--runs", "3", "--seconds", "0.15"]),
    "collector": ("Collector (bench/collector.py)", ["--profile"], ["--quick"]),
    "analyzer": ("Analyzer throughput (bench/analyzer.py)", ["--profile"], ["--quick"]),
    "e2e": ("End-to-end latency (bench/e2e.py)", [], ["--quick"]),
    "memory": ("Memory and CPU per instance (bench/memory.py)", [], ["--quick"]),
}


def supports(script: Path, option: str) -> bool:
    """Whether ``script --help`` lists ``option`` (scripts owned by others may lack it)."""
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=BENCH.parent)
    return option in res.stdout


def supported(script: Path, args: list[str]) -> list[str]:
    """``args`` without the options ``script`` does not take (and their values)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if arg.startswith("--"):
            skip = not supports(script, arg)
        if not skip:
            out.append(arg)
    return out


def run(name: str, quick: bool) -> dict[str, Any]:
    """Run one script; returns {"markdown", "json"?, "seconds", "returncode", "command"}."""
    title, full, short = SCRIPTS[name]
    script = BENCH / f"{name}.py"
    args = supported(script, short if quick else full)
    json_path = OUT / f"{name}.json"
    json_ok = supports(script, "--json")
    if json_ok:
        args += ["--json", str(json_path)]
        json_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), *args]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    # stderr (progress) passes through to the terminal; stdout is the Markdown
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=BENCH.parent)
    out: dict[str, Any] = {"title": title, "command": " ".join(
        ["bench/" + script.name, *args]).replace(str(OUT), "bench/out"),
        "seconds": time.monotonic() - t0, "returncode": res.returncode}
    if json_ok and json_path.exists():
        out["json"] = jsonlib.loads(json_path.read_bytes())
        out["markdown"] = out["json"]["markdown"]
    else:
        out["markdown"] = res.stdout.strip() + "\n"
    if res.returncode != 0:
        out["markdown"] += f"\n**{name} failed with exit status {res.returncode}.**\n"
    return out


def report(results: dict[str, dict[str, Any]], start: dict[str, Any], quick: bool,
           elapsed: float) -> str:
    m = start
    end = os.getloadavg()
    lines = [
        "# marketprism benchmark results",
        "",
        f"Written by `bench/run_all.py{' --quick' if quick else ''}` (`make bench`) on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} "
        "minutes. Every figure below comes from that one run; each section says how it was "
        "measured. Figures quoted in the README are to be taken from this file.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores (this process may use CPUs "
        f"{','.join(map(str, m['affinity']))})",
        f"- Memory: {m['memory_gb']} GiB; kernel: Linux {m['kernel']}; Python {m['python']}",
        "- Load average (1/5/15 min) at start: "
        + "/".join(f"{x:.2f}" for x in m["loadavg"]) + "; at end: "
        + "/".join(f"{x:.2f}" for x in end),
        "- The machine is shared: other sessions run test suites on the same two cores "
        "while this runs (the load average above). The benchmarks pin their processes "
        "(taskset), run them at nice -20 or SCHED_FIFO where said, interleave what they "
        "compare and report medians with their min-max spread, so that this load shows as "
        "spread rather than as a bias of one side.",
        "",
        "## Targets",
        "",
        "| benchmark | target | measured | met |",
        "|---|---|---:|---|",
    ]
    for name, r in results.items():
        for t in r.get("json", {}).get("targets", []):
            lines.append(f"| {name} | {t['target']} | {t['value']} | "
                         f"{'yes' if t['met'] else '**no**'} |")
    lines.append("")
    silent = [f"{name}.py" for name, r in results.items() if not r.get("json", {}).get("targets")]
    if silent:
        lines.append(f"Targets of {' and '.join(silent)} are stated in their own sections below.")
        lines.append("")
    for r in results.values():
        lines += [f"## {r['title']}", "",
                  f"`{r['command']}` ({r['seconds']:.0f} s)", "",
                  _demote(r["markdown"]).rstrip(), ""]
    return "\n".join(lines) + "\n"


def _demote(md: str) -> str:
    """Sections of the scripts sit one heading level below ours."""
    out = []
    for line in md.splitlines():
        if line.startswith(("# ", "## ")):
            line = ("##" if line.startswith("# ") else "#") + line
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every script with its quick option")
    ap.add_argument("--only", help="comma-separated script names (default: all)")
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        ap.error(f"unknown script(s): {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")
    OUT.mkdir(parents=True, exist_ok=True)
    start = cb.machine()
    t0 = time.monotonic()
    results = {name: run(name, args.quick) for name in names}
    text = report(results, start, args.quick, time.monotonic() - t0)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r["returncode"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
