"""The ring's single writer."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable
from types import TracebackType

from shm._lib import C, check, ffi
from shm._segment import Segment
from shm.errors import RingLayoutError
from shm.stats import RingStats, read_stats

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_MAX_READERS", "BytesLike", "RingWriter"]

BytesLike = bytes | bytearray | memoryview

DEFAULT_CAPACITY = 16 * 1024 * 1024
DEFAULT_MAX_READERS = 16

_write = C.mp_ring_write
_write_batch = C.mp_ring_write_batch
_from_buffer = ffi.from_buffer


class RingWriter:
    """Create or re-attach ring ``name`` as its only writer.

    The writer never waits for readers: when the ring is full it overwrites the oldest
    records, and a reader that falls a whole ring behind is told exactly how many it lost.
    Records get sequence numbers 1, 2, 3, ...; a writer restarted on the same segment
    (after ``close()`` or a crash, even ``kill -9`` mid-record) continues the sequence, and a
    record that was half-written when the old writer died is never seen by anyone.

    Thread safety: one thread at a time may call a writer's methods. A second writer on the
    same segment, in any process, gets :class:`~shm.RingBusy`. Do not carry a writer across
    ``fork()``.

    Example::

        with RingWriter("okx_spot", capacity=64 << 20) as ring:
            seq = ring.write(b"payload", type_id=3)

    Parameters
    ----------
    name : str
        Ring name, 1-64 characters from ``[A-Za-z0-9_.-]``; the segment is
        ``/dev/shm/marketprism.<name>``.
    capacity : int, optional
        Data bytes, a power of two in [4096, 2**30]. The largest message is capacity / 8.
        Default: the existing segment's, or 16 MiB for a new one.
    max_readers : int, optional
        Durable reader slots of a new segment (default 16).

    Raises
    ------
    RingNameError
        Bad name.
    ValueError
        Capacity not a power of two or out of range.
    RingLayoutError
        The segment exists with another capacity / max_readers, or is not a usable ring.
    RingBusy
        Another writer is running on this segment.
    RingCorrupted
        The records in the segment fail the framing check done at attach.
    """

    def __init__(self, name: str, capacity: int | None = None, *,
                 max_readers: int | None = None) -> None:
        segment = _create_or_open(name, capacity, max_readers)
        try:
            segment.lock_writer()
            writer = ffi.new("mp_ring_writer_t *")
            check(C.mp_ring_writer_attach(writer, segment.ring, os.getpid()), segment.path)
        except BaseException:
            segment.close()
            raise
        self._segment = segment
        self._writer = writer
        self.name = name
        self.path = segment.path
        self.capacity: int = segment.ring.capacity
        self.max_message_length: int = segment.ring.max_message_length

    @property
    def next_seq(self) -> int:
        """The sequence number the next record will get."""
        return self._writer.next_seq  # type: ignore[no-any-return]

    def write(self, payload: BytesLike, type_id: int = 1) -> int:
        """Append one record and wake sleeping readers.

        Parameters
        ----------
        payload : bytes-like
            0 to ``max_message_length`` bytes; copied into the ring.
        type_id : int
            Record type, > 0 (values <= 0 are reserved: -1 is padding).

        Returns
        -------
        int
            The record's sequence number.

        Raises
        ------
        ValueError
            ``type_id <= 0``, payload too long, or the writer is closed.
        """
        if type(payload) is not bytes:  # cffi passes bytes as a pointer without a copy;
            payload = _from_buffer(payload)  # bytearray, memoryview, ...: borrow the buffer
        seq = _write(self._writer, type_id, payload, len(payload))
        if seq < 0:
            check(seq, self.path)
        return seq  # type: ignore[no-any-return]

    def write_batch(self, data: BytesLike, lengths: array | list[int],
                    type_id: int = 1) -> int:
        """Append ``len(lengths)`` records cut back to back from ``data``, in one C call.

        Readers see the records one by one as they are written; sleeping readers are woken
        once, at the end. All or nothing: a bad length rejects the whole batch.

        Parameters
        ----------
        data : bytes-like
            The payloads, concatenated.
        lengths : array('i') or list of int
            Payload lengths; their sum must not exceed ``len(data)``.
        type_id : int
            Record type of every record, > 0.

        Returns
        -------
        int
            The sequence number of the first record of the batch.
        """
        view = _from_buffer(data)
        if isinstance(lengths, array) and lengths.typecode == "i":
            counts = _from_buffer("int32_t[]", lengths)
        else:
            counts = ffi.new("int32_t[]", lengths)
        seq = self._writer.next_seq
        rc = _write_batch(self._writer, type_id, view, len(view), counts, len(lengths))
        if rc:
            check(rc, self.path)
        return seq  # type: ignore[no-any-return]

    def write_many(self, payloads: Iterable[bytes], type_id: int = 1) -> int:
        """Append several payloads in one C call; returns the first record's sequence."""
        items = list(payloads)
        return self.write_batch(b"".join(items), [len(item) for item in items], type_id)

    def heartbeat(self) -> None:
        """Refresh the writer heartbeat in the segment (writes refresh it every 1024 calls)."""
        C.mp_ring_writer_heartbeat(self._writer)

    def max_reader_lag(self) -> int:
        """Bytes the slowest durable reader is behind the writer (0 if none).

        Counts every slot that records a pid: attached readers, and readers that died
        without ``close()`` (until they come back or are removed). Reads the readers' live
        cursors; the ring itself never waits on them. Useful for alarms, or for a producer
        that chooses to pace itself (the tests and benchmarks do).
        """
        return C.mp_ring_writer_max_lag(self._writer)

    def stats(self) -> RingStats:
        """A snapshot of the segment's counters and readers (plain Python values)."""
        return read_stats(self._segment, own_writer=True)

    def close(self) -> None:
        """Mark the writer stopped, wake sleeping readers, unmap. Idempotent."""
        if self._segment.fd >= 0:
            C.mp_ring_writer_close(self._writer)
            self._segment.close()

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RingWriter({self.name!r}, capacity={self.capacity}, next_seq={self.next_seq})"


def _create_or_open(name: str, capacity: int | None, max_readers: int | None) -> Segment:
    while True:
        try:
            segment = Segment.open(name)
        except FileNotFoundError:
            try:
                return Segment.create(name, capacity or DEFAULT_CAPACITY,
                                      max_readers or DEFAULT_MAX_READERS)
            except FileExistsError:
                continue  # another writer created it first: attach (and fail on its lock)
        ring = segment.ring
        wanted = ((capacity, ring.capacity, "capacity"),
                  (max_readers, ring.max_readers, "max_readers"))
        for asked, actual, what in wanted:
            if asked is not None and asked != actual:
                segment.close()
                raise RingLayoutError(
                    f"ring segment {segment.path} exists with {what} {actual}, the writer "
                    f"asked for {asked}: remove it first (python -m shm rm {name})")
        return segment

