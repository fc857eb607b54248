"""The analyzer's stats document as metric families.

The analyzer's schema is its own (``supervisor/analyzer/output.py``: ``stats_doc``); the
fields we know get proper names and types below, and every other numeric field is still
exported, as ``marketprism_analyzer_<key>`` (untyped, or a counter when the key ends in
``_total``), so a new analyzer counter shows up without an aggregator change.
"""

from __future__ import annotations

from typing import Any

from supervisor.aggregator.families import BASE, Families, add_fields
from supervisor.aggregator.health import number, numbers
from supervisor.aggregator.sources import InstanceSample

# Analyzer scalars we know the meaning of (supervisor/analyzer/output.py: stats_doc):
# key -> (name after "analyzer_", kind, help). Every other numeric field is exported
# generically as ``marketprism_analyzer_<key>`` (untyped; a counter when the key ends in
# "_total").
ANALYZER_KNOWN: dict[str, tuple[str, str, str]] = {
    "lag": ("lag_records", "gauge", "Ring records written but not yet analyzed."),
    "committed_seq": ("committed_sequence", "gauge",
                      "Last ring sequence the analyzer committed (a restart resumes after it)."),
    "ring_seq": ("sequence", "gauge", "Ring sequence of the last event analyzed."),
    "events": ("events", "counter", "Events the analyzer processed."),
    "batches": ("batches", "counter", "Batches the analyzer processed."),
    "lost": ("lost_records", "counter", "Records the analyzer lost (lapped)."),
    "overruns": ("overruns", "counter",
                 "Times the writer lapped the analyzer (or ZeroMQ drops in zmq mode)."),
    "sequence_gaps": ("sequence_gaps", "counter",
                      "Book update chains broken in the analyzer's view."),
    "gaps": ("gaps", "counter", "Overruns plus sequence gaps."),
    "no_book": ("events_without_book", "counter",
                "Book deltas that arrived before the analyzer had the book."),
    "seeds": ("book_seeds", "counter", "Books seeded from a snapshot."),
    "results_sent": ("results_sent", "counter", "Analysis results published."),
    "results_dropped": ("results_dropped", "counter",
                        "Analysis results dropped by a slow subscriber."),
    "symbols": ("symbols", "gauge", "Symbols the analyzer tracks."),
    "books_valid": ("books_valid", "gauge", "Books the analyzer holds in sync."),
    "snapshot_requests": ("snapshot_requests", "counter",
                          "Book snapshots requested from the collector (ZeroMQ mode)."),
    "malformed": ("malformed_messages", "counter", "Messages that failed to decode."),
}
# Analyzer fields not exported: identity, derived rates, per-symbol analysis, and what the
# per-role process families or the dict handlers below already cover.
ANALYZER_SKIP = frozenset({
    "rss", "cpu_seconds", "started", "loop_lag", "loop_lag_max", "pid", "ready", "event_rate",
    "analysis", "quality", "plugin", "events_by_type", "upstream_gaps",
})
# Per-symbol quality flags in ``quality`` (lists of symbols) -> gauge of how many.
QUALITY_FLAGS = ("stale", "crossed", "misaligned")


def export_analyzer(f: Families, base: tuple[str, ...], inst: InstanceSample) -> None:
    block = inst.analyzer
    if block is None or block.doc is None:
        return
    doc = block.doc
    by_type = numbers(doc, "events_by_type")
    for kind_name, n in by_type.items():
        f.add("counter", "analyzer_events", "Events the analyzer processed, by event type.",
              (*BASE, "type"), (*base, kind_name), n)
    for reason, n in numbers(doc, "upstream_gaps").items():
        f.add("counter", "analyzer_upstream_gaps", "Gap events the collector announced, by reason.",
              (*BASE, "reason"), (*base, reason), n)
    _quality(f, base, inst, doc.get("quality"))
    _plugin(f, base, doc.get("plugin"))
    skip = ANALYZER_SKIP | {key for key in doc if key.startswith("latency_")} | \
        ({"events"} if by_type else set())
    add_fields(f, base, doc, "analyzer_", ANALYZER_KNOWN, skip, "Analyzer")


def _quality(f: Families, base: tuple[str, ...], inst: InstanceSample, quality: Any) -> None:
    """``{"totals": {check: n}, "by_symbol": {check: {symbol: n}}, "stale": [symbols]...}``."""
    if not isinstance(quality, dict):
        return
    for check, n in numbers(quality, "totals").items():
        f.add("counter", "quality_violations", "Data-quality violations, by check.",
              (*BASE, "check"), (*base, check), n)
    by_symbol = quality.get("by_symbol")
    symbols = set(inst.config.symbols)
    if isinstance(by_symbol, dict):
        for check in by_symbol:
            for symbol, n in numbers(by_symbol, check).items():
                if symbol in symbols:
                    f.add("counter", "quality_symbol_violations",
                          "Data-quality violations, by check and symbol.",
                          (*BASE, "check", "symbol"), (*base, str(check), symbol), n)
    for flag in QUALITY_FLAGS:
        flagged = quality.get(flag)
        if isinstance(flagged, list):
            f.add("gauge", f"quality_{flag}_symbols", f"Symbols currently flagged {flag}.",
                  BASE, base, len(flagged))


def _plugin(f: Families, base: tuple[str, ...], plugin: Any) -> None:
    """``{"plugin": name, "state": ..., "calls": n, "errors": n, "results": n}``."""
    if not isinstance(plugin, dict) or not plugin.get("plugin"):
        return
    for key in ("calls", "errors", "results"):
        if (v := number(plugin, key)) is not None:
            f.add("counter", f"analyzer_plugin_{key}", f"Plug-in {key}.", BASE, base, v)
    state = plugin.get("state")
    if isinstance(state, str):
        f.add("gauge", "analyzer_plugin_info", "The analyzer plug-in and its state, value 1.",
              (*BASE, "plugin", "state"), (*base, str(plugin["plugin"]), state), 1)


__all__ = ["export_analyzer", "ANALYZER_KNOWN"]
