"""Segment files: names, paths, creation, mapping and the OFD locks that guard them.

A ring named ``NAME`` lives in ``$MARKETPRISM_SHM_DIR/marketprism.NAME`` (default directory
``/dev/shm``, i.e. the POSIX shared-memory object ``/marketprism.NAME``).

Locks are Linux open-file-description locks on single bytes of the file (they never touch
its contents and the kernel drops them when the process dies, kill -9 included):
byte 0 is held by the writer for its lifetime, byte 1 guards the reader slot table while a
reader attaches, byte 2 + i is held by whoever is attached to reader slot i.
"""

from __future__ import annotations

import os
import re
import uuid

from shm import _layout
from shm._lib import C, check, ffi, last_error
from shm.errors import RingBusy, RingLayoutError, RingNameError, RingNotFound

PREFIX = "marketprism."
SEGMENT_MODE = 0o660  # readers in the writer's group must write their slots
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_READER_NAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{_layout.NAME_LENGTH - 1}}}\Z")


def shm_dir() -> str:
    """The directory holding the segments (``MARKETPRISM_SHM_DIR`` or ``/dev/shm``)."""
    return os.environ.get("MARKETPRISM_SHM_DIR", "/dev/shm")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid ring name, else raise :class:`RingNameError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise RingNameError(
            f"bad ring name {name!r}: use 1-64 characters from [A-Za-z0-9_.-]")
    return name


def validate_reader_name(name: str) -> bytes:
    """Return the encoded reader name, or raise :class:`RingNameError`."""
    if not isinstance(name, str) or not _READER_NAME_RE.match(name):
        raise RingNameError(
            f"bad reader name {name!r}: use 1-{_layout.NAME_LENGTH - 1} characters "
            "from [A-Za-z0-9_.-]")
    return name.encode("ascii")


def segment_path(name: str) -> str:
    """The file of ring ``name``."""
    return os.path.join(shm_dir(), PREFIX + validate_name(name))


class Segment:
    """One process's mapping of a segment file plus its file descriptor.

    Not thread-safe; owned by one :class:`~shm.RingWriter`, :class:`~shm.RingReader` or
    stats snapshot, which closes it.
    """

    def __init__(self, name: str, path: str, fd: int) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.ring = ffi.new("mp_ring_t *")
        self._mapped = False

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, name: str, *, writable: bool = True) -> Segment:
        """Map an existing segment, validating its header.

        Raises
        ------
        RingNameError, RingNotFound, RingLayoutError
        """
        path = segment_path(name)
        try:
            fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RingNotFound(
                f"ring segment {path} does not exist (no writer created ring {name!r})"
            ) from None
        segment = cls(name, path, fd)
        try:
            segment._map(writable)
        except BaseException:
            os.close(fd)
            raise
        return segment

    @classmethod
    def create(cls, name: str, capacity: int, max_readers: int) -> Segment:
        """Create and format a new segment.

        The file is formatted under a hidden temporary name and hard-linked into place, so
        nobody ever maps a half-initialised segment.

        Raises
        ------
        FileExistsError
            Another process created the segment first.
        ValueError
            Bad capacity or max_readers.
        """
        path = segment_path(name)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".{PREFIX}{name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SEGMENT_MODE)
        segment = cls(name, path, fd)
        try:
            os.fchmod(fd, SEGMENT_MODE)
            check(C.mp_ring_create(segment.ring, fd, capacity, max_readers), path)
            segment._mapped = True
            os.link(tmp, path)
        except BaseException:
            segment.close()
            raise
        finally:
            os.unlink(tmp)
        return segment

    def _map(self, writable: bool) -> None:
        length = os.fstat(self.fd).st_size
        rc = C.mp_ring_open(self.ring, self.fd, length, 1 if writable else 0)
        if rc in (C.MP_RING_ERROR_MAGIC, C.MP_RING_ERROR_VERSION, C.MP_RING_ERROR_LAYOUT):
            raise RingLayoutError(f"ring segment {self.path} is not a usable ring: "
                                  f"{last_error()}")
        check(rc, self.path)
        self._mapped = True

    # -- locks ----------------------------------------------------------------------------
    def lock(self, which: int, *, wait: bool = False) -> bool:
        """Take the exclusive lock on byte ``which``; ``False`` if another holder has it."""
        return check(C.mp_ring_lock(self.fd, which, 1, 1 if wait else 0), self.path) == 0

    def unlock(self, which: int) -> None:
        check(C.mp_ring_unlock(self.fd, which), self.path)

    def lock_held(self, which: int) -> bool:
        """Whether some other open file description holds the lock on byte ``which``."""
        return check(C.mp_ring_lock_held(self.fd, which), self.path) == 1

    def lock_writer(self) -> None:
        """Become the segment's only writer, or raise :class:`RingBusy`."""
        if not self.lock(C.MP_RING_LOCK_WRITER):
            stats = ffi.new("mp_ring_stats_t *")
            C.mp_ring_stats_read(self.ring, stats)
            raise RingBusy(f"ring segment {self.path} already has a running writer "
                           f"(pid {stats.writer_pid})")

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap and close the file (releasing every lock this segment holds)."""
        if self._mapped:
            C.mp_ring_close(self.ring)
            self._mapped = False
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def remove_ring(name: str, *, force: bool = False) -> None:
    """Delete ring ``name``'s segment file.

    Processes that still have it mapped keep working on the old memory; new writers and
    readers get a new segment. That split is why a running writer blocks removal.

    Parameters
    ----------
    name : str
        Ring name.
    force : bool
        Remove even while a writer is running.

    Raises
    ------
    RingNotFound
        No such segment.
    RingBusy
        A writer is running and ``force`` is false.
    """
    path = segment_path(name)
    try:
        if not force:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if check(C.mp_ring_lock_held(fd, C.MP_RING_LOCK_WRITER), path) == 1:
                    raise RingBusy(f"ring segment {path} has a running writer: stop it "
                                   "first, or force the removal")
            finally:
                os.close(fd)
        os.unlink(path)
    except FileNotFoundError:
        raise RingNotFound(f"ring segment {path} does not exist") from None
