"""The node_exporter textfile: our instance-level metrics in a ``*.prom`` file, atomically.

node_exporter's textfile collector reads every ``*.prom`` file in its directory at each
scrape. A reader must never see a half-written file, so we write a temporary file in the
same directory (same filesystem, so ``rename(2)`` is atomic), fsync it, and rename it over
the target. (:func:`supervisor.fsutil.atomic_write`; its temporary name never ends in ``.prom``.)

Default path: ``/var/lib/prometheus/node-exporter/marketprism.prom`` (Debian's
prometheus-node-exporter reads that directory). An empty path disables the file.
"""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from supervisor.fsutil import atomic_write as write_atomic


def write_textfile(path: str, registry: CollectorRegistry) -> int:
    """Render ``registry`` in the text exposition format to ``path``; returns bytes written."""
    data = generate_latest(registry)
    write_atomic(path, data)
    return len(data)


__all__ = ["write_atomic", "write_textfile"]
