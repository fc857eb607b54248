"""Analyzer throughput: events/s one analyzer drains from a filled ring, analysis on.

The ring is filled first, then drained from its oldest record under a fresh durable reader
name per run (the fill is reused), so the figure is the analyzer's own speed, not the
collector's. Two workloads, both written by the product's own encoder:

- **synthetic**: what ``marketprism-collector`` writes for Binance USD-M (10 symbols, books
  + trades) when the replay exchange feeds it as fast as it reads: the real collector fills
  the ring, then stops. Book deltas carry 1-3 levels (the replay's random walk).
- **recorded**: the recorded Binance USD-M session (``shared/fixtures/cryptofeed-sample``,
  4 symbols, real multi-level depth updates and aggTrades) through ``BinanceFuturesFeed``;
  its events are written once as recorded, then again and again with every sequence and
  timestamp shifted by the pass's span, so each symbol's book chain continues unbroken
  (the analyzer must apply every delta, not re-seed).

Rows, each the median of ``--runs`` runs (min-max), interleaved, each in a fresh process
pinned to one core at nice -20:

- **daemon**: ``marketprism-analyzer`` itself (``child-drain``: the real daemon loop with
  its ``Engine`` replaced by a subclass that stamps CLOCK_MONOTONIC when the first batch
  starts and when the last record has been processed, then stops the daemon): ring poll,
  built-in analysis and data-quality checks, cursor commit per batch, results on ZeroMQ
  every ``publish_interval``, stats block every second;
- **engine only**: ``RingReader.read_batch`` + ``Engine.process_batch`` in a plain loop
  (no commit, no publishing): what the loop around the engine costs, by difference;
- **ring read only**: ``read_batch`` alone: the floor.

Every daemon run must end with 0 lost records and 0 sequence gaps (checked).

Usage: ``.venv/bin/python bench/analyzer.py [--quick] [--json PATH] [--runs 5]
[--events 400000] [--profile]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import collector as cb  # noqa: E402  (bench/collector.py: the shared harness)

from supervisor import jsonlib, statsblock  # noqa: E402

FIXTURES = cb.ROOT.parent / "shared" / "fixtures" / "cryptofeed-sample"
VENUE = "binance_derivatives"
# py-spy leaf frame's file -> what the analyzer is doing there
ANALYZER_PARTS = {
    "book apply (analyzer/state.py)": ("state.py",),
    "record decode (codec.py)": ("codec.py",),
    "engine loop (analyzer/engine.py)": ("engine.py",),
    "data-quality checks (analyzer/quality.py)": ("quality.py",),
    "rolling analysis (analyzer/analysis.py)": ("analysis.py",),
    "ring read + commit (shm, analyzer/source.py)": ("reader.py", "source.py"),
    "daemon loop, results, stats (analyzer/main.py, output.py)": (
        "main.py", "output.py", "jsonlib.py", "socket.py", "statsblock.py"),
}


# ----- filling the ring ---------------------------------------------------------------------
def fill_synthetic(name: str, events: int, tmp: Path) -> dict[str, Any]:
    """The real collector against the replay (unlimited rate) until ``events`` are written."""
    import shm

    rcpu, ccpu = cb.cpus()
    rx = cb.Replay(["--rate", "0"], rcpu)
    coll = None
    try:
        capacity = 1 << max(24, int(events * 220 - 1).bit_length())
        cfg = cb.write_config(tmp, [cb.instance_toml(name, VENUE, 10, rx, capacity=capacity,
                                                     zmq=False)])
        coll = cb.start_collector(name, cfg, ccpu, tmp)
        cb.wait_for("the ring to fill",
                    lambda: coll.proc.poll() is None and _last_seq(name) >= events, 300)
    finally:
        if coll is not None:
            coll.stop()
        rx.stop()
    st = shm.ring_stats(name)
    return {"workload": "synthetic", "records": st.last_seq, "bytes": st.bytes_written}


def _last_seq(name: str) -> int:
    import shm

    try:
        return shm.ring_stats(name).last_seq
    except shm.RingNotFound:
        return 0


def fill_recorded(name: str, events: int) -> dict[str, Any]:
    """The recording's events, passes chained by shifting sequences and times."""
    import shm
    from supervisor.codec import Encoder
    from supervisor.events import BookDelta, BookSnapshot, Trade
    from supervisor.exchanges.base import BOOKS, TRADES, FeedConfig
    from supervisor.exchanges.binance import BinanceFuturesFeed, std_symbol
    from supervisor.replay.recording import read_http, read_ws

    frames = [ln for ln in read_ws(FIXTURES / "BINANCE_FUTURES.ws.1.0") if ln.direction == "recv"
              and ('"e":"depthUpdate"' in ln.message or '"e":"aggTrade"' in ln.message)]
    http = list(read_http(FIXTURES / "BINANCE_FUTURES.http.0.0"))
    symbols = {h.params["symbol"]: std_symbol(h.params["symbol"], "derivatives") for h in http}
    out: list[Any] = []
    feed = BinanceFuturesFeed(FeedConfig("bench", "binance", "derivatives",
                                         tuple(symbols.values()), frozenset({BOOKS, TRADES})),
                              out.append)
    timeline = sorted([(ln.ts, 1, ln.message) for ln in frames]
                      + [(h.ts, 0, h.params["symbol"]) for h in http])
    base = int(time.time() * 1e9) - int(timeline[0][0] * 1e9)
    mono0 = time.monotonic_ns() - int(timeline[0][0] * 1e9)
    for ts, kind, item in timeline:
        ns = int(ts * 1e9)
        if kind:
            feed.handle_frame(item, base + ns, mono0 + ns)
        else:
            feed.apply_snapshot(symbols[item], next(h.body for h in http
                                                    if h.params["symbol"] == item),
                                base + ns, mono0 + ns)
    assert not feed.stats.resyncs and not feed.stats.malformed, feed.stats
    # Receive times were moved to now; move the venue's event times with them, so the
    # recorded receive - exchange skew (milliseconds) is kept, not 2021 -> now.
    out = [e._replace(ts_exchange=e.ts_exchange + base) if e.ts_exchange else e for e in out]
    snaps = [e for e in out if isinstance(e, BookSnapshot)]
    body = [e for e in out if isinstance(e, BookDelta | Trade)]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for e in body:
        if isinstance(e, BookDelta):
            first.setdefault(e.symbol, e.prev_seq)
            last[e.symbol] = e.seq
    shift = {s: last[s] - first[s] for s in last}  # a pass's span of each book's chain
    span = body[-1].ts_recv - body[0].ts_recv + 100_000_000
    size = sum(len(Encoder().encode(e)[1]) + 24 for e in out) * (events // len(body) + 2)
    writer = shm.RingWriter(name, capacity=1 << max(24, (size - 1).bit_length()))
    enc = Encoder()
    written = 0
    try:
        for e in snaps:
            kind, payload = enc.encode(e)
            writer.write(payload, kind)
            written += 1
        k = 0
        while written < events:
            t = k * span
            for e in body:
                if isinstance(e, BookDelta):
                    d = k * shift[e.symbol]
                    e = e._replace(seq=e.seq + d, prev_seq=e.prev_seq + d,
                                   ts_exchange=e.ts_exchange + t, ts_recv=e.ts_recv + t,
                                   ts_recv_mono=e.ts_recv_mono + t)
                else:
                    e = e._replace(seq=e.seq + k * 10_000_000, ts_exchange=e.ts_exchange + t,
                                   ts_recv=e.ts_recv + t, ts_recv_mono=e.ts_recv_mono + t)
                kind, payload = enc.encode(e)
                writer.write(payload, kind)
                written += 1
            k += 1
        st = shm.ring_stats(name)
    finally:
        writer.close()
    levels = sum(len(e.bids) + len(e.asks) for e in body if isinstance(e, BookDelta))
    deltas = sum(isinstance(e, BookDelta) for e in body)
    return {"workload": "recorded", "records": st.last_seq, "bytes": st.bytes_written,
            "passes": k, "levels_per_delta": levels / deltas,
            "trades_per_pass": len(body) - deltas, "deltas_per_pass": deltas}


# ----- draining (child processes) -------------------------------------------------------------
def child_drain(instance: str, config: str, target: str, out: str) -> int:
    """The analyzer daemon, timed from its first batch to ring seq ``target``, then stopped."""
    import supervisor.analyzer.main as am

    goal = int(target)
    marks: dict[str, Any] = {}

    class TimedEngine(am.Engine):
        def process_batch(self, batch: Any) -> int:
            if "t0" not in marks:
                marks["t0"] = time.monotonic_ns()
                marks["seq0"] = batch.first_seq
            n = super().process_batch(batch)
            if self.ring_seq >= goal and "t1" not in marks:
                marks["t1"] = time.monotonic_ns()
                marks["seq1"] = self.ring_seq
                os.kill(os.getpid(), signal.SIGTERM)
            return n

    am.Engine = TimedEngine  # type: ignore[misc]
    try:
        return am.main([instance, "--config", config])
    finally:
        Path(out).write_bytes(jsonlib.dumps(marks))


def child_inproc(ring: str, mode: str) -> int:
    """``engine``: read_batch + Engine.process_batch; ``read``: read_batch alone."""
    import logging

    import shm
    from supervisor.analyzer.engine import Engine
    from supervisor.analyzer.settings import Settings

    reader = shm.RingReader(ring, start="oldest", batch_records=512)
    engine = Engine("bench", Settings(), logging.getLogger("bench"))
    read, process = reader.read_batch, engine.process_batch
    n = 0
    t0 = time.monotonic_ns()
    if mode == "engine":
        while True:
            batch = read()
            if not batch.count:
                break
            n += process(batch)
    else:
        while True:
            batch = read()
            if not batch.count:
                break
            n += batch.count
    t1 = time.monotonic_ns()
    print(jsonlib.dumps({"events": n, "ns": t1 - t0, "gaps": engine.sequence_gaps,
                         "lost": engine.lost}).decode())
    return 0


def drain_daemon(name: str, config: Path, records: int, tmp: Path, run: int,
                 profile: Path | None = None) -> dict[str, Any]:
    _, cpu = cb.cpus()
    out = tmp / f"drain-{run}.json"
    proc = cb.Daemon([cb.PY, __file__, "child-drain", name, str(config), str(records), str(out)],
                     cpu, tmp / f"drain-{run}.log")
    spy = None
    if profile is not None:
        time.sleep(0.6)  # past imports and attach, into the drain
        spy = cb.profile_start(proc.pid, 2, profile, cb.cpus()[0])
    try:
        cb.wait_for("the analyzer to drain", lambda: proc.proc.poll() is not None, 300)
    finally:
        proc.stop()
        if spy is not None:
            spy.wait(60)
    if proc.proc.returncode != 0:
        raise RuntimeError(f"analyzer exited {proc.proc.returncode}:\n{proc.tail()}")
    marks = jsonlib.loads(out.read_bytes())
    doc, _, _ = statsblock.read_block(f"{name}.analyzer")
    events = marks["seq1"] - marks["seq0"] + 1
    return {"events": events, "rate": events / ((marks["t1"] - marks["t0"]) / 1e9),
            "lost": doc["lost"], "gaps": doc["sequence_gaps"], "no_book": doc["no_book"],
            "quality": sum(doc["quality"].get("totals", {}).values())}


def drain_inproc(name: str, mode: str) -> dict[str, Any]:
    _, cpu = cb.cpus()
    res = subprocess.run(cb.pinned(cpu, [cb.PY, __file__, "child-inproc", name, mode]),
                         capture_output=True, text=True, cwd=cb.ROOT, check=True, timeout=300,
                         preexec_fn=cb.own_autogroup)
    doc = jsonlib.loads(res.stdout.strip().splitlines()[-1])
    return {"events": doc["events"], "rate": doc["events"] / (doc["ns"] / 1e9),
            "gaps": doc["gaps"], "lost": doc["lost"]}


# ----- the benchmark --------------------------------------------------------------------------
def bench(args: argparse.Namespace) -> dict[str, Any]:
    import shm

    cb.NICE[0] = args.nice
    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-analyzer-"))
    result: dict[str, Any] = {"script": "analyzer", "machine": cb.machine(),
                              "settings": {k: v for k, v in vars(args).items() if k != "json"},
                              "workloads": {}}
    try:
        for workload in args.workloads.split(","):
            name = f"a{uuid.uuid4().hex[:6]}_{workload}"
            try:
                fill = (fill_synthetic(name, args.events, tmp) if workload == "synthetic"
                        else fill_recorded(name, args.events))
                rows: dict[str, list[dict[str, Any]]] = {"daemon": [], "engine only": [],
                                                         "ring read only": []}
                profile = None
                for run in range(args.runs):
                    reader = f"drain{run}"
                    table = cb.instance_toml(
                        name, VENUE, 10 if workload == "synthetic" else 4, _NoReplay(),
                        capacity=1 << 24, zmq=False,
                        analyzer=f'reader = "{reader}", zmq_pub = "tcp://127.0.0.1:'
                                 f'{cb.free_port()}", settings = {{ source = "ring" }}')
                    cfg = cb.write_config(tmp, [table])
                    prof = tmp / f"{workload}.spy" if args.profile and run == 0 else None
                    rows["daemon"].append(drain_daemon(name, cfg, fill["records"], tmp, run,
                                                       prof))
                    if prof is not None and prof.exists():
                        profile = {"functions": cb.profile_summary(prof, 12),
                                   "parts": cb.profile_parts(prof, ANALYZER_PARTS)}
                    shm.remove_reader(name, reader)
                    rows["engine only"].append(drain_inproc(name, "engine"))
                    rows["ring read only"].append(drain_inproc(name, "read"))
                    print(f"  {workload:10} run {run}: " + "  ".join(
                        f"{k} {v[-1]['rate']:,.0f} ev/s" for k, v in rows.items())
                        + f"  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            finally:
                cb.cleanup(name)
            result["workloads"][workload] = {
                "fill": fill, "profile": profile,
                "rows": {k: {"rate": cb.med([r["rate"] for r in v]),
                             "events": v[0]["events"],
                             "lost": sum(r.get("lost", 0) for r in v),
                             "gaps": sum(r.get("gaps", 0) for r in v),
                             "no_book": sum(r.get("no_book", 0) for r in v),
                             "quality": max((r.get("quality", 0) for r in v), default=0)}
                         for k, v in rows.items()},
                "runs": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = list(os.getloadavg())
    result["targets"] = [
        {"target": f"{w}: >= 200k events/s per analyzer (daemon, analysis on)",
         "value": f"{v['rows']['daemon']['rate']['median']:,.0f} events/s",
         "met": v["rows"]["daemon"]["rate"]["median"] >= 200_000}
        for w, v in result["workloads"].items()]
    result["markdown"] = markdown(result)
    return result


class _NoReplay:
    """Endpoints for a config whose collector is not running (the drain only reads)."""

    def endpoints(self, instance: str) -> tuple[str, str]:
        return "ws://127.0.0.1:9/x", "http://127.0.0.1:9/x"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = ["### Analyzer throughput: draining a filled ring, built-in analysis on\n",
             f"{cb.machine_line(result['machine'])}; load at end "
             + "/".join(f"{x:.2f}" for x in result["loadavg_end"]) + ".",
             f"One process pinned to CPU {cb.cpus()[1]} at nice {s['nice']}; median of "
             f"{s['runs']} runs (min-max), the three rows interleaved; batches of 512.\n"]
    for workload, w in result["workloads"].items():
        fill = w["fill"]
        extra = ""
        if workload == "recorded":
            extra = (f", {fill['passes']} chained passes of {fill['deltas_per_pass']} deltas "
                     f"({fill['levels_per_delta']:.1f} levels each on average) + "
                     f"{fill['trades_per_pass']} trades")
        lines += [f"**{workload}**: {fill['records']:,} records, "
                  f"{fill['bytes'] / fill['records']:.0f} B each on average{extra}\n",
                  "| path | events/s | µs/event | lost | sequence gaps | deltas without a book "
                  "|", "|---|---:|---:|---:|---:|---:|"]
        for label, r in w["rows"].items():
            rate = r["rate"]
            lines.append(f"| {label} | {cb.fmt(rate)} | {1e6 / rate['median']:.2f} | "
                         f"{r['lost']} | {r['gaps']} | "
                         f"{r['no_book'] if label == 'daemon' else '-'} |")
        if w.get("profile"):
            lines += ["\nWhere the daemon's time goes (py-spy, 200 Hz, self time by the "
                      "innermost Python frame):\n", "| part | % of samples |", "|---|---:|"]
            lines += [f"| {part} | {share:.1f} |" for part, share in w["profile"]["parts"]]
            lines += ["", "| function | self % | inclusive % |", "|---|---:|---:|"]
            lines += [f"| `{f}` | {a:.1f} | {b:.1f} |" for f, a, b in w["profile"]["functions"]]
        lines.append("")
    lines += cb.targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child-drain":
        return child_drain(*argv[1:5])
    if argv and argv[0] == "child-inproc":
        return child_inproc(*argv[1:3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run, fewer events (< 1 minute)")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--events", type=int, default=400_000, help="records to fill the ring with")
    ap.add_argument("--workloads", default="synthetic,recorded")
    ap.add_argument("--nice", type=int, default=-20)
    ap.add_argument("--profile", action="store_true", help="py-spy the first daemon drain")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.events = 1, 100_000
    result = bench(args)
    print(result["markdown"])
    if args.json:
        Path(args.json).write_text(jsonlib.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
