"""What the analyzer tells the world: results on ZeroMQ, its stats block, its STATUS line.

Results go out on the analyzer's own PUB socket (``inst.analyzer.zmq_pub``), topic
``instance/analysis/symbol``, one JSON document per symbol at most every
``publish_interval`` (only symbols that changed), each with ``ring_seq``: the ring sequence
of the newest event it reflects, so a subscriber can drop what it already saw after an
analyzer restart. Plug-in results use topic ``instance/plugin/symbol``. Sends never block:
a full queue is a counted drop.

The stats block (``/dev/shm/marketprism-stats.<instance>.analyzer``) carries every counter
(see :func:`stats_doc`) for the aggregator.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from supervisor import jsonlib
from supervisor.analyzer.engine import Engine
from supervisor.events import Kind

PUB_HWM = 10_000


class ResultPublisher:
    """Rate-limited per-symbol results on a PUB socket (or nowhere when ``endpoint`` is "")."""

    def __init__(self, ctx: zmq.Context, endpoint: str, instance: str,
                 interval: float) -> None:
        self.instance = instance
        self.interval = interval
        self.sock: zmq.Socket | None = None
        if endpoint:
            self.sock = ctx.socket(zmq.PUB)
            self.sock.setsockopt(zmq.SNDHWM, PUB_HWM)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.bind(endpoint)
        self.sent = 0
        self.dropped = 0
        self._next_sweep = 0.0
        self._topics: dict[tuple[str, str], bytes] = {}

    def _send(self, kind: str, symbol: str, doc: dict[str, Any]) -> None:
        key = (kind, symbol)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = f"{self.instance}/{kind}/{symbol}".encode()
        try:
            self.sock.send_multipart((topic, jsonlib.dumps(doc)), zmq.NOBLOCK)  # type: ignore[union-attr]
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def publish_due(self, engine: Engine, now: float | None = None) -> int:
        """Publish every changed symbol whose last result is ``interval`` old; returns n."""
        if self.sock is None:
            return 0
        now = time.monotonic() if now is None else now
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + self.interval / 2
        n = 0
        interval = self.interval
        for a in engine.symbols.values():
            if a.dirty and now - a.published >= interval:
                a.dirty = False
                a.published = now
                self._send("analysis", a.symbol, engine.result(a))
                n += 1
        return n

    def publish_plugin(self, results: list[dict[str, Any]], plugin: str) -> None:
        if self.sock is None:
            return
        for doc in results:
            doc.setdefault("instance", self.instance)
            doc.setdefault("type", "plugin")
            doc.setdefault("plugin", plugin)
            self._send("plugin", str(doc.get("symbol", "-")), doc)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)


def status_line(mode: str, lag: int | None, rate: float, gaps: int, plugin_state: str,
                quality_total: int) -> str:
    """``lag 0, 12,000 ev/s, 0 gaps, 0 quality, plugin ok`` (``degraded`` when it is)."""
    head = "zmq" if mode == "zmq" else f"lag {lag:,}" if lag is not None else "lag ?"
    tail = "" if plugin_state == "none" else f", plugin {plugin_state}"
    return f"{head}, {rate:,.0f} ev/s, {gaps:,} gaps, {quality_total:,} quality{tail}"


def stats_doc(engine: Engine, *, instance: str, mode: str, status: str, ready: bool,
              started: float, lag: int | None, committed_seq: int | None, rate: float,
              batches: int, plugin: dict[str, Any], publisher: ResultPublisher,
              extra: dict[str, Any], analysis: bool = True) -> dict[str, Any]:
    """The analyzer's stats document (block ``<instance>.analyzer``).

    Counters: ``events`` (and ``events_by_type``), ``lost`` records and ``overruns``
    (laps / ZeroMQ drops), ``sequence_gaps`` (book chains broken in the analyzer's view),
    ``upstream_gaps`` (the collector's Gap events by reason), ``quality`` (totals and per
    symbol by check), ``latency_recv_analyzer`` (collector receive -> analyzer, seconds).
    """
    doc: dict[str, Any] = {
        "role": "analyzer", "instance": instance, "mode": mode, "status": status,
        "ready": ready, "started": started, "lag": lag, "committed_seq": committed_seq,
        "ring_seq": engine.ring_seq, "events": engine.events,
        "events_by_type": {Kind(k).name.lower(): n for k, n in engine.by_kind.items() if n},
        "event_rate": rate, "batches": batches, "lost": engine.lost,
        "overruns": engine.overruns, "sequence_gaps": engine.sequence_gaps,
        "gaps": engine.overruns + engine.sequence_gaps,
        "upstream_gaps": dict(engine.upstream_gaps), "no_book": engine.no_book,
        "malformed": engine.malformed,
        "seeds": engine.seeds, "quality": engine.quality.to_dict(), "plugin": plugin,
        "results_sent": publisher.sent, "results_dropped": publisher.dropped,
        "latency_recv_analyzer": engine.latency.to_dict(),
        "symbols": len(engine.symbols),
        "books_valid": sum(1 for a in engine.symbols.values() if a.book.valid),
    }
    doc.update(extra)
    if analysis:
        doc["analysis"] = {s: engine.result(a) for s, a in engine.symbols.items()}
    return doc


__all__ = ["ResultPublisher", "status_line", "stats_doc"]
