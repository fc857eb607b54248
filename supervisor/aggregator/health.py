"""The ``/health`` document: a pure function of a :class:`~.sources.Sample`.

Shape (the first four keys are what existing monitors already parse; the rest is added)::

    {"status": "healthy",            # or "unhealthy": HTTP 200 / 503
     "uptime_seconds": 812.4,
     "mode": "systemd",              # or "foreground" (no systemd as PID 1)
     "processes": {
       "okx_spot": {"status": "healthy", "cpu": 3.1, "memory_mb": 48.2,  # collector's
                    "enabled": true, "exchange": "okx", "market": "spot",
                    "reasons": [], "warnings": [],
                    "status_line": "4/4 books synced, 2,310 msg/s, 0 resyncs",
                    "units": {"collector": {"active_state": "active", ...},
                              "analyzer": {"error": "systemd unavailable ..."}},
                    "collector": {"ready": true, "books_synced": 4, ...},
                    "analyzer": {"lag": 0, ...} | {"error": "..."} | null,
                    "nats_bridge": {"state": "connected", ...} | null,
                    "memory": {"rss_mb": 48.2, "soft_mb": 120, "hard_mb": 160}}},
     "reasons": ["binance_spot: collector: pid 4242 is not running"],
     "healthy_instances": 4, "enabled_instances": 5,
     "systemd": {"available": false, "error": "systemd unavailable (PID 1 is not systemd)"},
     "json_backend": "orjson", "version": "0.1.0", "time": 1795000000.1}

An enabled instance is healthy when its collector's stats block is fresh, its writer pid is
alive, it is ready, all its books are synced, its last message is younger than the
instance's ``stale_after`` and (under systemd) its unit is active; and, when its analyzer is
enabled, the analyzer's block is fresh, its pid alive and its unit active (and the same for
the NATS bridge when ``[instances.X.nats]`` is set; a bridge cut off from NATS is a warning:
the ring keeps the data). Every check that fails adds one human-readable reason. Disabled
instances are listed, never counted.
"""

from __future__ import annotations

from typing import Any

from supervisor.aggregator.sources import BlockRead, InstanceSample, Sample
from supervisor.aggregator.units import ROLES, unit_name

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
DISABLED = "disabled"

# Collector document fields copied into /health as they are (when of the right type).
_COLLECTOR_FIELDS = (
    "ready", "connected", "books_synced", "books_total", "last_message_age", "message_rate",
    "messages", "bytes", "reconnects", "malformed", "rest_errors", "rate_limited",
    "subscribe_errors", "loop_lag", "loop_lag_max", "rss", "cpu_seconds", "memory_soft",
    "memory_hard", "memory_soft_exceeded", "ring", "ring_seq", "ring_records", "zmq_sent",
    "zmq_dropped", "encode_errors", "started",
)


def number(doc: dict[str, Any] | None, key: str) -> float | None:
    """``doc[key]`` when it is a real number (not a bool, not NaN); else None."""
    if doc is None:
        return None
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return value


def numbers(doc: dict[str, Any] | None, key: str) -> dict[str, float]:
    """``doc[key]`` as {str: number}, keeping only well-typed entries."""
    value = doc.get(key) if doc is not None else None
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v}


def _text(doc: dict[str, Any] | None, key: str) -> str:
    value = doc.get(key) if doc is not None else None
    return value if isinstance(value, str) else ""


def _block_reasons(role: str, block: BlockRead, fresh_after: float) -> list[str]:
    """Liveness of one stats block: readable, fresh, written by a live pid, not stopped."""
    if not block.ok:
        return [f"{role}: {block.error}"]
    reasons = []
    if not block.pid_alive:
        reasons.append(f"{role}: pid {block.pid} is not running")
    if block.age is None or block.age > fresh_after:
        age = "never" if block.age is None else f"{block.age:.1f}s ago"
        reasons.append(f"{role}: stats block stale (last update {age}, limit "
                       f"{fresh_after:g}s)")
    if _text(block.doc, "status") == "stopped":
        reasons.append(f"{role}: stopped")
    elif block.doc is not None and block.doc.get("ready") is False:
        status = _text(block.doc, "status")
        reasons.append(f"{role}: not ready" + (f" ({status})" if status else ""))
    return reasons


