"""NATS JetStream bridge: events/s through the bridge and the latency it adds.

Everything runs on this machine against a real ``nats-server -js`` (file store in a temp
dir) on a loopback port:

- **throughput**: with the bridge (``marketprism-nats-bridge``, its own process)
  connected and idle, N synthetic events (books, trades; ~110 bytes a record) are written
  to the ring in one burst; events/s = N / time until the stream holds all N (polled every
  10 ms), with the CPU the bridge used per 10k events (its stats block). Both encodings.
- **latency**: a paced writer puts events into the ring at a fixed rate; a JetStream push
  consumer in another process (ordered consumer) takes each message and computes
  ``CLOCK_MONOTONIC now - ts_recv_mono`` of the record (set at the ring write): ring write
  -> bridge -> JetStream (stored, file) -> consumer. That is the latency the bridge path
  adds over reading the ring directly (which costs microseconds, see bench/ring.py). The
  bridge's own publish -> ack histogram is reported alongside.

Usage: ``.venv/bin/python bench/nats.py [--quick] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
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

# This file is bench/nats.py: keep its directory off sys.path, or "import nats" finds it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import shm  # noqa: E402
from supervisor import codec, jsonlib, statsblock  # noqa: E402
from supervisor.events import BookDelta, Trade  # noqa: E402
from supervisor.nats_bridge.wire import recv_mono  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def events(n: int, now: bool = False) -> list[Any]:
    out = []
    t = 1_700_000_000 * 10**9
    for i in range(1, n + 1):
        mono = time.monotonic_ns() if now else i
        sym = ("BTC-USDT", "ETH-USDT", "SOL-USDT")[i % 3]
        if i % 4 == 0:
            out.append(Trade(sym, i, t, t, mono, str(i), "buy", "100.5", "0.25"))
        else:
            out.append(BookDelta(sym, i, t, t, mono, i - 1, [["99.5", str(i % 9 + 1)]],
                                 [["100.5", "2"]]))
    return out


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e3  # µs


class Rig:
    """nats-server + a ring + a config; spawns the bridge daemon."""

    def __init__(self, tmp: Path, encoding: str) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.server = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             str(tmp / "js")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.instance = f"bench{uuid.uuid4().hex[:8]}"
        self.ring = f"bench-nats-{uuid.uuid4().hex[:8]}"
        self.writer = shm.RingWriter(self.ring, capacity=1 << 26)
        self.config = tmp / f"{self.instance}.toml"
        self.config.write_text(f"""[instances.{self.instance}]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
