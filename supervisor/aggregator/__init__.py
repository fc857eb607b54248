"""The aggregator: ``/health``, ``/metrics``, the node_exporter textfile, ``marketprism status``.

Modules: :mod:`.sources` (the only data-side I/O: stats blocks, rings, pids), :mod:`.units`
(systemd unit states), :mod:`.health` and :mod:`.metrics` (pure functions of a sample;
:mod:`.families` and :mod:`.analyzer_metrics` hold the metric building blocks and the
analyzer's part), :mod:`.textfile` (atomic writes), :mod:`.status` (the terminal table),
:mod:`.main` (the daemon).
"""