def _collector_reasons(inst: InstanceSample) -> list[str]:
    """Feed health from the collector's own document."""
    doc = inst.collector.doc
    if doc is None:
        return []
    reasons = []
    synced, total = number(doc, "books_synced"), number(doc, "books_total")
    if synced is not None and total is not None and synced < total:
        reasons.append(f"collector: {synced:.0f}/{total:.0f} books synced")
    age = number(doc, "last_message_age")
    stale_after = inst.config.stale_after
    if age is None:
        reasons.append("collector: no message received yet")
    elif age > stale_after:
        reasons.append(f"collector: last message {age:.1f}s ago (stale_after "
                       f"{stale_after:g}s)")
    return reasons


def _unit_reasons(inst: InstanceSample, role: str) -> list[str]:
    unit = inst.units.get(role)
    if unit is None:
        return []
    if unit.load_state and unit.load_state != "loaded":
        return [f"{unit.unit} is {unit.load_state}"]
    if unit.active_state != "active":
        result = f", result {unit.result}" if unit.result and unit.result != "success" else ""
        return [f"{unit.unit} is {unit.active_state}/{unit.sub_state}{result}"]
    return []


def _unit_doc(sample: Sample, inst: InstanceSample, role: str) -> dict[str, Any]:
    unit = inst.units.get(role)
    if unit is not None:
        return unit.to_dict()
    name = unit_name(role, inst.config.name)
    if not sample.systemd.available or sample.systemd.error:
        return {"unit": name, "error": sample.systemd.error or "systemd unavailable"}
    return {"unit": name, "error": "no state reported"}


def _collector_doc(block: BlockRead) -> dict[str, Any]:
    if block.doc is None:
        return {"error": block.error}
    doc = block.doc
    out: dict[str, Any] = {"pid": block.pid, "pid_alive": block.pid_alive,
                           "stats_age_seconds": block.age, "cpu_percent": block.cpu_percent,
                           "status_line": _text(doc, "status")}
    for key in _COLLECTOR_FIELDS:
        value = doc.get(key)
        if isinstance(value, bool | int | float | str) or value is None and key in doc:
            out[key] = value
    out["resyncs"] = numbers(doc, "resyncs")
    out["resyncs_total"] = sum(out["resyncs"].values())
    out["events"] = numbers(doc, "events")
    return out


def _counters_doc(block: BlockRead | None) -> dict[str, Any] | None:
    """The analyzer's or the NATS bridge's counters, whatever it publishes (its schema is
    its own).

    Scalars and {name: number} tables are copied; ``quality`` keeps its totals and flagged
    symbols, ``plugin`` its scalars; the per-symbol ``analysis`` results stay out.
    """
    if block is None:
        return None
    if block.doc is None:
        return {"error": block.error}
    doc = block.doc
    out: dict[str, Any] = {"pid": block.pid, "pid_alive": block.pid_alive,
                           "stats_age_seconds": block.age, "cpu_percent": block.cpu_percent,
                           "status_line": _text(doc, "status")}
    for key, value in doc.items():
        if key in out or key in ("status", "analysis", "quality", "plugin") or \
                key.startswith("latency_"):
            continue
        if isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
        elif isinstance(value, dict) and (nums := numbers(doc, key)):
            out[key] = nums
    quality = doc.get("quality")
    if isinstance(quality, dict):
        out["quality"] = {"totals": numbers(quality, "totals"),
                          **{flag: [s for s in quality[flag] if isinstance(s, str)]
                             for flag in ("stale", "crossed", "misaligned")
                             if isinstance(quality.get(flag), list)}}
    plugin = doc.get("plugin")
    if isinstance(plugin, dict):
        out["plugin"] = {k: v for k, v in plugin.items()
                         if isinstance(v, bool | int | float | str) or v is None}
    return out


def _bridge_warnings(block: BlockRead | None) -> list[str]:
    """A bridge that is up but not connected to NATS: the ring holds the data meanwhile
    (its durable cursor), so this degrades the instance without failing it."""
    doc = block.doc if block is not None else None
    if not doc or doc.get("state", "connected") == "connected":
        return []
    error = _text(doc, "last_error")
    return [f"nats-bridge: {_text(doc, 'state') or 'not connected'}, "
            f"{number(doc, 'lag') or 0:.0f} records waiting in the ring"
            + (f" (last error: {error})" if error else "")]


