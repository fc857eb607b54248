"""The analyzer service: one process per instance consuming the instance's ring.

- :mod:`~supervisor.analyzer.main`: the ``marketprism-analyzer`` daemon (systemd glue, loop).
- :mod:`~supervisor.analyzer.source`: the ring (durable cursor) or ZeroMQ (other hosts).
- :mod:`~supervisor.analyzer.engine`: records -> per-symbol state, analysis, quality
  (:mod:`~supervisor.analyzer.docs`: the same from ZeroMQ JSON documents).
- :mod:`~supervisor.analyzer.output`: results on ZeroMQ, the stats block, STATUS.
- :mod:`~supervisor.analyzer.state`: books from int64 mantissas, the sequencing rule.
- :mod:`~supervisor.analyzer.analysis`: built-in figures (mid, VWAP, volatility, ...).
- :mod:`~supervisor.analyzer.quality`: data-quality checks and their counters.
- :mod:`~supervisor.analyzer.plugins`: user plug-ins and their exactly-once contract.
- :mod:`~supervisor.analyzer.settings`: every tunable, with its documented default.
"""

from supervisor.analyzer.plugins import PluginBatch, PluginContext, PluginEventError

__all__ = ["PluginBatch", "PluginContext", "PluginEventError"]
