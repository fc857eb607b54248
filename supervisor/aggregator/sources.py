"""Everything the aggregator reads, gathered into one immutable :class:`Sample`.

This is the aggregator's only I/O on the data side: it reads each instance's stats blocks
(``<instance>`` from the collector, ``<instance>.analyzer`` from the analyzer,
``<instance>.nats`` from the NATS bridge), checks that
each writer pid is still the process that wrote the block, reads the ring's counters (write
sequence, each durable reader's lag and losses; a read-only mapping that cannot disturb the
ring) and attaches the last unit states from systemd. ``/health`` (:mod:`.health`),
``/metrics`` (:mod:`.metrics`), the textfile and ``marketprism status`` are pure functions of
a :class:`Sample`, so they are tested without shared memory, processes or HTTP.

Nothing here raises for a bad block: a missing, truncated or malformed block becomes a
:class:`BlockRead` with ``error`` set, and the aggregator keeps serving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import psutil

from supervisor import statsblock
from supervisor.aggregator.units import ROLES, SystemdView, UnitState, unit_name
from supervisor.config import InstanceConfig

# Grace for "the pid's process started no later than the block's writer did": the writer
# stamps ``started`` right after it starts, process start times are in clock ticks.
_PID_REUSE_SLACK = 2.0


class BlockRead(NamedTuple):
    """One stats block as read: its document, or why there is none."""

    doc: dict[str, Any] | None  # None when ``error`` is set
    error: str  # "" when the block was read and parsed
    age: float | None  # seconds since the writer last published (None: unknown)
    pid: int  # writer pid from the block header (0: unknown)
    pid_alive: bool  # that pid runs and is the process that wrote the block
    cpu_percent: float | None  # CPU use between the last two refreshes, % of one core

    @property
    def ok(self) -> bool:
        return self.doc is not None


class RingRead(NamedTuple):
    """The instance's ring counters (``shm.RingStats``), or why there are none."""

    stats: Any  # shm.RingStats | None
    error: str


def configured(inst: InstanceConfig, role: str) -> bool:
    """Whether the configuration runs ``role`` for ``inst`` (the collector always)."""
    if role == "analyzer":
        return inst.analyzer.enabled
    if role == "nats-bridge":
        return inst.nats is not None and inst.nats.enabled
    return True


def block_name(role: str, instance: str) -> str:
    """The stats block each role publishes: ``X``, ``X.analyzer``, ``X.nats``."""
    return {"collector": instance, "analyzer": f"{instance}.analyzer",
            "nats-bridge": f"{instance}.nats"}[role]


class InstanceSample(NamedTuple):
    """One configured instance: its config, both blocks, its ring and its units."""

    config: InstanceConfig
    collector: BlockRead
    analyzer: BlockRead | None  # None: the analyzer is disabled in the config
    ring: RingRead
    units: dict[str, UnitState]  # by role (collector, analyzer, nats-bridge); {} without systemd
    bridge: BlockRead | None = None  # the NATS bridge; None: no [instances.X.nats] sink

    def block(self, role: str) -> BlockRead | None:
        """The stats block of ``role`` (None: that role is not configured)."""
        return self.collector if role == "collector" else \
            self.analyzer if role == "analyzer" else self.bridge


class Sample(NamedTuple):
    """Inputs of one /health or /metrics answer."""

    taken: float  # wall clock, epoch seconds
    started: float  # aggregator start, epoch seconds
    mode: str  # "systemd" (PID 1 is systemd) or "foreground"
    systemd: SystemdView
    fresh_after: float  # a block older than this (seconds) is stale
    instances: dict[str, InstanceSample]
    read_errors: dict[tuple[str, str], int]  # (instance, role) -> failed block reads so far


def fresh_limit(interval: float) -> float:
    """Seconds after which a stats block counts as stale.

    Collectors publish once a second and the aggregator looks every ``interval``: three
    missed publishes, or three of our own intervals when those are longer.
    """
    return max(3.0 * interval, 3.0)


def pid_alive(pid: int, started: Any) -> bool:
    """True when ``pid`` runs, is not a zombie, and started no later than the block's writer.

    The start-time check catches a recycled pid: a dead collector's pid reused by an
    unrelated process must not make a stale block look alive. Under the units' sandboxing
    (``ProtectProc=invisible`` with ``PrivateUsers=yes``) another service's ``/proc/<pid>``
    is hidden from us; then ``kill(pid, 0)`` still tells a live process (success or EPERM)
    from a dead one (ESRCH), without the zombie and reuse checks.
    """
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if isinstance(started, int | float) and not isinstance(started, bool):
            return proc.create_time() <= started + _PID_REUSE_SLACK
        return True
    except psutil.NoSuchProcess:
        pass  # gone, or hidden from this process's /proc
    except psutil.AccessDenied:  # visible but not readable: it exists
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(name: str, now_ns: int,
         reader: Callable[[str], tuple[dict[str, Any], int, int]] = statsblock.read_block,
         ) -> BlockRead:
    """Read one block; every failure becomes ``BlockRead.error``."""
    try:
        doc, updated_ns, pid = reader(name)
    except statsblock.StatsBlockError as exc:
        return BlockRead(None, str(exc), None, 0, False, None)
    except (OSError, ValueError) as exc:  # anything else a broken file can throw at us
        return BlockRead(None, f"{statsblock.block_path(name)}: {exc}", None, 0, False, None)
    age = max(0.0, (now_ns - updated_ns) / 1e9) if updated_ns else None
    return BlockRead(doc, "", age, pid, pid_alive(pid, doc.get("started")), None)


