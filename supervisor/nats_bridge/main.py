"""``marketprism-nats-bridge INSTANCE``: one instance's ring to NATS JetStream, as a daemon.

Lifecycle, as systemd sees it (``Type=notify``, ``NotifyAccess=main``):

- configuration errors (unknown instance, no ``[instances.X.nats]`` table or ``enabled =
  false``, bad values) exit 78 (EX_CONFIG) before anything else;
- the ring may not exist yet (collector not started): the bridge waits for it, feeding the
  watchdog, with ``STATUS=waiting for ring ...``;
- ``READY=1`` once attached to the ring and the first session attempt is over: connected,
  or NATS unreachable and backing off. An unreachable NATS is the bridge's job to ride out
  (cursor kept, lag reported), not a reason to fail the unit; ``STATUS=`` says which;
- ``WATCHDOG=1`` from the event loop while its lag is under a bound (a blocked loop stops
  the pings and systemd restarts the bridge, which resumes from its commit);
- ``SIGTERM``: ``STOPPING=1``, wait for the acks of what was sent, commit, exit 0.

Stats go to the block ``/dev/shm/marketprism-stats.<instance>.nats`` once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys
import time
from typing import Any

import psutil

from supervisor import config as config_mod
from supervisor.nats_bridge.bridge import Bridge
from supervisor.service import (
    LoopLag,
    Notifier,
    resource_report,
    set_log_level,
    set_process_name,
    setup_logging,
)
from supervisor.statsblock import StatsWriter

MAX_LOOP_LAG = 2.0  # seconds; above it the watchdog is not fed
STOP_TIMEOUT = 10.0  # seconds to drain acks on SIGTERM (TimeoutStopSec= is 15)


class Daemon:
    """Bridge + systemd + stats block for one instance."""

    def __init__(self, cfg: config_mod.Config, inst: config_mod.InstanceConfig,
                 log: logging.Logger) -> None:
        assert inst.nats is not None
        self.cfg = cfg
        self.inst = inst
        self.log = log
        self.notifier = Notifier()
        self.loop_lag = LoopLag()
        self.bridge = Bridge(inst.name, inst.ring, inst.nats, log)
        self.stats_block = StatsWriter(f"{inst.name}.nats")
        self.started = time.time()
        self.attached = False
        self._proc = psutil.Process()
        self._stop = asyncio.Event()

    def status_line(self) -> str:
        b = self.bridge
        if not self.attached:
            return f"waiting for ring {self.inst.ring}"
        _, lag = b.ring_lag()
        lost = f", {b.stats.lost} lost" if b.stats.lost else ""
        if b.state == "connected":
            return f"publishing to {b.cfg.stream} on {b.server}, lag {lag}{lost}"
        if b.state == "backoff":
            return (f"NATS unreachable ({b.stats.last_error}), retrying, lag {lag}{lost}")[:200]
        return f"{b.state}, lag {lag}{lost}"

    def stats_doc(self) -> dict[str, Any]:
        mem = self._proc.memory_info()
        cpu = self._proc.cpu_times()
        doc: dict[str, Any] = {
            "role": "nats-bridge", "instance": self.inst.name, "pid": os.getpid(),
            "started": self.started, "status": self.status_line(),
            "ready": self.notifier.ready_sent, "loop_lag": self.loop_lag.lag,
            "rss": mem.rss, "cpu_seconds": cpu.user + cpu.system,
        }
        if self.attached:
            doc.update(self.bridge.stats_doc())
        return doc

    async def wait_for_ring(self) -> bool:
        """Attach to the ring, waiting for a collector that has not created it yet."""
        import shm

        warned = False
        while not self._stop.is_set():
            try:
                self.bridge.attach()
                self.attached = True
                self.log.info("attached to ring %s as reader %r; resuming after seq %d",
                              self.inst.ring, self.bridge.cfg.reader,
                              self.bridge.committed_seq)
                return True
            except shm.RingNotFound:
                if not warned:
                    self.log.warning("ring %s does not exist yet (collector not started?); "
                                     "waiting for it", self.inst.ring)
                    warned = True
            self.notifier.status(self.status_line())
            self.notifier.watchdog()
            self.stats_block.publish(self.stats_doc())
            try:
                await asyncio.wait_for(self._stop.wait(), 0.5)
            except TimeoutError:
                pass
        return False

    async def supervise(self) -> None:
        """READY, watchdog, STATUS and the stats block: one loop on the event loop."""
        interval = min(self.notifier.watchdog_interval, 1.0)
        last_stats = 0.0
        while True:
            if not self.notifier.ready_sent and self.bridge.attempted.is_set():
                self.notifier.ready(self.status_line())
                self.log.info("ready: %s", self.status_line())
            lag = self.loop_lag.current()
            if lag <= MAX_LOOP_LAG:
                self.notifier.watchdog()
            else:
                self.log.error("not feeding the watchdog: event loop lag %.2fs", lag)
            self.notifier.status(self.status_line())
            now = time.monotonic()
            if now - last_stats >= 1.0:
                self.stats_block.publish(self.stats_doc())
                last_stats = now
            await asyncio.sleep(interval)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.log.info(
            "SIGHUP: nothing to reload (restart the unit to apply changes)"))
        lagger = asyncio.ensure_future(self.loop_lag.run())
        try:
            if not await self.wait_for_ring():
                return self._stopped()
            bridge = asyncio.ensure_future(self.bridge.run())
            tasks = [bridge, asyncio.ensure_future(self.supervise())]
            stopper = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
            self.notifier.stopping()
            self.bridge.request_stop()
            try:
                await asyncio.wait_for(asyncio.shield(bridge), STOP_TIMEOUT)
            except TimeoutError:
                self.log.warning("acks still missing after %gs; stopping without them (they "
                                 "are re-sent and de-duplicated at the next start)",
                                 STOP_TIMEOUT)
            for t in (stopper, *tasks):
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            failed = [t for t in done if t is not stopper and not t.cancelled()
                      and t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                self.log.critical("fatal: %s: %s; %s", type(exc).__name__, exc,
                                  resource_report(self.cfg.service.state_dir), exc_info=exc)
                self._close("failed")
                return 1
            return self._stopped()
        finally:
            lagger.cancel()

    def _stopped(self) -> int:
        self.log.info("stopped cleanly; ring committed up to seq %d",
                      self.bridge.committed_seq)
        self._close("stopped")
        return 0

    def _close(self, state: str) -> None:
        try:
            self.stats_block.publish({**self.stats_doc(), "status": state, "ready": False})
        finally:
            self.stats_block.close()
            self.bridge.close()


def load(instance: str, path: str | None) -> tuple[config_mod.Config,
                                                 config_mod.InstanceConfig]:
    """The instance's config, with a NATS sink configured and enabled (else ConfigError)."""
    cfg = config_mod.load(path)
    inst = cfg.instance(instance)
    if inst.nats is None:
        raise config_mod.ConfigError(cfg.path, f"instances.{inst.name}.nats",
                                     "no NATS sink configured for this instance")
    if not inst.nats.enabled:
        raise config_mod.ConfigError(cfg.path, f"instances.{inst.name}.nats.enabled",
                                     "the NATS sink is disabled for this instance")
    creds = inst.nats.credentials
    if creds:
        key = f"instances.{inst.name}.nats.credentials"
        if not os.access(creds, os.R_OK):
            raise config_mod.ConfigError(cfg.path, key, f"cannot read {creds}")
        if importlib.util.find_spec("nkeys") is None:
            raise config_mod.ConfigError(cfg.path, key, "a credentials file needs the nkeys "
                                         "package (pip install nkeys)")
    return cfg, inst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-nats-bridge",
                                     description="Publish one instance's ring to NATS "
                                                 "JetStream.")
    parser.add_argument("instance", help="instance name from the config, e.g. okx_spot")
    parser.add_argument("--config", help=f"config file (default ${config_mod.ENV_PATH} or "
                                         f"{config_mod.DEFAULT_PATH})")
    args = parser.parse_args(argv)
    log = setup_logging(f"nats-bridge[{args.instance}]")
    try:
        cfg, inst = load(args.instance, args.config)
    except config_mod.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return config_mod.EX_CONFIG
    set_log_level(cfg.service.log_level)
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its errors reach us as exceptions
    set_process_name("nats-bridge", inst.name)
    try:
        return asyncio.run(Daemon(cfg, inst, log).run())
    except Exception as exc:  # noqa: BLE001 - one diagnostic line, then systemd restarts us
        log.critical("fatal: %s: %s; %s", type(exc).__name__, exc,
                     resource_report(cfg.service.state_dir), exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
