"""Book handling throughput: our Binance USD-M adapter against cryptofeed's, side by side.

Workload: the ``depthUpdate`` frames of the recorded Binance USD-M session
(``shared/fixtures/cryptofeed-sample/BINANCE_FUTURES.ws.1.0``, 4 symbols) with their 4 REST
snapshots. Each side parses, validates the update-id chain, applies to its books and hands
the result to a no-op consumer, frame by frame, as it does live:

- ours: ``BinanceFuturesFeed.handle_frame`` (orjson, per-symbol sync, the C book kernel keyed
  by exact decimal price holding the venue's strings, a :class:`BookDelta` per applied event)
  in the project venv;
- cryptofeed 2.4.x (the last line for Python 3.11): ``BinanceFutures.message_handler`` in a
  venv of its own (``bench/out/venv-cryptofeed``, created on first use with
  ``pip install "cryptofeed<3"``), run as a subprocess by ``bench/book_cryptofeed.py``.

Two modes: ``deltas`` (snapshots loaded before the clock starts; every frame timed) and
``with snapshots`` (the 4 snapshot bodies parsed and loaded inside the timed loop: ours at
their recorded times, cryptofeed inline on each symbol's first diff, as it does live). Every
repeat starts from fresh feeds, the previous ones collected (``gc.collect()``) off the
clock on both sides. Each figure is the median of ``--runs`` runs (each run
``--repeats`` passes over the recording) with the min-max spread; both sides run the same
work in the same invocation, interleaved every few passes so that noise from other load on
the machine hits both alike, and the ratio is the median of the per-run (paired) ratios.
The final top-5 books of both sides are compared after every run.

Usage: ``.venv/bin/python bench/book.py [--runs 5] [--seconds 0.4] [--no-cryptofeed]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supervisor import jsonlib  # noqa: E402
from supervisor.events import BookDelta  # noqa: E402
from supervisor.exchanges.base import BOOKS, FeedConfig  # noqa: E402
from supervisor.exchanges.binance import BinanceFuturesFeed, std_symbol  # noqa: E402
from supervisor.replay.recording import read_http, read_ws  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "cryptofeed-sample"
CF_VENV = ROOT / "bench" / "out" / "venv-cryptofeed"
CF_SCRIPT = ROOT / "bench" / "book_cryptofeed.py"


def load_job() -> dict:
    """Depth frames (text, recorded order), snapshot bodies, and the interleaved timeline."""
    recv = [ln for ln in read_ws(FIXTURES / "BINANCE_FUTURES.ws.1.0") if ln.direction == "recv"]
    http = list(read_http(FIXTURES / "BINANCE_FUTURES.http.0.0"))
    depth = [ln for ln in recv if '"e":"depthUpdate"' in ln.message]
    timeline = sorted([(ln.ts, 1, ln.message) for ln in depth]
                      + [(h.ts, 0, h.params["symbol"]) for h in http])
    return {"frames": [ln.message for ln in depth],
            "symbols": [h.params["symbol"] for h in http],
            "snapshots": {h.params["symbol"]: h.body for h in http},
            "timeline": [(kind, item) for _, kind, item in timeline]}


def _discard(event: object) -> None:
    """The consumer: takes the event, does nothing (the ring writer's place)."""


def our_repeat(job: dict, mode: str) -> tuple[int, BinanceFuturesFeed]:
    """One pass over the recording with a fresh feed; returns (ns in the timed loop, feed).

    The previous pass's feed is collected first, outside the clock (feeds hold reference
    cycles, so without this their books pile up until a full collection lands mid-run).
    """
    gc.collect()
    symbols = {v: std_symbol(v, "derivatives") for v in job["symbols"]}
    cfg = FeedConfig("bench", "binance", "derivatives", tuple(symbols.values()),
                     frozenset({BOOKS}))
    feed = BinanceFuturesFeed(cfg, _discard)
    handle = feed.handle_frame
    apply_snapshot = feed.apply_snapshot
    if mode == "deltas":
        for venue, body in job["snapshots"].items():
            apply_snapshot(symbols[venue], body, 1, 1)
        frames = job["frames"]
        t0 = time.perf_counter_ns()
        for text in frames:
            handle(text, 0, 0)
        return time.perf_counter_ns() - t0, feed
    snapshots = job["snapshots"]
    timeline = job["timeline"]
    t0 = time.perf_counter_ns()
    for kind, item in timeline:
        if kind:
            handle(item, 0, 0)
        else:
            apply_snapshot(symbols[item], snapshots[item], 1, 1)
    return time.perf_counter_ns() - t0, feed


def run_ours(job: dict, mode: str, repeats: int) -> dict:
    """One run: ``repeats`` passes, each from fresh feeds (construction not timed)."""
    spent = 0
    deltas = 0
    for _ in range(repeats):
        ns, feed = our_repeat(job, mode)
        spent += ns
        deltas += feed.stats.events.get(BookDelta.__name__, 0)
        assert not feed.stats.resyncs and not feed.stats.malformed, feed.stats
    tops = {s: [[list(lv) for lv in side] for side in feed.books[std_symbol(s, "derivatives")]
                .top(5)] for s in job["symbols"]}
    return {"ns": spent, "messages": len(job["frames"]) * repeats, "deltas": deltas,
            "tops": tops}


def orjson_floor(job: dict, runs: int, repeats: int) -> list[dict]:
    loads = jsonlib.loads
    frames = job["frames"]
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for _ in range(repeats):
            for text in frames:
                loads(text)
        out.append({"ns": time.perf_counter_ns() - t0, "messages": len(frames) * repeats})
    return out


def ensure_cryptofeed_venv() -> Path:
    python = CF_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {CF_VENV} with cryptofeed<3 ...", file=sys.stderr)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(CF_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "cryptofeed<3"], check=True)
    return python


class Cryptofeed:
    """The cryptofeed side: a child process in its own venv, one run per request."""

    def __init__(self, job: dict, python: Path) -> None:
        self.proc = subprocess.Popen([str(python), str(CF_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONHASHSEED="0"))
        payload = {k: job[k] for k in ("frames", "symbols", "snapshots")}
        self.info = self._ask(json.dumps(payload))

    def _ask(self, line: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"cryptofeed side exited with {self.proc.wait()}")
        return json.loads(answer)

    def run(self, mode: str, passes: int, warm: bool = False) -> dict:
        return self._ask(f"{mode}\t{passes}\t{int(warm)}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def rate(runs: list[dict]) -> tuple[float, float, float]:
    """(median, min, max) messages per second over the runs."""
    rates = [r["messages"] / (r["ns"] / 1e9) for r in runs]
    return statistics.median(rates), min(rates), max(rates)


def _canon(tops: dict) -> dict:
    """Top-5 books as (float price, float size) pairs: cryptofeed prints Decimals its way."""
    return {s: [[(float(p), float(q)) for p, q in side] for side in sides]
            for s, sides in tops.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.4,
                    help="target length of one of our runs; sets the passes per run")
    ap.add_argument("--repeats", type=int, default=0, help="passes per run (0: calibrate)")
    ap.add_argument("--no-cryptofeed", action="store_true")
    args = ap.parse_args()
    job = load_job()
    n = len(job["frames"])
    repeats = args.repeats
    if not repeats:
        ns = min(our_repeat(job, "deltas")[0] for _ in range(5))
        repeats = max(1, int(args.seconds * 1e9 / ns))
    cf = None
    if not args.no_cryptofeed:
        cf = Cryptofeed(job, ensure_cryptofeed_venv())
    results: dict[tuple[str, str], list[dict]] = {}
    ratios: dict[str, list[float]] = {}
    same_books = True
    chunk = max(1, repeats // 10)
    for mode in ("deltas", "with snapshots"):
        our_repeat(job, mode)  # warm-up
        if cf is not None:
            cf.run(mode, 1, warm=True)
        for _ in range(args.runs):
            # Interleaved in chunks of passes, so machine noise hits both sides alike.
            ours: dict = {"ns": 0, "messages": 0, "deltas": 0}
            theirs: dict = {"ns": 0, "messages": 0, "callbacks": 0}
            for done in range(0, repeats, chunk):
                step = min(chunk, repeats - done)
                part = run_ours(job, mode, step)
                for k in ("ns", "messages", "deltas"):
                    ours[k] += part[k]
                ours["tops"] = part["tops"]
                if cf is not None:
                    part = cf.run(mode, step)
                    for k in ("ns", "messages", "callbacks"):
                        theirs[k] += part[k]
                    theirs["tops"] = part["tops"]
            results.setdefault((mode, "marketprism"), []).append(ours)
            if cf is not None:
                results.setdefault((mode, "cryptofeed"), []).append(theirs)
                ratios.setdefault(mode, []).append(
                    (ours["messages"] / ours["ns"]) / (theirs["messages"] / theirs["ns"]))
                same_books &= _canon(theirs["tops"]) == _canon(ours["tops"])
    if cf is not None:
        cf.close()
    floor = rate(orjson_floor(job, args.runs, repeats))
    cf_version = (f"cryptofeed {cf.info['version']} (Python {cf.info['python']})" if cf
                  else "cryptofeed not run")
    print(f"## Book handling: Binance USD-M recording ({n} depthUpdate frames, "
          f"{len(job['symbols'])} symbols, {len(job['snapshots'])} snapshots)\n")
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"JSON: {jsonlib.BACKEND}; {cf_version}; median of {args.runs} runs x {repeats} "
          f"passes, the two sides interleaved every {chunk} passes "
          f"({args.runs * repeats * n:,} messages per cell)\n")
    print("| mode | implementation | msgs/s (median) | µs/msg | spread msgs/s (min-max) "
          "| ratio (median of paired runs, min-max) |")
    print("|---|---|---:|---:|---:|---:|")
    for (mode, impl), runs in results.items():
        med, lo, hi = rate(runs)
        ratio = "-"
        if impl == "marketprism" and mode in ratios:
            r = ratios[mode]
            ratio = f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"
        elif impl == "cryptofeed":
            ratio = "1.00x"
        print(f"| {mode} | {impl} | {med:,.0f} | {1e6 / med:.2f} | {lo:,.0f}-{hi:,.0f} "
              f"| {ratio} |")
    print(f"| (floor) | jsonlib.loads alone | {floor[0]:,.0f} | {1e6 / floor[0]:.2f} | "
          f"{floor[1]:,.0f}-{floor[2]:,.0f} | - |")
    if cf is not None:
        ours = results[("deltas", "marketprism")][0]
        theirs = results[("deltas", "cryptofeed")][0]
        print(f"\nPer pass: marketprism emitted {ours['deltas'] // repeats} BookDeltas; "
              f"cryptofeed made {theirs['callbacks'] // repeats} book callbacks (it also calls "
              f"back for the 4 snapshots and for events ending exactly at a snapshot's "
              f"lastUpdateId). Final top-5 books of both sides after every run: "
              f"{'equal' if same_books else 'DIFFERENT'}.")


if __name__ == "__main__":
    main()
