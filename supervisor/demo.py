"""``make demo``: the whole system against the built-in replay exchange, no internet needed.

Starts ``marketprism-replay serve`` on 127.0.0.1:8090, then every instance of the embedded
demo configuration (five collectors, an analyzer each, the aggregator) with
``marketprism run``, and redraws the ``marketprism status`` table until Ctrl-C (or
``--seconds``), then stops everything. Daemon logs go to ``--log`` so the table stays
readable.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from supervisor import config as config_mod
from supervisor.aggregator import status
from supervisor.replay.harness import control

DEMO_CONFIG = str(resources.files("supervisor") / "data" / "demo.toml")


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def replay_up(url: str) -> bool:
    try:
        control(f"{url}/_control/stats", timeout=1.0)
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-demo", description=__doc__)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS", "0")),
                        help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--rate", type=int, default=500,
                        help="replay messages/s per connection")
    parser.add_argument("--log", default="build/demo.log", help="daemon log file")
    parser.add_argument("--config", default=DEMO_CONFIG)
    args = parser.parse_args(argv)
    cfg = config_mod.load(args.config)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    log = open(args.log, "ab")
    py = sys.executable
    replay_url = "http://127.0.0.1:8090"
    print(f"marketprism demo: replay exchange on {replay_url}, daemon logs in {args.log}")
    replay = subprocess.Popen([py, "-m", "supervisor.replay.main", "serve", "--port", "8090",
                               "--rate", str(args.rate)], stdout=log, stderr=log)
    procs = [replay]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if not wait_until(lambda: replay_up(replay_url) or replay.poll() is not None, 20):
            print("replay exchange did not come up; see", args.log, file=sys.stderr)
            return 1
        if replay.poll() is not None:
            print("replay exchange exited (port 8090 busy?); see", args.log, file=sys.stderr)
            return 1
        run = subprocess.Popen([py, "-m", "supervisor.cli", "run", "--config", args.config],
                               stdout=log, stderr=log)
        procs.insert(0, run)
        color = status.use_color(sys.stdout)
        started = time.monotonic()
        while not stopping and run.poll() is None:
            doc, source = status.get_health(cfg, None)
            table = status.render(doc, color=color, source=source)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(f"marketprism demo ({time.monotonic() - started:.0f}s; Ctrl-C stops)\n")
            print(table, flush=True)
            if args.seconds and time.monotonic() - started >= args.seconds:
                break
            wait_until(lambda: stopping, 2.0)
        return 0
    finally:
        print("stopping...", flush=True)
        for proc in procs:  # the daemons first, then the exchange they talk to
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        print("demo stopped.")


if __name__ == "__main__":
    sys.exit(main())
