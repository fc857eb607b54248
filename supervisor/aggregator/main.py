"""``marketprism-aggregator``: ``/health`` and ``/metrics`` for every configured instance.

One process, one asyncio loop, never on the data path: it reads the stats blocks the
collectors and analyzers publish in shared memory, the rings' counters and systemd's unit
states, and serves them:

- ``GET /health`` on ``listen:health_port`` (127.0.0.1:8087): JSON, 200 when every enabled
  instance is healthy, 503 with the reasons otherwise (see :mod:`.health`);
- ``GET /metrics`` on ``listen:metrics_port`` (127.0.0.1:9092): Prometheus exposition (see
  :mod:`.metrics`);
- every ``interval`` seconds: unit states refreshed (one ``systemctl show``), the
  node_exporter textfile rewritten atomically, ``STATUS=`` updated, health changes logged.

As systemd sees it (``Type=notify``): ``READY=1`` once both ports listen and the first
refresh is done; ``WATCHDOG=1`` from the same loop that serves and refreshes; ``SIGTERM``
sends ``STOPPING=1`` and exits 0; ``SIGHUP`` re-reads the instance list; a bad config exits
78. A missing or malformed stats block is a reported problem, never a crash.

Not started by systemd (``marketprism run``, a shell, a machine without systemd), it runs
the same way in "foreground" mode: unit states are reported as "systemd unavailable" and do
not count towards health.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from supervisor import config as config_mod
from supervisor import jsonlib
from supervisor.aggregator.health import HEALTHY, build_health, http_status
from supervisor.aggregator.metrics import MarketprismCollector
from supervisor.aggregator.sources import Sample, Sampler
from supervisor.aggregator.textfile import write_textfile
from supervisor.aggregator.units import SystemdView, UnitQuery, service_mode
from supervisor.service import (
    LoopLag,
    Notifier,
    set_log_level,
    set_process_name,
    setup_logging,
)


def package_version() -> str:
    try:
        return metadata.version("marketprism")
    except metadata.PackageNotFoundError:
        return "unknown"


class _SelfCollector(Collector):
    """The aggregator's own counters (its process metrics come from ProcessCollector)."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("marketprism_textfile_write_errors",
                                  "Failed node_exporter textfile writes.",
                                  value=self.agg.textfile_errors)
        yield GaugeMetricFamily("marketprism_aggregator_refresh_duration_seconds",
                                "Duration of the last periodic refresh (systemd query, stats "
                                "blocks, textfile).", value=self.agg.refresh_seconds)
        yield GaugeMetricFamily("marketprism_aggregator_event_loop_lag_seconds",
                                "Last measured event-loop lag of the aggregator.",
                                value=self.agg.loop_lag.lag)