def read_ring(name: str) -> RingRead:
    """Ring counters through ``shm.ring_stats`` (a read-only mapping); errors become text."""
    try:
        import shm

        return RingRead(shm.ring_stats(name), "")
    except ImportError as exc:
        return RingRead(None, f"ring stats unavailable: {exc}")
    except Exception as exc:  # noqa: BLE001 - shm.RingError and friends; never crash /health
        return RingRead(None, f"ring {name}: {exc}")


class Sampler:
    """Takes :class:`Sample` s of the configured instances; keeps the little state needed.

    State across samples: the last unit states (refreshed every interval, because forking
    ``systemctl`` per HTTP request would be wasteful), CPU seconds at the last refresh (to
    turn the cumulative ``cpu_seconds`` into a percentage) and failed-read counters.
    """

    def __init__(self, instances: Mapping[str, InstanceConfig], interval: float,
                 mode: str, started: float | None = None,
                 ring_reader: Callable[[str], RingRead] = read_ring) -> None:
        self.ring_reader = ring_reader
        self.instances = dict(instances)
        self.interval = interval
        self.mode = mode
        self.started = time.time() if started is None else started
        self.systemd = SystemdView(mode == "systemd", "" if mode == "systemd" else
                                   "systemd unavailable", {})
        self._cpu_mark: dict[tuple[str, str], tuple[float, float]] = {}  # -> (mono, cpu s)
        self._cpu_percent: dict[tuple[str, str], float] = {}
        self.read_errors: dict[tuple[str, str], int] = {}

    def unit_names(self) -> list[str]:
        """Every unit whose state we want: collector@X, analyzer@X and nats-bridge@X (the
        last two when configured)."""
        return [unit_name(role, inst.name) for inst in self.instances.values()
                for role in ROLES if configured(inst, role)]

    def set_systemd(self, view: SystemdView) -> None:
        self.systemd = view

    def sample(self, refresh: bool = False) -> Sample:
        """Read every block now; ``refresh`` also advances CPU rates and error counters.

        The periodic loop samples with ``refresh=True``; HTTP requests sample without it,
        so scrapes at any rate neither skew CPU percentages nor double-count errors.
        """
        now_ns = time.time_ns()
        mono = time.monotonic()
        out: dict[str, InstanceSample] = {}
        for name, inst in self.instances.items():
            blocks: dict[str, BlockRead | None] = {}
            for role in ROLES:
                if not configured(inst, role):
                    blocks[role] = None
                    continue
                block = read(block_name(role, name), now_ns)
                if refresh:
                    self._account(name, role, block, mono)
                cpu = self._cpu_percent.get((name, role)) if block.ok else None
                blocks[role] = block._replace(cpu_percent=cpu)
            units = {role: self.systemd.units[unit_name(role, name)] for role in ROLES
                     if unit_name(role, name) in self.systemd.units}
            collector = blocks["collector"]
            assert collector is not None
            out[name] = InstanceSample(inst, collector, blocks["analyzer"],
                                       self.ring_reader(inst.ring), units, blocks["nats-bridge"])
        return Sample(now_ns / 1e9, self.started, self.mode, self.systemd,
                      fresh_limit(self.interval), out, dict(self.read_errors))

    def _account(self, name: str, role: str, block: BlockRead, mono: float) -> None:
        key = (name, role)
        if not block.ok:
            self.read_errors[key] = self.read_errors.get(key, 0) + 1
            self._cpu_mark.pop(key, None)
            self._cpu_percent.pop(key, None)
            return
        cpu = (block.doc or {}).get("cpu_seconds")
        if not isinstance(cpu, int | float) or isinstance(cpu, bool):
            return
        mark = self._cpu_mark.get(key)
        self._cpu_mark[key] = (mono, float(cpu))
        if mark is not None and mono > mark[0] and cpu >= mark[1]:
            self._cpu_percent[key] = 100.0 * (cpu - mark[1]) / (mono - mark[0])


__all__ = ["BlockRead", "InstanceSample", "RingRead", "Sample", "Sampler", "fresh_limit",
           "pid_alive", "read", "read_ring"]
