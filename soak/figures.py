"""Figures across a whole soak run, from samples of processes whose counters restart.

Stats blocks and histograms belong to one process: a collector killed at minute 4 starts
its counters again at zero. :class:`Bank` keeps the last document seen for every (block,
pid), so run totals are sums over all the processes an instance had (at most one sample
interval of a killed process is missed). It also keeps each unit's process samples (RSS,
descriptors, CLOSE_WAIT sockets), from which :func:`growth` judges leaks: a process is
judged when it was sampled both after warm-up and in the final quiet window, long enough
apart; each end of the comparison is the median of a few samples, so a transient spike
(a snapshot being parsed, a reconnect in progress) neither hides nor fakes growth.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW = 5  # samples per end of a growth comparison
QUANTILES = (0.5, 0.9, 0.99, 0.999)


# ----- histograms ---------------------------------------------------------------------------
def merge_hist(hists: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Sum histograms of :meth:`supervisor.histogram.Histogram.to_dict` (same bounds)."""
    out: dict[str, Any] | None = None
    for h in hists:
        if not h or not h.get("count"):
            continue
        if out is None:
            out = {"bounds": list(h["bounds"]), "counts": list(h["counts"]), "sum": h["sum"],
                   "count": h["count"]}
            continue
        if list(h["bounds"]) != out["bounds"]:
            raise ValueError("histograms with different bounds cannot be merged")
        out["counts"] = [a + b for a, b in zip(out["counts"], h["counts"], strict=True)]
        out["sum"] += h["sum"]
        out["count"] += h["count"]
    return out


def quantile(hist: dict[str, Any], q: float) -> float | None:
    """Upper bound (s) of the bucket holding quantile ``q``; None above the last bound."""
    rank = q * hist["count"]
    seen = 0
    for bound, n in zip(hist["bounds"], hist["counts"], strict=False):
        seen += n
        if seen >= rank:
            return bound
    return None


def percentiles(hist: dict[str, Any] | None) -> dict[str, Any]:
    if not hist:
        return {"count": 0}
    out: dict[str, Any] = {"count": hist["count"],
                           "mean_ms": round(hist["sum"] / hist["count"] * 1e3, 3)}
    for q in QUANTILES:
        v = quantile(hist, q)
        out[f"p{q * 100:g}_ms"] = None if v is None else round(v * 1e3, 3)
    return out


# ----- per-process banking ------------------------------------------------------------------
@dataclass
class Bank:
    """Accumulates probe samples (see :mod:`soak.probe`)."""

    docs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # block->pid->doc
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # unit -> samples
    states: dict[str, Counter[str]] = field(default_factory=dict)  # unit -> ActiveState seen
    last: dict[str, Any] = field(default_factory=dict)  # the newest sample

    def feed(self, sample: dict[str, Any]) -> None:
        t = sample["t"]
        for name, doc in sample.get("stats", {}).items():
            pid = int(doc.get("pid") or doc.get("writer_pid") or 0)
            self.docs.setdefault(name, {})[pid] = doc
        for unit, props in sample.get("units", {}).items():
            self.states.setdefault(unit, Counter())[props.get("ActiveState", "?")] += 1
        for unit, info in sample.get("procs", {}).items():
            self.series.setdefault(unit, []).append({**info, "t": t})
        self.last = sample

    def totals(self, block: str, key: str) -> Any:
        """Sum of ``key`` over every process of ``block`` (numbers, or dicts of numbers)."""
        values = [d.get(key) for d in self.docs.get(block, {}).values() if d.get(key)]
        if not values:
            return 0
        if isinstance(values[0], dict):
            out: Counter[str] = Counter()
            for v in values:
                out.update({k: n for k, n in v.items() if isinstance(n, int | float)})
            return dict(sorted(out.items()))
        return sum(values)

    def histogram(self, block: str, key: str) -> dict[str, Any] | None:
        return merge_hist(d.get(key) or {} for d in self.docs.get(block, {}).values())

    def pids(self, block: str) -> int:
        return len(self.docs.get(block, {}))


# ----- growth -------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def series(samples: Sequence[dict[str, Any]], start: float) -> list[list[Any]]:
    """Compact time series for the report: [s after start, pid, RSS KiB, fds, CLOSE_WAIT]."""
    return [[round(s["t"] - start, 1), s["pid"], s["rss"] >> 10, s["fds"], s["close_wait"]]
            for s in samples]