ring = "{self.ring}"
ring_capacity = {1 << 26}
[instances.{self.instance}.nats]
servers = ["{self.url}"]
encoding = "{encoding}"
""")
        self.bridge: subprocess.Popen[bytes] | None = None
        _wait(lambda: _accepting(self.port), 10)

    def start_bridge(self) -> None:
        self.bridge = subprocess.Popen(
            [sys.executable, "-m", "supervisor.nats_bridge.main", self.instance, "--config",
             str(self.config)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "bridge.log", "ab"))  # noqa: SIM115

    def stats(self) -> dict[str, Any]:
        try:
            return statsblock.read_block(f"{self.instance}.nats")[0]
        except statsblock.StatsBlockError:
            return {}

    def close(self) -> None:
        if os.environ.get("BENCH_NATS_DEBUG") and (self.tmp / "bridge.log").exists():
            sys.stderr.write((self.tmp / "bridge.log").read_text())
        if self.bridge is not None:
            self.bridge.send_signal(signal.SIGTERM)
            self.bridge.wait(20)
        self.writer.close()
        shm.remove_ring(self.ring, force=True)
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(20)
        try:
            os.unlink(statsblock.block_path(f"{self.instance}.nats"))
        except FileNotFoundError:
            pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepting(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(cond: Any, timeout: float, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
    return value


def throughput(n: int, encoding: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mp-bench-nats-") as tmp:
        rig = Rig(Path(tmp), encoding)
        try:
            enc = codec.Encoder()
            records = [(kind, bytes(view)) for kind, view in map(enc.encode, events(n))]
            rig.start_bridge()
            before = _wait(lambda: (s := rig.stats()).get("connected") and s, 30)
            # A burst of n records (the writer takes ~1 µs each), then the stream is polled
            # every 10 ms until it holds the last one.
            t0 = time.monotonic()
            for kind, payload in records:
                rig.writer.write(payload, kind)
            asyncio.run(_wait_stored(rig.url, f"marketprism_{rig.instance}", n))
            t1 = time.monotonic()
            last = _wait(lambda: (s := rig.stats()).get("acked_seq", 0) >= n and s, 30)
            cpu = last["cpu_seconds"] - before["cpu_seconds"]
            return {"encoding": encoding, "events": n, "rate": n / (t1 - t0),
                    "cpu_per_10k": cpu / n * 1e4, "in_flight_max": last["in_flight_max"],
                    "publish_to_ack_p50_us": _hist_q(last["publish_to_ack"], 0.5),
                    "publish_to_ack_p99_us": _hist_q(last["publish_to_ack"], 0.99)}
        finally:
            rig.close()


async def _wait_stored(url: str, stream: str, n: int) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        while (await js.stream_info(stream)).state.messages < n:
            await asyncio.sleep(0.01)
    finally:
        await nc.close()


def _hist_q(h: dict[str, Any], q: float) -> float:
    rank, seen = q * h["count"], 0
    for bound, count in zip(h["bounds"] + [float("inf")], h["counts"], strict=True):
        seen += count
        if seen >= rank:
            return bound * 1e6
    return float("inf")


async def _consume(url: str, subject: str, n: int, out: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    lat: list[int] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        lat.append(time.monotonic_ns() - recv_mono(msg.data))
        if len(lat) >= n:
            done.set()

    while True:
        try:
            await js.subscribe(subject, cb=on_msg, ordered_consumer=True)
            break
        except nats.js.errors.NotFoundError:  # the bridge has not created the stream yet
            await asyncio.sleep(0.05)
    Path(out + ".ready").write_text("1")
    await asyncio.wait_for(done.wait(), 600)
    Path(out).write_bytes(jsonlib.dumps(lat))
    await nc.close()


def latency(rate: int, seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="mp-bench-nats-") as tmp:
        rig = Rig(Path(tmp), "binary")
        out = str(Path(tmp) / "lat.json")
        consumer = None
        try:
            rig.start_bridge()
            _wait(lambda: rig.stats().get("connected"), 60, "the bridge to connect")
            consumer = subprocess.Popen(
                [sys.executable, __file__, "child-consume", rig.url,
                 f"marketprism.{rig.instance}.>", str(n), out], cwd=REPO)
            _wait(lambda: os.path.exists(out + ".ready"), 60, "the consumer")
            enc = codec.Encoder()
            evs = events(n)
            start = time.monotonic_ns()
            step = 10**9 // rate
            for i, ev in enumerate(evs):
                delay = start + i * step - time.monotonic_ns()
                if delay > 0:  # sleep, not spin: the 2 cores are shared with the bridge
                    time.sleep(delay / 1e9)
                kind, view = enc.encode(ev._replace(ts_recv_mono=time.monotonic_ns()))
                rig.writer.write(view, kind)
            consumer.wait(120)
            lat = jsonlib.loads(Path(out).read_bytes())
            st = rig.stats()
            return {"rate": rate, "events": len(lat), "p50_us": percentile(lat, 0.5),
                    "p99_us": percentile(lat, 0.99), "max_us": percentile(lat, 1.0),
                    "publish_to_ack_p50_us": _hist_q(st["publish_to_ack"], 0.5),
                    "publish_to_ack_p99_us": _hist_q(st["publish_to_ack"], 0.99)}
        finally:
            if consumer is not None and consumer.poll() is None:
                consumer.kill()
            rig.close()


def markdown(result: dict[str, Any]) -> str:
    lines = ["Ring -> `marketprism-nats-bridge` -> nats-server 2.9 (JetStream, file store), "
             "all on this machine (2 cores: the bridge, the server and the writer share "
             "them).\n", "| encoding | events | events/s | bridge CPU s per 10k | "
             "max in flight | publish->ack p50 µs | p99 µs |", "|---|---:|---:|---:|---:|"
             "---:|---:|"]
    for t in result["throughput"]:
        lines.append(f"| {t['encoding']} | {t['events']:,} | {t['rate']:,.0f} | "
                     f"{t['cpu_per_10k']:.2f} | {t['in_flight_max']} | "
                     f"{t['publish_to_ack_p50_us']:,.0f} | {t['publish_to_ack_p99_us']:,.0f} |")
    lines += ["", "Latency ring write -> JetStream consumer (ordered push consumer in "
              "another process); publish->ack bounds are histogram bucket edges.\n",
              "| rate msg/s | events | p50 µs | p99 µs | max µs | publish->ack p50 µs | "
              "p99 µs |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["latency"]:
        lines.append(f"| {r['rate']:,} | {r['events']:,} | {r['p50_us']:,.0f} | "
                     f"{r['p99_us']:,.0f} | {r['max_us']:,.0f} | "
                     f"{r['publish_to_ack_p50_us']:,.0f} | {r['publish_to_ack_p99_us']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child-consume":
        asyncio.run(_consume(argv[1], argv[2], int(argv[3]), argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (under a minute)")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.rates, args.seconds = 50_000, "1000,5000", 2.0
    result: dict[str, Any] = {
        "throughput": [throughput(args.events, enc) for enc in ("binary", "json")],
        "latency": [latency(int(r), args.seconds) for r in args.rates.split(",")],
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    result["targets"] = []
    result["markdown"] = markdown(result)
    print(result["markdown"])
    if args.json:
        Path(args.json).write_text(jsonlib.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
