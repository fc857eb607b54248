"""Filesystem helpers shared by the daemons."""

from __future__ import annotations

import os

_TMP_SUFFIX = ".tmp"


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; readers see the old or the new file.

    The data goes to a temporary file in the same directory (same filesystem, so
    ``rename(2)`` is atomic), is fsynced, and is renamed over ``path``. The temporary name
    (hidden, with our pid, ending in ``.tmp``) never ends in ``.prom``, so node_exporter's
    textfile collector never parses one, even one left behind by a crash.

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
