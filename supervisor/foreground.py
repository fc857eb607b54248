"""``marketprism run``: every enabled instance as child processes, in the foreground.

For development and for machines without systemd. It is deliberately small: systemd is the
supervisor in production. Children are the same daemons the units start; a child that exits
is restarted with the units' policy (restart after a short delay, never on exit 78, give up
after 10 restarts within 5 minutes); Ctrl-C or SIGTERM stops everything (SIGTERM, then
SIGKILL after ``stop_timeout``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from supervisor.config import EX_CONFIG, Config

log = logging.getLogger("marketprism.run")

RESTART_DELAY = 2.0
BURST = 10  # restarts within WINDOW before giving up, like StartLimitBurst=
WINDOW = 300.0


@dataclass
class Child:
    name: str  # e.g. "collector@okx_spot"
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    failed: bool = False  # gave up (exit 78 or start limit)


def children_for(cfg: Config, python: str = sys.executable) -> list[Child]:
    """The processes the units would start for ``cfg``."""
    conf = ["--config", cfg.path]
    out: list[Child] = []
    for name, inst in cfg.instances.items():
        if not inst.enabled:
            continue
        out.append(Child(f"collector@{name}",
                         [python, "-m", "supervisor.collector.main", name, *conf]))
        if inst.analyzer.enabled:
            out.append(Child(f"analyzer@{name}",
                             [python, "-m", "supervisor.analyzer.main", name, *conf]))
        if inst.nats is not None and inst.nats.enabled:
            out.append(Child(f"nats-bridge@{name}",
                             [python, "-m", "supervisor.nats_bridge.main", name, *conf]))
    out.append(Child("aggregator", [python, "-m", "supervisor.aggregator.main", *conf]))
    return out


class Foreground:
    def __init__(self, children: list[Child], stop_timeout: float = 15.0) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self.stopping = False

    def _start(self, child: Child) -> None:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # children are not systemd services here
        child.proc = subprocess.Popen(child.argv, env=env)
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _reap(self, child: Child, now: float) -> None:
        assert child.proc is not None
        rc = child.proc.returncode
        child.proc = None
        if rc == EX_CONFIG:
            log.error("%s exited with 78 (configuration error): not restarting", child.name)
            child.failed = True
            return
        child.restarts = [t for t in child.restarts if now - t < WINDOW] + [now]
        if len(child.restarts) > BURST:
            log.error("%s restarted %d times in %.0fs: giving up", child.name, BURST, WINDOW)
            child.failed = True
            return
        log.warning("%s exited with %s: restarting in %.0fs", child.name, rc, RESTART_DELAY)
        child.next_start = now + RESTART_DELAY

    def run(self) -> int:
        def stop(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for child in self.children:
            self._start(child)
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.failed:
                    continue
                if child.proc is not None and child.proc.poll() is not None:
                    self._reap(child, now)
                elif child.proc is None and now >= child.next_start:
                    self._start(child)
            time.sleep(0.2)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0fs: SIGKILL", child.name, self.stop_timeout)
                child.proc.kill()
                child.proc.wait()
        log.info("all processes stopped")
