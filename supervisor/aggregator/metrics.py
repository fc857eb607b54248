"""``/metrics``: a prometheus-client custom collector over :class:`~.sources.Sample` s.

Usage (the registry is always passed in; nothing touches the global ``REGISTRY``)::

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MarketprismCollector(sampler.sample))
    body = generate_latest(registry)

``collect()`` takes one sample and turns it into metric families; it never raises for a bad
stats document (wrong types are skipped). Naming follows Prometheus conventions: the
``marketprism_`` prefix, ``_total`` counters, seconds and bytes. Every per-instance series
carries ``instance``, ``exchange`` and ``market`` (the latter two are fixed per instance, so
they add no cardinality and save a join); ``role`` (collector | analyzer | nats-bridge), ``type``,
``reason``, ``stage``, ``check``, ``reader``, ``state``, ``plugin`` and ``symbol`` are bounded
by the code or the config (symbols outside the config are dropped). Latency histograms arrive
as non-cumulative bucket counts and leave as real Prometheus histograms (cumulative ``le``
buckets, ``+Inf`` equal to ``_count``).

Scrape it with ``honor_labels: true``: our ``instance`` label is the marketprism instance
(okx_spot...), which Prometheus would otherwise rename to ``exported_instance``.

``textfile=True`` keeps only :data:`TEXTFILE_FAMILIES`, the instance-level gauges and
counters written for node_exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from supervisor.aggregator.analyzer_metrics import export_analyzer
from supervisor.aggregator.bridge_metrics import export_bridge
from supervisor.aggregator.families import (
    BASE,
    PREFIX,
    Families,
    cumulative_buckets,
    metric_name,
)
from supervisor.aggregator.health import HEALTHY, instance_health, number, numbers
from supervisor.aggregator.sources import InstanceSample, Sample
from supervisor.aggregator.units import ACTIVE_STATES, ROLES

# Collector-document scalars: doc key -> (metric name without prefix, kind, help).
# Kinds: "counter" gets "_total" appended; "gauge" as is.
COLLECTOR_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("messages", "messages", "counter", "WebSocket messages received from the venue."),
    ("bytes", "message_bytes", "counter", "Bytes of WebSocket messages received."),
    ("reconnects", "reconnects", "counter", "WebSocket reconnections."),
    ("malformed", "malformed_messages", "counter",
     "Messages that failed to parse or validate (dropped, counted)."),
    ("rest_errors", "rest_errors", "counter", "Failed REST requests to the venue."),
    ("rate_limited", "rate_limited_responses", "counter", "HTTP 429/418 answers from the venue."),
    ("subscribe_errors", "subscribe_errors", "counter", "Subscriptions the venue refused."),
    ("zmq_sent", "zmq_sent_messages", "counter", "Events published on ZeroMQ."),
    ("zmq_dropped", "zmq_dropped_messages", "counter",
     "Events dropped because a ZeroMQ subscriber was too slow (high-water mark)."),
    ("zmq_unsubscribed", "zmq_unsubscribed_messages", "counter",
     "Events not published on ZeroMQ because nobody subscribed (never serialized)."),
    ("zmq_subscriptions", "zmq_subscriptions", "gauge",
     "Topic subscriptions on the collector's ZeroMQ PUB (XPUB)."),
    ("encode_errors", "encode_errors", "counter", "Events the ring codec could not encode."),
    ("memory_soft_exceeded", "memory_soft_limit_exceeded", "counter",
     "Memory checks that found RSS above the soft limit."),
    ("books_synced", "books_synced", "gauge", "Order books currently in sync."),
    ("books_total", "books_configured", "gauge", "Order books the instance maintains."),
    ("last_message_age", "last_message_age_seconds", "gauge",
     "Seconds since the last message from the venue."),
)
# Per-process fields both roles publish: doc key -> (name, kind, help); label ``role``.
PROCESS_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("rss", "process_resident_memory_bytes", "gauge", "Resident memory of the process."),
    ("cpu_seconds", "process_cpu_seconds", "counter", "User and system CPU time of the process."),
    ("started", "process_start_time_seconds", "gauge",
     "Start time of the process, seconds since the epoch."),
    ("loop_lag", "event_loop_lag_seconds", "gauge", "Last measured event-loop lag."),
    ("loop_lag_max", "event_loop_lag_max_seconds", "gauge",
     "Largest event-loop lag since the process started."),
)
# Known latency stages: doc key after "latency_" -> stage label.
STAGES = {"recv_ring": "receive_to_ring", "exchange_recv": "exchange_to_receive",
          "recv_analyzer": "receive_to_analyzer", "ring_analyzer": "ring_to_analyzer"}
# Families the node_exporter textfile gets (instance-level health and usage).
TEXTFILE_FAMILIES = frozenset(PREFIX + n for n in (
    "instance_enabled", "instance_healthy", "stats_block_up", "stats_block_age_seconds",
    "process_running", "ready", "books_synced", "books_configured",
    "last_message_age_seconds", "messages", "reconnects", "resyncs",
    "process_resident_memory_bytes", "process_cpu_seconds", "memory_soft_limit_bytes",
    "memory_hard_limit_bytes", "unit_active", "unit_state", "unit_restarts",
    "ring_reader_lag_records", "ring_reader_lost_records", "analyzer_lag_records",
    "analyzer_lost_records", "analyzer_gaps", "quality_violations", "systemd_available",
))
def stage_name(key: str) -> str:
    """``latency_recv_ring`` -> ``receive_to_ring`` (unknown stages keep their suffix)."""
    suffix = key[len("latency_"):]
    return STAGES.get(suffix, metric_name(suffix))


class MarketprismCollector(Collector):
    """Builds every ``marketprism_*`` family from one fresh sample per scrape.

    Parameters
    ----------
    source : callable
        Returns the :class:`~.sources.Sample` to export (``Sampler.sample`` in the daemon, a
        constant in tests).
    textfile : bool
        Keep only :data:`TEXTFILE_FAMILIES` (the node_exporter textfile view).
    version, json_backend : str
        Reported in ``marketprism_build_info``.
    """

    def __init__(self, source: Callable[[], Sample], textfile: bool = False,
                 version: str = "", json_backend: str = "") -> None:
        self.source = source
        self.textfile = textfile
        self.version = version
        self.json_backend = json_backend

    def collect(self) -> Iterator[Metric]:
        families = build_families(self.source(), self.version, self.json_backend)
        for fam in families:
            if not self.textfile or fam.name in TEXTFILE_FAMILIES:
                yield fam


def build_families(sample: Sample, version: str = "", json_backend: str = "") -> list[Metric]:
    """All families for one sample (a pure function; tests call it directly)."""
    f = Families()
    f.add("gauge", "build_info", "marketprism version and JSON backend, value 1.",
          ("version", "json_backend"), (version or "unknown", json_backend or "unknown"), 1)
    f.add("gauge", "aggregator_start_time_seconds", "Aggregator start, seconds since the epoch.",
          (), (), sample.started)
    f.add("gauge", "systemd_available", "1 when PID 1 is systemd and unit states are read.",
          (), (), 1 if sample.systemd.available and not sample.systemd.error else 0)
    for inst in sample.instances.values():
        _instance(f, sample, inst)
    return list(f)


def _instance(f: Families, sample: Sample, inst: InstanceSample) -> None:
    cfg = inst.config
    base = (cfg.name, cfg.exchange, cfg.market)
    health = instance_health(sample, inst)
    f.add("gauge", "instance_enabled", "1 when the instance is enabled in the configuration.",
          BASE, base, 1 if cfg.enabled else 0)
    f.add("gauge", "instance_healthy", "1 when the instance passes every /health check.",
          BASE, base, 1 if health["status"] == HEALTHY else 0)
    # The limits belong to collector@X (its MemoryMax= drop-in); the role label lets
    # rss / limit match one to one.
    f.add("gauge", "memory_soft_limit_bytes", "Configured soft memory limit (warned above).",
          (*BASE, "role"), (*base, "collector"), cfg.memory_soft_mb * 2**20)
    f.add("gauge", "memory_hard_limit_bytes", "Configured hard memory limit (systemd MemoryMax=).",
          (*BASE, "role"), (*base, "collector"), cfg.memory_hard_mb * 2**20)
    for role in ROLES:
        block = inst.block(role)
        if block is None:
            continue
        labels = (*base, role)
        f.add("gauge", "stats_block_up", "1 when the process's stats block was read and parsed.",
              (*BASE, "role"), labels, 1 if block.ok else 0)
        f.add("counter", "stats_block_read_errors",
              "Refreshes that found the stats block missing or malformed.",
              (*BASE, "role"), labels, sample.read_errors.get((cfg.name, role), 0))
        if not block.ok:
            continue
        doc = block.doc
        f.add("gauge", "process_running", "1 when the stats block's writer pid is alive.",
              (*BASE, "role"), labels, 1 if block.pid_alive else 0)
        if block.age is not None:
            f.add("gauge", "stats_block_age_seconds", "Seconds since the process last published.",
                  (*BASE, "role"), labels, block.age)
        ready = doc.get("ready") if doc else None
        if isinstance(ready, bool):
            f.add("gauge", "ready", "1 when the process reports itself ready.",
                  (*BASE, "role"), labels, 1 if ready else 0)
        for key, name, kind, help_ in PROCESS_SCALARS:
            if (v := number(doc, key)) is not None:
                f.add(kind, name, help_, (*BASE, "role"), labels, v)
        _latencies(f, base, doc)
    _units(f, base, inst)
    _collector(f, base, inst)
    export_analyzer(f, base, inst)
    export_bridge(f, base, inst)
    _ring(f, base, inst)


def _latencies(f: Families, base: tuple[str, ...], doc: dict[str, Any] | None) -> None:
    for key, value in (doc or {}).items():
        if not key.startswith("latency_"):
            continue
        hist = cumulative_buckets(value)
        if hist is not None:
            f.histogram("latency_seconds",
                        "Event latency by pipeline stage (exchange_to_receive, receive_to_ring, "
                        "receive_to_analyzer).", (*BASE, "stage"), (*base, stage_name(key)), *hist)


def _units(f: Families, base: tuple[str, ...], inst: InstanceSample) -> None:
    for role, unit in inst.units.items():
        labels = (*base, role)
        f.add("gauge", "unit_active", "1 when systemd reports the unit active.",
              (*BASE, "role"), labels, 1 if unit.active_state == "active" else 0)
        for state in ACTIVE_STATES:
            f.add("gauge", "unit_state", "systemd ActiveState of the unit (1 for the current one).",
                  (*BASE, "role", "state"), (*labels, state),
                  1 if unit.active_state == state else 0)
        f.add("counter", "unit_restarts", "Automatic restarts systemd made (NRestarts).",
              (*BASE, "role"), labels, unit.n_restarts)
        if unit.since is not None:
            f.add("gauge", "unit_active_since_seconds",
                  "When the unit last became active, seconds since the epoch.",
                  (*BASE, "role"), labels, unit.since)


def _collector(f: Families, base: tuple[str, ...], inst: InstanceSample) -> None:
    doc = inst.collector.doc
    if doc is None:
        return
    for key, name, kind, help_ in COLLECTOR_SCALARS:
        if (v := number(doc, key)) is not None:
            f.add(kind, name, help_, BASE, base, v)
    if isinstance(doc.get("connected"), bool):
        f.add("gauge", "connected", "1 while the venue WebSocket is connected.", BASE, base,
              1 if doc["connected"] else 0)
    for kind_name, n in numbers(doc, "events").items():
        f.add("counter", "events", "Normalized events published, by event type.",
              (*BASE, "type"), (*base, kind_name), n)
    for reason, n in numbers(doc, "resyncs").items():
        f.add("counter", "resyncs", "Order-book resyncs, by gap reason.", (*BASE, "reason"),
              (*base, reason), n)
    symbols = set(inst.config.symbols)  # bound the symbol label by the config
    for symbol, n in numbers(doc, "book_levels").items():
        if symbol in symbols:
            f.add("gauge", "book_levels", "Price levels held in the local order book.",
                  (*BASE, "symbol"), (*base, symbol), n)


def _ring(f: Families, base: tuple[str, ...], inst: InstanceSample) -> None:
    stats = inst.ring.stats
    if stats is None:
        return
    f.add("counter", "ring_records_written",
          "Records written to the ring since it was created (across writer restarts).",
          BASE, base, stats.records_written)
    f.add("counter", "ring_written_bytes", "Payload bytes written to the ring.", BASE, base,
          stats.bytes_written)
    f.add("gauge", "ring_last_sequence", "Sequence number of the newest ring record.",
          BASE, base, stats.last_seq)
    f.add("gauge", "ring_capacity_bytes", "Data capacity of the ring.", BASE, base,
          stats.capacity)
    f.add("gauge", "ring_writer_running", "1 while the ring's writer process is attached.",
          BASE, base, 1 if stats.writer_state == "running" else 0)
    labels = (*BASE, "reader")
    for r in stats.readers:
        values = (*base, r.name)
        f.add("gauge", "ring_reader_lag_records", "Records written that the reader has not read.",
              labels, values, r.lag_records)
        f.add("gauge", "ring_reader_lag_bytes", "Bytes between the writer and the reader.",
              labels, values, r.lag_bytes)
        f.add("gauge", "ring_reader_committed_lag_records",
              "Records after the reader's last commit (what a restart would re-read).",
              labels, values, r.committed_lag)
        f.add("counter", "ring_reader_lost_records", "Records the reader lost to overruns.",
              labels, values, r.lost)
        f.add("counter", "ring_reader_overruns", "Times the writer lapped the reader.",
              labels, values, r.overruns)
        f.add("gauge", "ring_reader_attached", "1 while a live process holds the reader.",
              labels, values, 1 if r.attached else 0)


__all__ = ["MarketprismCollector", "build_families", "cumulative_buckets", "stage_name",
           "TEXTFILE_FAMILIES", "PREFIX"]
