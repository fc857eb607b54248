"""The soak's fault schedule: seeded, so a failing run can be replayed fault for fault.

:func:`make_plan` turns a seed and a run length into a sorted list of :class:`Action`:

- **network faults** through the replay exchange, one every ``net_every`` seconds on
  average (exponential gaps): disconnects, dropped book updates (sequence gaps), bad OKX
  checksums and sequence resets, malformed frames (not JSON / fields missing), short
  stalls, and on Binance (the venue whose books resync over REST) slow snapshots, failed
  snapshots and 429s, each followed by a drop so that a snapshot is actually requested;
- **process faults**, one every ``proc_every`` seconds on average: ``kill -9`` of a
  collector or analyzer, ``SIGSTOP`` shorter than ``WatchdogSec`` (then ``SIGCONT``) and
  ``SIGSTOP`` held until systemd's watchdog kills the process. The first ones cover every
  (kind, role) pair once, in a seeded order (so a run long enough for six process faults
  always stops an analyzer past its watchdog, which a ring smaller than that stop laps);
  after that, kinds are drawn by weight.

Process faults spare the ``witnesses`` instances (collector and analyzer), so that some
processes live through the whole run under network faults and their memory and descriptor
growth can be judged; they never hit one unit twice within ``unit_spacing`` seconds, which
keeps every unit far below the units' start limit (10 starts in 300 s).

The plan opens with a **conditioning** round inside the warm-up (until ``condition_until``):
every fault path the random part will take runs once at its largest size, on every
instance and symbol (the longest stall and slow snapshot, a short SIGSTOP of the longest
planned length on every unit that may get one). A Python process keeps the high-water mark
of its heap, so a baseline taken before, say, the first 8 s of buffered deltas behind a slow
snapshot would later show that one-off step as growth; after conditioning, growth is what
the run adds on top of every path's worst case, which a leak does and a bounded buffer does
not.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Network fault kinds: (weight, exchanges it applies to; empty = all).
NET_KINDS: dict[str, tuple[int, tuple[str, ...]]] = {
    "disconnect": (3, ()),
    "drop": (6, ()),
    "bad_checksum": (3, ("okx",)),
    "reset": (2, ("okx",)),
    "malformed": (3, ()),
    "stall": (1, ()),
    "slow_snapshot": (2, ("binance",)),
    "fail_snapshot": (1, ("binance",)),
    "rate_limit": (1, ("binance",)),
}
# REST faults only fire when the collector makes a request: a drop right after forces one.
NEEDS_RESYNC = ("slow_snapshot", "fail_snapshot", "rate_limit")
PROC_KINDS: dict[str, int] = {"kill9": 2, "stop_short": 2, "stop_long": 1}
ROLES = ("collector", "analyzer")


@dataclass(frozen=True)
class Action:
    """One scheduled fault. ``at`` is seconds after the faults start."""

    at: float
    kind: str  # a replay fault kind, or kill9 / stop_short / stop_long
    instance: str
    symbol: str = ""  # network faults
    role: str = ""  # process faults: collector | analyzer
    params: dict[str, Any] = field(default_factory=dict)  # seconds, mode

    @property
    def is_process(self) -> bool:
        return self.kind in PROC_KINDS

    @property
    def unit(self) -> str:
        return f"{self.role}@{self.instance}.service" if self.role else ""

    def describe(self) -> str:
        what = self.unit or f"{self.instance} {self.symbol}"
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {what}" + (f" {extra}" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {"planned": round(self.at, 3), "kind": self.kind, "instance": self.instance,
                "symbol": self.symbol, "role": self.role, "params": dict(self.params)}


@dataclass(frozen=True)
class PlanConfig:
    seconds: float  # length of the fault phase
    seed: int
    net_every: float = 3.0  # mean seconds between network faults
    proc_every: float = 45.0  # mean seconds between process faults
    witnesses: int = 2  # instances spared by process faults
    unit_spacing: float = 100.0  # min seconds between process faults on one unit
    watchdog_sec: float = 30.0  # the units' WatchdogSec
    short_stop: tuple[float, float] = (3.0, 15.0)  # SIGSTOP well under WatchdogSec
    quiet_start: float = 5.0  # no fault in the first seconds
    condition_until: float = 0.0  # end of the conditioning round (0: none)
    stall_seconds: tuple[float, float] = (1.0, 4.0)
    slow_snapshot_seconds: tuple[float, float] = (2.0, 8.0)
    retry_after_seconds: tuple[float, float] = (1.0, 3.0)


def choose_witnesses(instances: Sequence[str], n: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:witnesses")
    return sorted(rng.sample(sorted(instances), min(n, len(instances))))


def make_plan(cfg: PlanConfig, instances: Mapping[str, tuple[str, Sequence[str]]]
              ) -> list[Action]:
    """The schedule for ``instances`` (name -> (exchange, symbols)), sorted by time.

    The same ``cfg`` and instances always give the same plan.
    """
    rng = random.Random(cfg.seed)
    names = sorted(instances)
    spared = set(choose_witnesses(names, cfg.witnesses, cfg.seed))
    victims = [(role, n) for n in names if n not in spared for role in ROLES]
    plan, free_at = conditioning(cfg, instances, victims)
    start = max(cfg.quiet_start, cfg.condition_until)

    # network faults
    t = start
    kinds = sorted(NET_KINDS)
    weights = [NET_KINDS[k][0] for k in kinds]
    while True:
        t += rng.expovariate(1.0 / cfg.net_every)
        if t >= cfg.seconds:
            break
        kind = rng.choices(kinds, weights)[0]
        allowed = NET_KINDS[kind][1]
        targets = [n for n in names if not allowed or instances[n][0] in allowed]
        inst = rng.choice(targets)
        symbol = rng.choice(sorted(instances[inst][1]))
        params: dict[str, Any] = {}
        if kind == "malformed":
            params["mode"] = rng.choice(("json", "fields"))
        elif kind == "stall":
            params["seconds"] = round(rng.uniform(*cfg.stall_seconds), 1)
        elif kind == "slow_snapshot":
            params["seconds"] = round(rng.uniform(*cfg.slow_snapshot_seconds), 1)
        elif kind == "rate_limit":
            params["seconds"] = round(rng.uniform(*cfg.retry_after_seconds), 1)
        plan.append(Action(t, kind, inst, symbol, params=params))
        if kind in NEEDS_RESYNC:
            plan.append(Action(t + 0.3, "drop", inst, symbol))

    # process faults
    if victims:
        pkinds = sorted(PROC_KINDS)
        pweights = [PROC_KINDS[k] for k in pkinds]
        todo = [(k, r) for k in pkinds for r in ROLES]
        rng.shuffle(todo)
        t = start
        while True:
            t += rng.expovariate(1.0 / cfg.proc_every)
            if t >= cfg.seconds:
                break
            ready = [v for v in victims if free_at[v] <= t]
            if not ready:
                continue
            if todo:  # every (kind, role) once before the weighted draw takes over
                kind, role = todo[0]
                ready = [v for v in ready if v[0] == role]
                if not ready:
                    continue
                todo.pop(0)
            else:
                kind = rng.choices(pkinds, pweights)[0]
            role, inst = rng.choice(ready)
            params = {}
            if kind == "stop_short":
                params["seconds"] = round(rng.uniform(*cfg.short_stop), 1)
            free_at[(role, inst)] = t + cfg.unit_spacing
            plan.append(Action(t, kind, inst, role=role, params=params))
    plan.sort(key=lambda a: a.at)
    return plan


def conditioning(cfg: PlanConfig, instances: Mapping[str, tuple[str, Sequence[str]]],
                 victims: Sequence[tuple[str, str]]
                 ) -> tuple[list[Action], dict[tuple[str, str], float]]:
    """The conditioning round, spread evenly over [quiet_start, condition_until), and when
    each victim unit is free for the random process faults."""
    free_at = {v: 0.0 for v in victims}
    if cfg.condition_until <= cfg.quiet_start:
        return [], free_at
    Step = tuple[str, str, str, str, dict[str, Any]]  # kind, instance, symbol, role, params
    per_instance: list[list[Step]] = []
    for inst in sorted(instances):
        exchange, symbols = instances[inst]
        syms = sorted(symbols)
        # Stops first: a unit stopped for the longest planned time is back well before the
        # baseline.
        mine: list[Step] = [("stop_short", inst, "", role, {"seconds": cfg.short_stop[1]})
                            for role, victim in victims if victim == inst]
        mine += [("disconnect", inst, syms[0], "", {}),
                            ("stall", inst, syms[-1], "", {"seconds": cfg.stall_seconds[1]}),
                            ("malformed", inst, syms[0], "", {"mode": "json"}),
                            ("malformed", inst, syms[-1], "", {"mode": "fields"})]
        mine += [("drop", inst, sym, "", {}) for sym in syms]
        if exchange == "okx":
            mine += [(kind, inst, sym, "", {}) for kind in ("bad_checksum", "reset")
                     for sym in syms]
        if exchange == "binance":  # symbol by symbol, so one's REST faults do not overlap
            mine += [(kind, inst, sym, "", params) for kind, params in (
                ("slow_snapshot", {"seconds": cfg.slow_snapshot_seconds[1]}),
                ("fail_snapshot", {}), ("rate_limit", {"seconds": cfg.retry_after_seconds[1]}))
                for sym in syms]
        per_instance.append(mine)
    # Round robin over the instances: one instance's steps are several seconds apart.
    steps = [lst[i] for i in range(max(map(len, per_instance))) for lst in per_instance
             if i < len(lst)]
    span = cfg.condition_until - cfg.quiet_start
    # REST faults and their drops need a few seconds each to play out: spread every step.
    plan: list[Action] = []
    for k, (kind, inst, sym, role, params) in enumerate(steps):
        at = cfg.quiet_start + span * k / len(steps)
        plan.append(Action(at, kind, inst, sym, role, params))
        if kind in NEEDS_RESYNC:
            plan.append(Action(at + 0.3, "drop", inst, sym))
        if role:
            free_at[(role, inst)] = at + float(params["seconds"]) + 30.0
    return plan, free_at


def summary(plan: Sequence[Action]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in plan:
        out[a.kind] = out.get(a.kind, 0) + 1
    return dict(sorted(out.items()))


__all__ = ["Action", "PlanConfig", "make_plan", "choose_witnesses", "conditioning", "summary",
           "NET_KINDS", "PROC_KINDS"]