def ring_doc(inst: InstanceSample) -> dict[str, Any]:
    """Write sequence and each durable reader's position, from the ring's own counters."""
    stats = inst.ring.stats
    reader = inst.config.analyzer.reader if inst.analyzer is not None else None
    if stats is None:
        return {"name": inst.config.ring, "analyzer_reader": reader, "error": inst.ring.error}
    return {
        "name": stats.name, "analyzer_reader": reader, "write_seq": stats.last_seq,
        "records_written": stats.records_written, "bytes_written": stats.bytes_written,
        "capacity": stats.capacity, "writer_state": stats.writer_state,
        "writer_pid": stats.writer_pid,
        "readers": {r.name: {"lag": r.lag_records, "lag_bytes": r.lag_bytes, "lost": r.lost,
                             "overruns": r.overruns, "committed_lag": r.committed_lag,
                             "attached": r.attached, "pid": r.pid}
                    for r in stats.readers},
    }


def instance_health(sample: Sample, inst: InstanceSample) -> dict[str, Any]:
    """One entry of ``processes``."""
    cfg = inst.config
    reasons: list[str] = []
    warnings: list[str] = []
    if cfg.enabled:
        reasons += _block_reasons("collector", inst.collector, sample.fresh_after)
        reasons += _collector_reasons(inst)
        reasons += _unit_reasons(inst, "collector")
        for role in ROLES[1:]:
            if (block := inst.block(role)) is not None:
                reasons += _block_reasons(role, block, sample.fresh_after)
                reasons += _unit_reasons(inst, role)
        warnings += _bridge_warnings(inst.bridge)
    if cfg.enabled and inst.ring.stats is None:
        warnings.append(inst.ring.error)
    doc = inst.collector.doc
    rss = number(doc, "rss")
    soft = cfg.memory_soft_mb
    if rss is not None and rss > soft * 2**20:
        warnings.append(f"collector: RSS {rss / 2**20:.1f} MB above the soft limit {soft} MB "
                        f"(hard {cfg.memory_hard_mb} MB)")
    status = DISABLED if not cfg.enabled else UNHEALTHY if reasons else HEALTHY
    roles = [role for role in ROLES if inst.block(role) is not None]
    return {
        "status": status,
        "cpu": round(inst.collector.cpu_percent or 0.0, 2),
        "memory_mb": round(rss / 2**20, 2) if rss is not None else None,
        "enabled": cfg.enabled, "exchange": cfg.exchange, "market": cfg.market,
        "reasons": reasons, "warnings": warnings,
        "status_line": _text(doc, "status"),
        "units": {role: _unit_doc(sample, inst, role) for role in roles},
        "collector": _collector_doc(inst.collector),
        "analyzer": _counters_doc(inst.analyzer),
        "nats_bridge": _counters_doc(inst.bridge),
        "memory": {"rss_mb": round(rss / 2**20, 2) if rss is not None else None,
                   "soft_mb": soft, "hard_mb": cfg.memory_hard_mb},
        "ring": ring_doc(inst),
    }


def build_health(sample: Sample, json_backend: str = "", version: str = "") -> dict[str, Any]:
    """The whole ``/health`` document; ``doc["status"]`` decides 200 or 503."""
    processes = {name: instance_health(sample, inst) for name, inst in sample.instances.items()}
    reasons = [f"{name}: {reason}" for name, proc in processes.items()
               for reason in proc["reasons"]]
    enabled = [p for p in processes.values() if p["enabled"]]
    if not enabled:
        reasons.append("no enabled instances in the configuration")
    healthy = sum(1 for p in enabled if p["status"] == HEALTHY)
    return {
        "status": HEALTHY if not reasons else UNHEALTHY,
        "uptime_seconds": round(max(0.0, sample.taken - sample.started), 3),
        "mode": sample.mode,
        "processes": processes,
        "reasons": reasons,
        "healthy_instances": healthy,
        "enabled_instances": len(enabled),
        "systemd": {"available": sample.systemd.available, "error": sample.systemd.error},
        "json_backend": json_backend,
        "version": version,
        "time": sample.taken,
    }


def http_status(doc: dict[str, Any]) -> int:
    return 200 if doc.get("status") == HEALTHY else 503


__all__ = ["build_health", "instance_health", "http_status", "number", "numbers", "HEALTHY",
           "UNHEALTHY", "DISABLED"]
