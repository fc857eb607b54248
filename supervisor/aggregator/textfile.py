"""The node_exporter textfile: our instance-level metrics in a ``*.prom`` file, atomically.

node_exporter's textfile collector reads every ``*.prom`` file in its directory at each
scrape. A reader must never see a half-written file, so we write a temporary file in the
same directory (same filesystem, so ``rename(2)`` is atomic), fsync it, and rename it over
the target. The temporary name (hidden, with our pid, ending in ``.tmp``) does not end in
``.prom``, so node_exporter never parses it, even one left behind by a crash between write and
rename.

Default path: ``/var/lib/prometheus/node-exporter/marketprism.prom`` (Debian's
prometheus-node-exporter reads that directory). An empty path disables the file.
"""

from __future__ import annotations

import os

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

_TMP_SUFFIX = ".tmp"


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; readers see the old or the new file.

    Raises
    ------
    OSError
        The directory is missing or not writable; ``path`` is left untouched.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask must not make it unreadable to node_exporter
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_textfile(path: str, registry: CollectorRegistry) -> int:
    """Render ``registry`` in the text exposition format to ``path``; returns bytes written."""
    data = generate_latest(registry)
    write_atomic(path, data)
    return len(data)


__all__ = ["write_atomic", "write_textfile"]
