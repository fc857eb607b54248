"""Exceptions raised by the ring. Every message names the segment file it is about.

Being lapped is not an error (records carry a ``lost`` count) and neither is a timeout; only
bad arguments, unusable segments and corruption raise.
"""

from __future__ import annotations

__all__ = [
    "RingBusy",
    "RingCorrupted",
    "RingError",
    "RingLayoutError",
    "RingNameError",
    "RingNotFound",
]


class RingError(Exception):
    """Base class of every ring error."""


class RingNameError(RingError, ValueError):
    """A ring or reader name has characters or a length the ring does not accept."""


class RingNotFound(RingError, FileNotFoundError):
    """The segment file does not exist (no writer ever created it, or it was removed)."""


class RingLayoutError(RingError):
    """The file is not a ring this code can use: wrong magic, layout version, size, or a
    capacity other than the one the writer asked for."""


class RingBusy(RingError):
    """The segment already has a live writer, the reader name is attached in another
    process, or every reader slot is taken."""


class RingCorrupted(RingError):
    """Data that passed validation breaks a framing invariant (a bug or a foreign write)."""
