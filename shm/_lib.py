"""The only module that calls into the C extension (``shm._native``).

Everything else in :mod:`shm` goes through the names here, so the public API never hands out
cdata. :func:`check` is the one place that turns C result codes into Python.
"""

from __future__ import annotations

from shm._native import ffi
from shm._native import lib as C
from shm.errors import RingBusy, RingCorrupted, RingError, RingLayoutError

__all__ = ["C", "ffi", "check", "last_error"]

# Results that are normal outcomes, not errors.
_NORMAL = (C.MP_RING_TIMEOUT, C.MP_RING_INTERRUPTED)

_ERRORS: dict[int, type[Exception]] = {
    C.MP_RING_ERROR_ARGUMENT: ValueError,
    C.MP_RING_ERROR_CORRUPT: RingCorrupted,
    C.MP_RING_ERROR_MAGIC: RingLayoutError,
    C.MP_RING_ERROR_VERSION: RingLayoutError,
    C.MP_RING_ERROR_LAYOUT: RingLayoutError,
    C.MP_RING_ERROR_NO_SLOT: RingBusy,
}


def last_error() -> str:
    """The message the C side left for the calling thread's last failure."""
    return ffi.string(C.mp_ring_last_error()).decode("utf-8", "replace")


def check(rc: int, path: str) -> int:
    """Return ``rc`` if it is a count or a normal result; raise the matching error otherwise.

    Parameters
    ----------
    rc : int
        A C return value: ``>= 0`` (success or a count), ``MP_RING_TIMEOUT`` or
        ``MP_RING_INTERRUPTED`` are returned unchanged.
    path : str
        The segment file, named in the exception message.

    Raises
    ------
    ValueError
        Invalid arguments (type id, length, closed handle, ...).
    RingLayoutError, RingCorrupted, RingBusy
        See :mod:`shm.errors`.
    OSError
        A system call failed.
    """
    if rc >= 0 or rc in _NORMAL:
        return rc
    message = f"ring segment {path}: {last_error()}"
    if rc == C.MP_RING_ERROR_SYSTEM:
        raise OSError(ffi.errno, message)
    raise _ERRORS.get(rc, RingError)(message)
