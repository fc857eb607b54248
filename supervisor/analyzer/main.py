"""``marketprism-analyzer INSTANCE``: analysis and data-quality checks of one instance's data.

Lifecycle, as systemd sees it (``Type=notify``, ``NotifyAccess=main``):

- configuration errors (bad settings, a plug-in spec naming nothing, the analyzer disabled
  for the instance) exit 78 (EX_CONFIG) before anything else;
- ``READY=1`` once attached (ring, or ZeroMQ when the ring segment is absent) and caught
  up: a read found nothing more to read, i.e. the lag was 0 at least once;
- ``WATCHDOG=1`` from the processing loop itself. The loop is plain synchronous code: it
  blocks in the ring's futex wait (or ``zmq_poll``) for at most a quarter of the watchdog
  timeout, then processes, commits and pings. No thread hop per batch (``to_thread`` costs
  more than a batch of small records takes), and a plug-in that hangs stops the pings, which
  is exactly what must make systemd kill and restart the analyzer;
- ``SIGTERM``: ``STOPPING=1``, commit, close the plug-in, exit 0.

Exactly-once: a batch is read, processed (built-in analysis, then the plug-in), then the
ring cursor is committed; a crash anywhere re-delivers the uncommitted batch after the
restart, and the plug-in's ``on_start(last_committed_seq)`` rolls its output back to the
commit (see :mod:`supervisor.analyzer.plugins`).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import re
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil
import zmq

from supervisor import config as config_mod
from supervisor.analyzer.engine import Engine
from supervisor.analyzer.output import ResultPublisher, stats_doc, status_line
from supervisor.analyzer.plugins import (
    DEGRADED,
    HangWatch,
    Plugin,
    PluginContext,
    PluginRunner,
    PluginSpecError,
    load_plugin,
)
from supervisor.analyzer.settings import Settings, parse_settings
from supervisor.analyzer.source import RingSource, SnapshotClient, ZmqSource
from supervisor.service import (
    Notifier,
    resource_report,
    set_log_level,
    set_process_name,
    setup_logging,
)
from supervisor.statsblock import StatsBlockError, StatsWriter, read_block

if TYPE_CHECKING:  # imported lazily: nats-py is only needed with source = "jetstream"
    from supervisor.analyzer.jetstream_source import JetStreamSource

    Source = RingSource | ZmqSource | JetStreamSource

STATS_CAPACITY = 256 * 1024
_READER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")


class Analyzer:
    """One instance's analyzer: source -> engine -> plug-in -> commit, in one loop."""

    def __init__(self, cfg: config_mod.Config, inst: config_mod.InstanceConfig,
                 settings: Settings, plugin: Plugin | None, log: logging.Logger) -> None:
        self.cfg = cfg
        self.inst = inst
        self.settings = settings
        self.log = log
        self.notifier = Notifier()
        self.runner = PluginRunner(plugin, inst.name, log)
        self.ctx = zmq.Context()
        self.snap: SnapshotClient | None = None
        if inst.zmq_snapshot:
            self.snap = SnapshotClient(self.ctx, inst.zmq_snapshot, settings.snapshot_timeout,
                                       log)
        self.engine = Engine(inst.name, settings, log,
                             request_seed=self.snap.request if self.snap else None)
        self.publisher = ResultPublisher(self.ctx, inst.analyzer.zmq_pub, inst.name,
                                         settings.publish_interval)
        self.source: Source | None = None
        self._initial_seeds: list[str] = []  # ZeroMQ mode: books to request once subscribed
        self.stopping = False
        self.started = time.time()
        self.batches = 0
        self.memory_soft_exceeded = 0
        self._ticks = 0
        self._proc = psutil.Process()
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._block_name = f"{inst.name}.analyzer"
        self._report_previous_run()
        self.stats_block = StatsWriter(self._block_name, capacity=STATS_CAPACITY)

    # ----- start ----------------------------------------------------------------------------
    def _report_previous_run(self) -> None:
        """Say so when the previous analyzer died without a clean stop (crash, kill, OOM)."""
        try:
            doc, _, pid = read_block(self._block_name)
        except StatsBlockError:
            return
        if doc.get("state") != "stopped" and pid != os.getpid() and not psutil.pid_exists(pid):
            self.log.warning("the previous analyzer (pid %d) ended without a clean stop "
                             "(crash, abort, kill or OOM); it had committed up to ring seq "
                             "%s and was at %s; resuming from the commit", pid,
                             doc.get("committed_seq"), doc.get("status"))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.log.info("SIGHUP: nothing to reload (restart the unit to apply changes)")
            return
        self.stopping = True

    def _attach(self) -> Source | None:
        """The ring if its segment exists (or must), else ZeroMQ; waits for a late ring."""
        import shm

        inst, source = self.inst, self.settings.source
        if source == "jetstream":
            from supervisor.analyzer.jetstream_source import JetStreamSource

            assert inst.nats is not None  # load() checked it
            self.log.info("consuming stream %s from %s (durable consumer %r)",
                          inst.nats.stream, ",".join(inst.nats.servers), inst.nats.consumer)
            return JetStreamSource(inst.name, inst.nats, inst.analyzer.batch, self.log,
                                   on_lost=self.engine.note_lost)
        warned = False
        # "auto" gives a collector started alongside (foreground mode, a restart) time to
        # create the ring before settling for ZeroMQ, which has no durable cursor.
        zmq_after = time.monotonic() + self.settings.ring_wait
        while not self.stopping:
            if source != "zmq":
                try:
                    ring = RingSource(inst.ring, inst.analyzer.reader, inst.analyzer.batch,
                                      self.settings.wake_coalesce, self.settings.ring_spin)
                    self.log.info("attached to ring %s as reader %r; resuming after seq %d",
                                  inst.ring, inst.analyzer.reader, ring.committed_seq)
                    return ring
                except shm.RingNotFound:
                    pass
            if source == "zmq" or (source == "auto" and inst.zmq_pub
                                   and time.monotonic() >= zmq_after):
                self.log.info("ring %s absent: consuming %s over ZeroMQ (no durable cursor)",
                              inst.ring, inst.zmq_pub)
                zsrc = ZmqSource(self.ctx, inst.name, inst.zmq_pub, inst.analyzer.batch,
                                 self.engine.note_lost, self.log)
                if self.snap is not None:
                    zsrc.register(self.snap.sock)
                    if "books" in inst.channels:
                        # Hold deltas from now on; ask for the books once the first document
                        # proved the subscription live (a snapshot taken before that could
                        # miss deltas the slow-joining SUB never sees).
                        for symbol in inst.symbols:
                            self.engine.slot(symbol).seeding = True
                        self._initial_seeds = list(inst.symbols)
                return zsrc
            if not warned:
                self.log.warning("ring %s does not exist yet (collector not started?); "
                                 "waiting for it%s", inst.ring,
                                 f" up to {self.settings.ring_wait:g}s before using ZeroMQ"
                                 if source == "auto" and inst.zmq_pub else "")
                self.notifier.status(f"waiting for ring {inst.ring}")
                warned = True
            self.notifier.watchdog()
            time.sleep(min(0.5, self.notifier.watchdog_interval / 2))
        return None

    # ----- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.source = src = self._attach()
            if src is None:
                return self._stop()
            ctx = PluginContext(self.inst.name, self.settings.plugin_options,
                                self.cfg.service.state_dir, src.mode,
                                logging.getLogger(f"marketprism.plugin.{self.inst.name}"))
            self.runner.start(ctx, src.committed_seq)
            hang: HangWatch | None = None
            if self.runner.active:
                self.engine.plugin_kinds = self.runner.plugin.kinds  # type: ignore[union-attr]
                hang = HangWatch(self.runner, self.settings.plugin_timeout
                                 or self.notifier.watchdog_interval, self.log)
                hang.start()
            self.engine.quality.expect(self.inst.symbols, time.time_ns())
            # Published before the first batch: a crash at any point is visible to the
            # next start (and to the aggregator) as a block not marked "stopped".
            self._publish_stats(self.status(src.lag()), src.lag())
            try:
                self._loop(src)
            finally:
                if hang is not None:
                    hang.stop()
            return self._stop()
        except Exception as exc:
            self.log.critical("fatal: %s: %s; %s", type(exc).__name__, exc,
                              resource_report(self.cfg.service.state_dir), exc_info=exc)
            self.notifier.stopping(f"failed: {exc}")
            self._close("failed")
            return 1

    def _loop(self, src: Source) -> None:
        engine, runner, publisher, snap = self.engine, self.runner, self.publisher, self.snap
        interval = self.notifier.watchdog_interval
        timeout = min(0.25, interval / 2)
        # Ring batches and binary JetStream batches share the shm.Batch shape.
        is_ring = src.mode == "ring" or (src.mode == "jetstream" and src.binary)
        next_tick = next_ping = next_stats = 0.0
        while not self.stopping:
            got = src.poll(timeout)
            if got is not None:
                if is_ring:
                    engine.process_batch(got)  # type: ignore[arg-type]
                else:
                    engine.process_docs(got)  # type: ignore[arg-type]
                if engine.plugin_events:
                    events, seqs = engine.take_plugin_batch()
                    results = runner.run(events, seqs)
                    if results:
                        publisher.publish_plugin(results, runner.plugin.name)  # type: ignore[union-attr]
                src.commit()
                self.batches += 1
                if self._initial_seeds and snap is not None:
                    for symbol in self._initial_seeds:
                        snap.request(symbol)
                    self._initial_seeds = []
            publisher.publish_due(engine)
            now = time.monotonic()
            if now < next_tick:
                continue
            next_tick = now + timeout / 2
            if snap is not None:
                for doc in snap.replies():
                    snap.handle(doc, engine.seed, engine.seed_failed)
                snap.tick()
            if not self.notifier.ready_sent and src.caught_up:
                status = self.status(src.lag())
                self.notifier.ready(status)
                self.log.info("ready: %s", status)
            if now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + interval
            if now >= next_stats:
                next_stats = now + 1.0
                self._every_second(src)

    def _every_second(self, src: Source) -> None:
        now = time.monotonic()
        t0, n0 = self._rate_mark
        if now > t0:
            self._rate = (self.engine.events - n0) / (now - t0)
        self._rate_mark = (now, self.engine.events)
        q = self.engine.quality
        lag = src.lag()
        # Staleness is judged on the wall clock once caught up, else on the data's clock.
        q.check_stale(time.time_ns() if src.caught_up and lag == 0 else self.engine.ts_max)
        q.check_alignment()
        q.flush_logs()
        self._ticks += 1
        if self._ticks % 5 == 0:
            self._check_memory()
        status = self.status(lag)
        self.notifier.status(status)
        self._publish_stats(status, lag)

    def _check_memory(self) -> None:
        """Above the soft limit: say what the process holds (the hard limit is MemoryMax=)."""
        rss = self._proc.memory_info().rss
        if rss <= self.settings.memory_soft_mb << 20:
            return
        self.memory_soft_exceeded += 1
        e = self.engine
        levels = sum(a.book.level_count() for a in e.symbols.values())
        buckets = sum(len(a.trades.starts) for a in e.symbols.values())
        pending = sum(len(a.pending) for a in e.symbols.values())
        self.log.warning("memory above soft limit: rss=%.1fMiB soft=%dMiB symbols=%d "
                         "book_levels=%d trade_buckets=%d held_deltas=%d plugin_batch=%d",
                         rss / 2**20, self.settings.memory_soft_mb, len(e.symbols), levels,
                         buckets, pending, len(e.plugin_events))

    def status(self, lag: int | None = None) -> str:
        e = self.engine
        state = self.runner.state
        if state == DEGRADED:
            state = "degraded"
        return status_line(self.source.mode if self.source else "ring", lag, self._rate,
                           e.overruns + e.sequence_gaps, state, sum(e.quality.totals.values()))

    def _publish_stats(self, status: str, lag: int | None, state: str = "running") -> None:
        src = self.source
        mem = self._proc.memory_info()
        cpu = self._proc.cpu_times()
        extra = {"state": state, "pid": os.getpid(), "rss": mem.rss,
                 "cpu_seconds": cpu.user + cpu.system, "ring": self.inst.ring,
                 "reader": self.inst.analyzer.reader,
                 "memory_soft": self.settings.memory_soft_mb << 20,
                 "memory_soft_exceeded": self.memory_soft_exceeded,
                 "snapshot_requests": self.snap.requests if self.snap else 0}
        if isinstance(src, ZmqSource):
            extra["malformed"] = src.malformed + self.engine.malformed
        kwargs = dict(instance=self.inst.name, mode=src.mode if src else "none", status=status,
                      ready=self.notifier.ready_sent and state == "running",
                      started=self.started, lag=lag,
                      committed_seq=src.committed_seq if src else None, rate=self._rate,
                      batches=self.batches, plugin=self.runner.stats(),
                      publisher=self.publisher, extra=extra)
        try:
            self.stats_block.publish(stats_doc(self.engine, **kwargs))
        except Exception:  # too large with per-symbol analysis: keep the counters
            self.stats_block.publish(stats_doc(self.engine, analysis=False, **kwargs))

    # ----- stop -------------------------------------------------------------------------------
    def _stop(self) -> int:
        self.notifier.stopping()
        if self.source is not None:
            self.source.commit()
            self.log.info("stopping: committed up to ring seq %s",
                          self.source.committed_seq)
        self.runner.stop()
        self._close("stopped")
        self.log.info("stopped cleanly")
        return 0

    def _close(self, state: str) -> None:
        try:
            lag = self.source.lag() if self.source is not None else None
            self._publish_stats(state, lag, state=state)
        except Exception as exc:
            self.log.error("final stats not published: %s", exc)
        finally:
            self.stats_block.close()
            if self.source is not None:
                self.source.close()
            if self.snap is not None:
                self.snap.close()
            self.publisher.close()
            self.ctx.term()


