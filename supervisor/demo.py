"""``make demo``: the whole system against the built-in replay exchange, no internet needed.

Three ways to run it, picked in this order by ``--mode auto``:

- ``container`` (the host's PID 1 is not systemd, we are root, systemd-nspawn exists): build
  the .deb (``packaging/build-deb.sh``), boot a real systemd in a throw-away container (the
  harness the tests use, ``tests/lab``), ``apt-get install`` the package there, point its
  config at the replay exchange, start ``marketprism.target``: what a user gets on a server.
- ``host`` (the host runs systemd): the same with the host's systemd; it installs the package
  on this machine, so it is only chosen with ``--mode host``.
- ``foreground``: ``marketprism run`` (no systemd at all).

In every mode the replay exchange serves 127.0.0.1:8090 and the ``marketprism status``
table is redrawn until Ctrl-C (or ``--seconds``); then everything is stopped and removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def pick_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.path.isdir("/run/systemd/system"):
        return "foreground"  # never install on a real host unasked: --mode host does
    if os.geteuid() == 0 and shutil.which("systemd-nspawn") and Path("tests/lab").is_dir():
        return "container"
    return "foreground"


def show_until_stopped(cfg: config_mod.Config, seconds: float, alive, stopping) -> None:
    """Redraw the status table every 2 s until Ctrl-C, ``seconds`` or ``alive()`` fails."""
    color = status.use_color(sys.stdout)
    started = time.monotonic()
    while not stopping() and alive():
        doc, source = status.get_health(cfg, None)
        table = status.render(doc, color=color, source=source)
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")
        print(f"marketprism demo ({time.monotonic() - started:.0f}s; Ctrl-C stops)\n")
        print(table, flush=True)
        if seconds and time.monotonic() - started >= seconds:
            return
        wait_until(stopping, 2.0)


def run_container(args: argparse.Namespace, cfg: config_mod.Config, stopping) -> int:
    """Build the .deb, install it in a booted systemd, start marketprism.target."""
    sys.path.insert(0, os.getcwd())
    from tests.lab import SystemdLab  # the harness the tests use (a checkout-only tool)

    out = Path("build/deb")
    print("building the .deb (packaging/build-deb.sh) ...", flush=True)
    with open(args.log, "ab") as log:
        subprocess.run(["packaging/build-deb.sh", "--out", str(out)], check=True,
                       stdout=log, stderr=log)
    deb = sorted(out.glob("marketprism_*.deb"))[-1]
    print(f"booting systemd in a container and installing {deb.name} ...", flush=True)
    with SystemdLab("mpdemo", binds=(f"{deb.parent.resolve()}:/demo",)) as lab:
        lab.run("rm", "-f", "/usr/sbin/policy-rc.d")
        lab.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                f"/demo/{deb.name}", timeout=600)
        lab.write("/etc/marketprism/marketprism.toml", Path(args.config).read_text())
        lab.run("marketprism", "units", "sync")
        lab.run("systemd-run", "--unit=marketprism-replay", "-p", "Type=simple",
                "marketprism-replay", "serve", "--port", "8090", "--rate", str(args.rate))
        lab.wait_for("replay exchange", lambda: replay_up("http://127.0.0.1:8090"), 30)
        print("systemctl start marketprism.target ...", flush=True)
        lab.systemctl("start", "marketprism.target", timeout=300)
        show_until_stopped(cfg, args.seconds, lambda: True, stopping)
        print("stopping (systemctl stop marketprism.target, then the container) ...",
              flush=True)
        lab.systemctl("stop", "marketprism.target", check=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-demo", description=__doc__)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS", "0")),
                        help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--rate", type=int, default=500,
                        help="replay messages/s per connection")
    parser.add_argument("--log", default="build/demo.log", help="daemon log file")
    parser.add_argument("--config", default=DEMO_CONFIG)
    parser.add_argument("--mode", choices=("auto", "container", "host", "foreground"),
                        default=os.environ.get("DEMO_MODE", "auto"))
    args = parser.parse_args(argv)
    cfg = config_mod.load(args.config)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    stop_flag: list[bool] = []

    def stop(signum: int, _frame: object) -> None:
        stop_flag.append(True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    mode = pick_mode(args.mode)
    print(f"marketprism demo, mode {mode}: replay exchange on 127.0.0.1:8090, "
          f"logs in {args.log}", flush=True)
    if mode == "container":
        return run_container(args, cfg, lambda: bool(stop_flag))
    if mode == "host":
        print("--mode host: apt install ./build/deb/marketprism_*.deb, then follow the "
              "README's Install section; this demo does not change a real host by itself.",
              file=sys.stderr)
        return 2
    return run_foreground(args, cfg, lambda: bool(stop_flag))


def run_foreground(args: argparse.Namespace, cfg: config_mod.Config, stopping) -> int:
    """Replay exchange + ``marketprism run`` as child processes."""
    log = open(args.log, "ab")
    py = sys.executable
    replay_url = "http://127.0.0.1:8090"
    replay = subprocess.Popen([py, "-m", "supervisor.replay.main", "serve", "--port", "8090",
                               "--rate", str(args.rate)], stdout=log, stderr=log)
    procs = [replay]
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
        show_until_stopped(cfg, args.seconds, lambda: run.poll() is None, stopping)
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