def growth(samples: Sequence[dict[str, Any]], baseline_after: float, end_after: float,
           warmup: float, min_span: float, limit_pct: float = 5.0,
           started_before: float | None = None) -> dict[str, Any]:
    """Judge one unit's main process for RSS / descriptor / CLOSE_WAIT growth.

    ``samples`` are the unit's process samples (``t``, ``pid``, ``rss``, ``fds``,
    ``close_wait``, ``started``). The judged process is the one alive at the end, if it
    started before ``started_before`` (the soak: before the conditioning round, see
    :mod:`soak.plan`); its baseline is the first :data:`WINDOW` samples taken after both
    ``baseline_after`` and its own start + ``warmup``; its end is its last :data:`WINDOW`
    samples after ``end_after``. Returns the figures and ``verdict``: ``ok``, ``grew`` or
    ``not judged`` (with ``why``).
    """
    if not samples:
        return {"verdict": "not judged", "why": "never sampled"}
    final = samples[-1]
    mine = [s for s in samples if s["pid"] == final["pid"]]
    base = [s for s in mine if s["t"] >= baseline_after and s["t"] >= s["started"] + warmup]
    base = base[:WINDOW]
    end = [s for s in mine if s["t"] >= end_after][-WINDOW:]
    out: dict[str, Any] = {"pid": final["pid"], "restarted_processes": len(
        {s["pid"] for s in samples}) - 1}
    why = ""
    if not end:
        why = "not running in the final window"
    elif started_before is not None and final["started"] > started_before:
        why = (f"started {final['started'] - started_before:.0f}s into the faults, after the "
               f"conditioning round")
    elif not base:
        why = "started too late: no sample after its warm-up"
    elif end[-1]["t"] - base[0]["t"] < min_span:
        why = (f"only {end[-1]['t'] - base[0]['t']:.0f}s between its baseline and the end "
               f"(< {min_span:g}s)")
    if why:
        out.update(verdict="not judged", why=why, rss_end=final["rss"], fds_end=final["fds"],
                   close_wait_end=final["close_wait"],
                   close_wait_max=max(s["close_wait"] for s in samples))
        return out
    figures: dict[str, Any] = {"span_s": round(end[-1]["t"] - base[0]["t"], 1)}
    grew = []
    for key in ("rss", "fds"):
        b = median([s[key] for s in base])
        e = median([s[key] for s in end])
        pct = (e - b) / b * 100 if b else 0.0
        figures[f"{key}_start"] = int(b)
        figures[f"{key}_end"] = int(e)
        figures[f"{key}_growth_pct"] = round(pct, 2)
        if pct >= limit_pct:
            grew.append(f"{key} +{pct:.1f}%")
    cw = median([s["close_wait"] for s in end])
    figures["close_wait_start"] = int(median([s["close_wait"] for s in base]))
    figures["close_wait_end"] = int(cw)
    figures["close_wait_max"] = max(s["close_wait"] for s in samples)
    if cw > 0:
        grew.append(f"{int(cw)} sockets left in CLOSE_WAIT")
    out.update(figures)
    out["verdict"] = "grew" if grew else "ok"
    if grew:
        out["why"] = ", ".join(grew)
    return out


# ----- restarts from the journal --------------------------------------------------------------
_RESULT = re.compile(r"Failed with result '([\w-]+)'")
_KILLED = re.compile(r"Main process exited, code=(\w+), status=([\w/]+)")


def parse_unit_journal(text: str) -> dict[str, Any]:
    """Starts and failures of a unit from ``journalctl -u UNIT -o short-unix`` (systemd's
    own lines): start times (s), failure results and main-process exit statuses."""
    starts: list[float] = []
    results: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    for line in text.splitlines():
        if " systemd[1]: " not in line:
            continue
        stamp = line.split(" ", 1)[0]
        if ": Started " in line or line.split("systemd[1]: ", 1)[1].startswith("Started "):
            try:
                starts.append(float(stamp))
            except ValueError:
                pass
        m = _RESULT.search(line)
        if m:
            results[m.group(1)] += 1
        m = _KILLED.search(line)
        if m:
            exits[f"{m.group(1)}={m.group(2)}"] += 1
    return {"starts": starts, "results": dict(results), "exits": dict(exits)}


__all__ = ["Bank", "growth", "merge_hist", "parse_unit_journal", "percentiles", "quantile",
           "series"]
