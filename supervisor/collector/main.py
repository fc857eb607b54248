"""``marketprism-collector INSTANCE``: one venue instance as a systemd-native daemon.

Lifecycle, as systemd sees it (``Type=notify``, ``NotifyAccess=main``):

- config errors exit 78 (EX_CONFIG) before anything else; the unit does not restart on it;
- ``READY=1`` once the WebSocket is up and every configured book has synced once
  (``EXTEND_TIMEOUT_USEC=`` while REST snapshots are still in flight);
- ``WATCHDOG=1`` from the event loop itself, only while its lag is under ``max_loop_lag``
  and data arrived within ``stale_after``: a blocked loop or a dead feed starves the
  watchdog and systemd restarts the process;
- ``SIGTERM``: ``STOPPING=1``, close the socket, mark the ring writer stopped, exit 0;
  ``SIGHUP``: re-read the config and apply a changed symbol list in place.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

import psutil
import zmq
import zmq.asyncio

from supervisor import config as config_mod
from supervisor.collector.publisher import Publisher
from supervisor.collector.snapshots import serve_snapshots
from supervisor.events import GAP_RESTART, Gap
from supervisor.exchanges import feed_class
from supervisor.exchanges.base import Feed
from supervisor.service import (
    LoopLag,
    Notifier,
    resource_report,
    set_log_level,
    set_process_name,
    setup_logging,
)
from supervisor.statsblock import StatsWriter

PUB_HWM = 100_000  # messages queued per slow subscriber before drops are counted
REALTIME_POLICIES = (os.SCHED_FIFO, os.SCHED_RR)  # libzmq I/O threads inherit these as they are


def open_ring(name: str, capacity: int) -> Any:
    """Create or re-attach the instance's ring as its writer."""
    import shm

    return shm.RingWriter(name, capacity=capacity)