def load(instance: str, path: str | None) -> tuple[config_mod.Config,
                                                 config_mod.InstanceConfig, Settings]:
    """Load and validate everything the analyzer needs; raises ConfigError (exit 78)."""
    cfg = config_mod.load(path)
    inst = cfg.instance(instance)
    prefix = f"instances.{inst.name}.analyzer"
    if not inst.analyzer.enabled:
        raise config_mod.ConfigError(cfg.path, f"{prefix}.enabled",
                                     "the analyzer is disabled for this instance")
    if not _READER_NAME.match(inst.analyzer.reader):
        raise config_mod.ConfigError(cfg.path, f"{prefix}.reader",
                                     "reader names are 1-31 characters of [A-Za-z0-9_.-]")
    settings = parse_settings(inst.analyzer.settings, cfg.path, f"{prefix}.settings")
    if settings.source == "zmq" and not inst.zmq_pub:
        raise config_mod.ConfigError(cfg.path, f"{prefix}.settings.source",
                                     "source is zmq but the instance has no zmq_pub")
    if settings.source == "jetstream" and (inst.nats is None or not inst.nats.enabled):
        raise config_mod.ConfigError(cfg.path, f"{prefix}.settings.source",
                                     "source is jetstream but the instance has no enabled "
                                     "[nats] table")
    return cfg, inst, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-analyzer",
                                     description="Analyse one instance's market data.")
    parser.add_argument("instance", help="instance name from the config, e.g. okx_spot")
    parser.add_argument("--config", help=f"config file (default ${config_mod.ENV_PATH} or "
                                         f"{config_mod.DEFAULT_PATH})")
    args = parser.parse_args(argv)
    log = setup_logging(f"analyzer[{args.instance}]")
    try:
        cfg, inst, settings = load(args.instance, args.config)
        plugin_error: Exception | None = None
        try:
            plugin = load_plugin(inst.analyzer.plugin)
        except PluginSpecError as exc:
            raise config_mod.ConfigError(cfg.path, f"instances.{inst.name}.analyzer.plugin",
                                         str(exc)) from None
        except Exception as exc:  # the module exists but failed to import: run degraded
            plugin, plugin_error = None, exc
    except config_mod.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return config_mod.EX_CONFIG
    set_log_level(cfg.service.log_level)
    set_process_name("analyzer", inst.name)
    # Aborts and segfaults (a plug-in's native code) print the Python stack to the journal.
    faulthandler.enable()
    try:
        analyzer = Analyzer(cfg, inst, settings, plugin, log)
    except (OSError, zmq.ZMQError) as exc:
        log.critical("cannot start: %s; %s", exc, resource_report(cfg.service.state_dir))
        return 1
    if plugin_error is not None:
        analyzer.runner.plugin = Plugin(inst.analyzer.plugin, lambda batch: None)
        analyzer.runner.degrade(f"import failed: {type(plugin_error).__name__}: "
                                f"{plugin_error}", plugin_error)
    return analyzer.run()


if __name__ == "__main__":
    sys.exit(main())