class Aggregator:
    """The daemon's state: config, sampler, registries, HTTP runners and systemd glue.

    ``query`` is injectable so tests can stand in for ``systemctl``.
    """

    def __init__(self, cfg: config_mod.Config, log: logging.Logger,
                 query: UnitQuery | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.notifier = Notifier()
        self.loop_lag = LoopLag()
        mode, why_not = service_mode()
        self.query = query or (UnitQuery() if mode == "systemd" else
                               UnitQuery(booted=False, reason=why_not))
        self.version = package_version()
        self.sampler = Sampler(cfg.instances, cfg.aggregator.interval, mode)
        if not self.query.available:
            self.sampler.set_systemd(SystemdView(False, self.query.unavailable_reason(), {}))
        self.last_sample: Sample = self.sampler.sample()
        self.last_health: dict[str, Any] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MarketprismCollector(
            self.sampler.sample, version=self.version, json_backend=jsonlib.BACKEND))
        ProcessCollector(namespace="marketprism_aggregator", registry=self.registry)
        self.registry.register(_SelfCollector(self))
        self.textfile_errors = 0
        self.refresh_seconds = 0.0
        self.text_registry = CollectorRegistry(auto_describe=False)
        self.text_registry.register(MarketprismCollector(
            lambda: self.last_sample, textfile=True, version=self.version,
            json_backend=jsonlib.BACKEND))
        self._textfile_error = ""
        self._runners: list[web.AppRunner] = []

    # ----- HTTP -----------------------------------------------------------------------------
    async def handle_health(self, request: web.Request) -> web.Response:
        try:
            doc = build_health(self.sampler.sample(), jsonlib.BACKEND, self.version)
        except Exception as exc:  # never let one bad document take /health down
            self.log.exception("building /health failed")
            doc = {"status": "unhealthy", "reasons": [f"aggregator error: {exc!r}"]}
        return web.Response(body=jsonlib.dumps(doc), status=http_status(doc),
                            content_type="application/json")

    async def handle_metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:
            self.log.exception("rendering /metrics failed")
            raise web.HTTPInternalServerError(text="metrics rendering failed") from None
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def start_http(self) -> None:
        """Listen on both ports; raises OSError when one cannot be bound."""
        agg = self.cfg.aggregator
        for path, handler, port in (("/health", self.handle_health, agg.health_port),
                                    ("/metrics", self.handle_metrics, agg.metrics_port)):
            app = web.Application()
            app.router.add_get(path, handler)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, agg.listen, port).start()
            self.log.info("serving %s on http://%s:%d%s", path.lstrip("/"), agg.listen, port,
                          path)

    async def stop_http(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    # ----- periodic refresh ----------------------------------------------------------------
    async def refresh(self) -> None:
        """Unit states, a counted sample, log health changes, STATUS=, textfile."""
        t0 = time.monotonic()
        if self.query.available:
            view = await self.query.fetch(self.sampler.unit_names())
            if view.error and view.error != self.sampler.systemd.error:
                self.log.warning("unit states unavailable: %s", view.error)
            self.sampler.set_systemd(view)
        self.last_sample = self.sampler.sample(refresh=True)
        health = build_health(self.last_sample, jsonlib.BACKEND, self.version)
        self._log_changes(health)
        self.last_health = health
        self.notifier.status(self.status_line(health))
        self._write_textfile()
        self.refresh_seconds = time.monotonic() - t0

    def status_line(self, health: dict[str, Any]) -> str:
        line = (f"{health['healthy_instances']}/{health['enabled_instances']} instances "
                f"healthy")
        if health["reasons"]:
            line += f"; {health['reasons'][0]}"
            if len(health["reasons"]) > 1:
                line += f" (+{len(health['reasons']) - 1} more)"
        return line

    def _log_changes(self, health: dict[str, Any]) -> None:
        """One log line per instance whose status changed (the journal's health history)."""
        before = self.last_health.get("processes", {})
        for name, proc in health["processes"].items():
            old = before.get(name, {}).get("status")
            if old == proc["status"] or (old is None and proc["status"] == HEALTHY):
                continue
            if proc["status"] == HEALTHY:
                self.log.info("%s: healthy again", name)
            elif proc["reasons"]:
                self.log.warning("%s: %s: %s", name, proc["status"], "; ".join(proc["reasons"]))

    def _write_textfile(self) -> None:
        path = self.cfg.aggregator.textfile
        if not path:
            return
        try:
            write_textfile(path, self.text_registry)
        except OSError as exc:
            self.textfile_errors += 1
            problem = f"{path}: {exc.strerror or exc}"
            if problem != self._textfile_error:  # once per distinct problem, not per interval
                self.log.warning("cannot write the node_exporter textfile: %s", problem)
            self._textfile_error = problem
        else:
            if self._textfile_error:
                self.log.info("node_exporter textfile written again: %s", path)
            self._textfile_error = ""

    async def supervise(self) -> None:
        """Refresh every ``interval``; feed the watchdog from this loop at its own pace."""
        interval = self.cfg.aggregator.interval
        tick = min(interval, self.notifier.watchdog_interval)
        next_refresh = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, min(tick, next_refresh - time.monotonic())))
            if time.monotonic() >= next_refresh:
                try:
                    await self.refresh()
                except Exception:  # a bug here must not stop /health and /metrics
                    self.log.exception("refresh failed")
                next_refresh = time.monotonic() + interval
            self.notifier.watchdog()

    def reload(self) -> None:
        """SIGHUP: take the new instance list; listen address and ports need a restart."""
        try:
            cfg = config_mod.load(self.cfg.path)
        except config_mod.ConfigError as exc:
            self.log.error("reload rejected, keeping the running config: %s", exc)
            return
        if (cfg.aggregator.listen, cfg.aggregator.health_port, cfg.aggregator.metrics_port) != (
                self.cfg.aggregator.listen, self.cfg.aggregator.health_port,
                self.cfg.aggregator.metrics_port):
            self.log.warning("reload: listen address/ports changed; restart to apply them")
        self.cfg = cfg
        self.sampler.instances = dict(cfg.instances)
        self.log.info("reload: %d instances", len(cfg.instances))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start_http()
        except OSError as exc:
            self.log.critical("cannot listen: %s", exc)
            await self.stop_http()
            return 1
        await self.refresh()
        self.notifier.ready(self.status_line(self.last_health))
        self.log.info("ready: %s; %s", self.status_line(self.last_health),
                      self.sampler.systemd.error or "systemd unit states available")
        tasks = [asyncio.ensure_future(self.supervise()),
                 asyncio.ensure_future(self.loop_lag.run())]
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        self.notifier.stopping()
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        await self.stop_http()
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception():
                self.log.critical("fatal: %r", task.exception())
                return 1
        self.log.info("stopped cleanly")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-aggregator",
                                     description="Serve /health and /metrics for marketprism.")
    parser.add_argument("--config", help=f"config file (default ${config_mod.ENV_PATH} or "
                                         f"{config_mod.DEFAULT_PATH})")
    args = parser.parse_args(argv)
    log = setup_logging("aggregator")
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return config_mod.EX_CONFIG
    set_log_level(cfg.service.log_level)
    set_process_name("aggregator", "all")
    return asyncio.run(Aggregator(cfg, log).run())


if __name__ == "__main__":
    sys.exit(main())