class Collector:
    """Wires one adapter to the ring, ZeroMQ, the stats block and systemd."""

    def __init__(self, cfg: config_mod.Config, inst: config_mod.InstanceConfig,
                 log: logging.Logger) -> None:
        self.cfg = cfg
        self.inst = inst
        self.log = log
        self.notifier = Notifier()
        self.loop_lag = LoopLag()
        self.ring = open_ring(inst.ring, inst.ring_capacity)
        self._zctx = zmq.Context()
        # libzmq's I/O thread shares the collector's core. At the default policy every
        # message handed to it wakes it, and the wakeup preempts the event loop: a context
        # switch per event (with a subscriber, ~25k instead of ~50k+ msg/s on one core).
        # SCHED_BATCH (no wakeup preemption, the same fair share; allowed by the unit's
        # RestrictRealtime=) lets it drain whole bursts when the loop yields.
        # Not under a realtime policy (CPUSchedulingPolicy=fifo|rr): libzmq keeps the
        # process's priority, which SCHED_BATCH refuses (EINVAL), and aborts. Setting
        # ZMQ_THREAD_PRIORITY instead makes it renice the thread: EPERM, abort, unprivileged.
        if (hasattr(zmq, "THREAD_SCHED_POLICY") and hasattr(os, "SCHED_BATCH")
                and os.sched_getscheduler(0) not in REALTIME_POLICIES):
            self._zctx.set(zmq.THREAD_SCHED_POLICY, os.SCHED_BATCH)
        self._actx = zmq.asyncio.Context()
        self.pub: zmq.Socket | None = None
        if inst.zmq_pub:
            # XPUB: a PUB that also tells us its subscriptions, so the publisher skips
            # building documents nobody receives (supervisor/collector/publisher.py).
            self.pub = self._zctx.socket(zmq.XPUB)
            self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
            self.pub.setsockopt(zmq.LINGER, 0)
            self.pub.bind(inst.zmq_pub)
        self.router: zmq.asyncio.Socket | None = None
        if inst.zmq_snapshot:
            self.router = self._actx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.bind(inst.zmq_snapshot)
        self.publisher = Publisher(inst.name, self.ring, self.pub)
        self.feed: Feed = feed_class(inst.exchange, inst.market)(
            inst.feed_config(), self.publisher, logging.getLogger(f"marketprism.{inst.name}"))
        self.stats_block = StatsWriter(inst.name)
        self.started = time.time()
        self.memory_soft_exceeded = 0
        self._proc = psutil.Process()
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._starving = ""

    # ----- health -------------------------------------------------------------------------
    def books(self) -> tuple[int, int]:
        return self.feed.books_synced()

    def is_ready(self) -> bool:
        st = self.feed.stats
        if not st.connected:
            return False
        synced, total = self.books()
        return synced == total if total else st.messages > 0

    def health_problem(self) -> str:
        """Why the watchdog must not be fed now ("" when healthy)."""
        lag = self.loop_lag.current()
        if lag > self.inst.max_loop_lag:
            return f"event loop lag {lag:.2f}s > {self.inst.max_loop_lag:g}s"
        last = self.feed.stats.last_message_mono
        age = (time.monotonic_ns() - last) / 1e9 if last else time.time() - self.started
        if age > self.inst.stale_after:
            return f"no data for {age:.0f}s > stale_after {self.inst.stale_after:g}s"
        return ""

    def status_line(self) -> str:
        synced, total = self.books()
        resyncs = sum(self.feed.stats.resyncs.values())
        state = "" if self.feed.stats.connected else "disconnected, "
        books = f"{synced}/{total} books synced, " if total else ""
        return f"{state}{books}{self._rate:,.0f} msg/s, {resyncs} resyncs"

    def _update_rate(self) -> None:
        now = time.monotonic()
        t0, n0 = self._rate_mark
        n = self.feed.stats.messages
        if now - t0 >= 1.0:
            self._rate = (n - n0) / (now - t0)
            self._rate_mark = (now, n)

    def stats_doc(self) -> dict[str, Any]:
        st = self.feed.stats
        synced, total = self.books()
        mem = self._proc.memory_info()
        cpu = self._proc.cpu_times()
        last = st.last_message_mono
        doc: dict[str, Any] = {
            "role": "collector", "instance": self.inst.name, "exchange": self.inst.exchange,
            "market": self.inst.market, "pid": os.getpid(), "started": self.started,
            "status": self.status_line(), "ready": self.notifier.ready_sent or self.is_ready(),
            "connected": st.connected, "books_synced": synced, "books_total": total,
            "messages": st.messages, "bytes": st.bytes, "events": dict(st.events),
            "resyncs": dict(st.resyncs), "reconnects": st.reconnects,
            "malformed": st.malformed, "rest_errors": st.rest_errors,
            "rate_limited": st.rate_limited, "subscribe_errors": st.subscribe_errors,
            "last_message_age": (time.monotonic_ns() - last) / 1e9 if last else None,
            "message_rate": self._rate, "loop_lag": self.loop_lag.lag,
            "loop_lag_max": self.loop_lag.max_lag, "rss": mem.rss,
            "cpu_seconds": cpu.user + cpu.system, "memory_soft": self.inst.memory_soft_mb << 20,
            "memory_hard": self.inst.memory_hard_mb << 20,
            "memory_soft_exceeded": self.memory_soft_exceeded,
            "book_levels": {s: len(b.bids) + len(b.asks) for s, b in self.feed.books.items()},
            "ring": self.inst.ring, "symbols": list(self.feed.symbols),
        }
        doc.update(self.publisher.stats())
        return doc

    def check_memory(self) -> None:
        rss = self._proc.memory_info().rss
        if rss > self.inst.memory_soft_mb << 20:
            self.memory_soft_exceeded += 1
            levels = sum(len(b.bids) + len(b.asks) for b in self.feed.books.values())
            self.log.warning(
                "memory above soft limit: rss=%.1fMiB soft=%dMiB hard=%dMiB books=%d "
                "levels=%d tasks=%d snapshots_in_flight=%d", rss / 2**20,
                self.inst.memory_soft_mb, self.inst.memory_hard_mb, len(self.feed.books),
                levels, len(asyncio.all_tasks()), self.feed.snapshots_in_flight)

    # ----- loops ----------------------------------------------------------------------------
    async def supervise(self) -> None:
        """Readiness, watchdog, STATUS, stats block and memory check: one loop on the loop."""
        interval = min(self.notifier.watchdog_interval, 1.0)
        last_stats = last_mem = 0.0
        while True:
            now = time.monotonic()
            self._update_rate()
            self.publisher.poll_subscriptions()
            if not self.notifier.ready_sent:
                if self.is_ready():
                    self.notifier.ready(self.status_line())
                    self.log.info("ready: %s", self.status_line())
                elif self.feed.snapshots_in_flight:
                    self.notifier.extend_timeout(interval * 3 + 10)
            # systemd arms the watchdog at READY=1; pings before it would mean nothing.
            problem = self.health_problem() if self.notifier.ready_sent else "starting"
            if problem == "starting":
                pass
            elif problem:
                if problem.split(" ")[0] != self._starving.split(" ")[0]:
                    self.log.error("not feeding the watchdog: %s", problem)
                self._starving = problem
            else:
                if self._starving:
                    self.log.info("healthy again; feeding the watchdog")
                self._starving = ""
                self.notifier.watchdog()
            self.notifier.status(self.status_line())
            if now - last_stats >= 1.0:
                self.stats_block.publish(self.stats_doc())
                last_stats = now
            if now - last_mem >= 5.0:
                self.check_memory()
                last_mem = now
            await asyncio.sleep(interval)

    async def reload(self) -> None:
        """SIGHUP: apply a new symbol list without dropping unchanged symbols."""
        try:
            new = config_mod.load(self.cfg.path).instance(self.inst.name)
        except config_mod.ConfigError as exc:
            self.log.error("reload rejected, keeping the running config: %s", exc)
            return
        if new.symbols != tuple(self.feed.symbols):
            await self.feed.update_symbols(new.symbols)
        else:
            self.log.info("reload: symbol list unchanged")

    def request_stop(self) -> None:
        """What SIGTERM does: stop cleanly (callable from the loop's thread)."""
        self._stop.set()

    async def run(self, signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP,
                                    lambda: asyncio.ensure_future(self.reload()))
        self.log.info("starting: %s %s symbols=%s ring=%s zmq_pub=%s", self.inst.exchange,
                      self.inst.market, ",".join(self.inst.symbols), self.inst.ring,
                      self.inst.zmq_pub or "-")
        self.publisher.attach(loop)
        self.announce_restart()
        tasks = [asyncio.ensure_future(self.feed.run()), asyncio.ensure_future(self.supervise()),
                 asyncio.ensure_future(self.loop_lag.run())]
        if self.router is not None:
            tasks.append(asyncio.ensure_future(serve_snapshots(
                self.router, self.inst.name, lambda: self.feed.books,
                lambda: self.publisher.ring_seq)))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper]
        self.notifier.stopping()
        for t in [stopper, *tasks]:
            t.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        self.publisher.detach()
        self.close()
        for t in failed:
            exc = t.exception() if not t.cancelled() else None
            self.log.critical("fatal: %s: %r; %s", t.get_coro().__qualname__, exc,
                              resource_report(self.cfg.service.state_dir))
            return 1
        self.log.info("stopped cleanly")
        return 0

    def announce_restart(self) -> None:
        """A ring that already has records had a collector before us: whatever happened on
        the venue between its last record and our first was not collected (trades included,
        which no sequence check would reveal). Say so, per symbol, before any new data."""
        last = self.ring.next_seq - 1
        if last <= 0:
            return
        now, mono = time.time_ns(), time.monotonic_ns()
        detail = (f"collector restarted after ring seq {last}: events while it was down "
                  "were not collected")
        for symbol in self.inst.symbols:
            self.publisher(Gap(symbol, 0, 0, now, mono, GAP_RESTART, detail))
        self.log.warning("ring %s has %d records from a previous run: announced a %s gap "
                         "for %d symbol(s)", self.inst.ring, last, GAP_RESTART,
                         len(self.inst.symbols))

    def close(self) -> None:
        try:
            self.stats_block.publish({**self.stats_doc(), "status": "stopped", "ready": False})
        finally:
            self.stats_block.close()
            self.ring.close()
            for sock in (self.pub, self.router):
                if sock is not None:
                    sock.close(linger=0)
            self._zctx.term()
            self._actx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketprism-collector",
                                     description="Collect one instance's market data.")
    parser.add_argument("instance", help="instance name from the config, e.g. okx_spot")
    parser.add_argument("--config", help=f"config file (default ${config_mod.ENV_PATH} or "
                                         f"{config_mod.DEFAULT_PATH})")
    args = parser.parse_args(argv)
    log = setup_logging(f"collector[{args.instance}]")
    try:
        cfg = config_mod.load(args.config)
        inst = cfg.instance(args.instance)
        feed_class(inst.exchange, inst.market)
    except config_mod.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return config_mod.EX_CONFIG
    set_log_level(cfg.service.log_level)
    set_process_name("collector", inst.name)
    try:
        collector = Collector(cfg, inst, log)
        return asyncio.run(collector.run())
    except Exception as exc:  # noqa: BLE001 - one diagnostic line, then systemd restarts us
        log.critical("fatal: %s: %s; %s", type(exc).__name__, exc,
                     resource_report(cfg.service.state_dir), exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
