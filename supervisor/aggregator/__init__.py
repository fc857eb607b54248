"""The aggregator: ``/health``, ``/metrics``, the node_exporter textfile, ``marketprism status``.

Modules: :mod:`.sources` (the only data-side I/O: stats blocks, rings, pids), :mod:`.units`
(systemd unit states), :mod:`.health` and :mod:`.metrics` (pure functions of a sample),
:mod:`.textfile` (atomic writes), :mod:`.status` (the terminal table), :mod:`.main` (daemon).
"""
