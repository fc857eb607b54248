"""Ring readers: durable named cursors, batched and per-record reads, blocking waits."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from functools import partial
from itertools import chain, repeat
from operator import add, length_hint
from struct import Struct
from types import TracebackType
from typing import Literal, NamedTuple

from shm._lib import C, check, ffi
from shm._segment import Segment, validate_reader_name
from shm.errors import RingBusy
from shm.stats import RingStats, read_stats

__all__ = ["Batch", "Record", "RingReader", "remove_reader"]

_read = C.mp_ring_reader_read
_format = C.mp_ring_batch_format
_wait = C.mp_ring_reader_wait
_wait_read = C.mp_ring_reader_wait_read
_TIMEOUT = C.MP_RING_TIMEOUT
_INTERRUPTED = C.MP_RING_INTERRUPTED
_STARTS = {"latest": C.MP_RING_START_LATEST, "oldest": C.MP_RING_START_OLDEST}


class Record(NamedTuple):
    """One record."""

    seq: int
    type_id: int
    # bytes from RingReader.read(); a memoryview into the batch buffer when iterating a
    # Batch (valid until the reader's next read)
    payload: bytes | memoryview
    # records lost (the reader was lapped) just before this one; seq jumped by lost + 1
    lost: int = 0


_new_record = tuple.__new__  # tuple.__new__(Record, (...)) skips NamedTuple's Python __new__
_NOTHING_YET = (None,)  # what the read stream yields for "the ring is empty"
_HANDED_OUT = iter(())  # _seqs when nothing of the batch is left to hand out
_unpack = ffi.unpack


class Batch:
    """Records copied out of the ring by one :meth:`RingReader.read_batch` call.

    Record ``i`` has sequence ``first_seq + i`` and its payload is
    ``data[offsets[i] : offsets[i] + lengths[i]]`` (offsets are 8-byte aligned). ``data``,
    ``offsets``, ``lengths`` and ``types`` are memoryviews of the reader's preallocated
    buffers: only the first ``count`` entries are meaningful, and everything is overwritten
    by the reader's next read. Copy what you keep.

    Example::

        batch = reader.read_batch()
        for i in range(batch.count):
            handle(batch.first_seq + i, batch.types[i], batch.payload(i))
        reader.commit()
    """

    __slots__ = ("count", "first_seq", "lost", "data", "offsets", "lengths", "types")

    def __init__(self, count: int, first_seq: int, lost: int, data: memoryview,
                 offsets: memoryview, lengths: memoryview, types: memoryview) -> None:
        self.count = count
        self.first_seq = first_seq
        self.lost = lost  # records lost (lapped) just before first_seq
        self.data = data
        self.offsets = offsets
        self.lengths = lengths
        self.types = types

    def __len__(self) -> int:
        return self.count

    def payload(self, index: int) -> memoryview:
        """A view of record ``index``'s payload (no copy)."""
        offset = self.offsets[index]
        return self.data[offset:offset + self.lengths[index]]

    def __iter__(self) -> Iterator[Record]:
        # C-level map/zip as in RingReader.read: no Python code runs per record
        n = self.count
        offsets = self.offsets[:n]
        payloads = map(self.data.__getitem__,
                       map(slice, offsets, map(add, offsets, self.lengths[:n])))
        return map(_new_record, repeat(Record),
                   zip(range(self.first_seq, self.first_seq + n), self.types[:n], payloads,
                       chain((self.lost,), repeat(0)), strict=False))

    def __repr__(self) -> str:
        return f"Batch(count={self.count}, first_seq={self.first_seq}, lost={self.lost})"


class RingReader:
    """Read ring ``name`` from its own cursor; the writer never waits for it.

    With ``reader="some-name"`` the cursor is durable: it lives in a slot of the segment,
    :meth:`commit` saves it, and a reader re-opened under the same name (after ``close()``,
    a crash or ``kill -9``) resumes right after the last committed record: nothing lost,
    nothing repeated unless the writer lapped it meanwhile. Commit after processing. With
    ``reader=None`` the cursor is private to this object.

    A reader that falls more than a ring behind is lapped: the next read jumps to the oldest
    record still intact and reports exactly how many records were skipped (``Record.lost``,
    ``Batch.lost``). Nothing is skipped silently.

    Thread safety: one thread at a time per reader. A durable name can be attached by one
    reader at a time (others get :class:`~shm.RingBusy`). Do not carry a reader across
    ``fork()``.

    Example::

        with RingReader("okx_spot", reader="analyzer-okx") as reader:
            while running:
                if reader.wait(timeout=1.0):
                    for record in reader.read_batch():
                        process(record.seq, record.type_id, record.payload)
                    reader.commit()

    Parameters
    ----------
    name : str
        Ring name.
    reader : str, optional
        Durable cursor name, 1-31 characters from ``[A-Za-z0-9_.-]``.
    start : {"latest", "oldest"}
        Where a new cursor starts (an existing durable cursor ignores it): after the newest
        record, or at the oldest record still in the ring.
    batch_records : int
        Most records one :meth:`read_batch` returns.
    batch_bytes : int, optional
        Payload buffer size; at least the ring's max message length (the default is the
        larger of that and 1 MiB).

    Raises
    ------
    RingNameError, RingNotFound, RingLayoutError
        Bad names, no segment, or a segment this code cannot read.
    RingBusy
        The durable name is attached elsewhere, or every reader slot is taken.
    """

    def __init__(self, name: str, reader: str | None = None, *,
                 start: Literal["latest", "oldest"] = "latest", batch_records: int = 1024,
                 batch_bytes: int | None = None) -> None:
        if start not in _STARTS:
            raise ValueError(f"start must be 'latest' or 'oldest', not {start!r}")
        if batch_records < 1:
            raise ValueError("batch_records must be >= 1")
        reader_name = validate_reader_name(reader) if reader is not None else None
        segment = Segment.open(name)
        try:
            handle = ffi.new("mp_ring_reader_t *")
            self._slot = _attach(segment, handle, reader_name, _STARTS[start])
        except BaseException:
            segment.close()
            raise
        self._segment = segment
        self._reader = handle
        self.name = name
        self.reader = reader
        self.path = segment.path
        self.max_message_length: int = segment.ring.max_message_length
        self._pending_lost = 0  # lost in calls that returned no record (lapped repeatedly)
        # Read-ahead state. The last batch holds _count records from _first_seq on; _seqs
        # iterates their sequence numbers and is advanced once per record handed out, so
        # length_hint(_seqs) is how many are still pending. read() hands them out from
        # _records, built when read() takes the batch (read_batch() never builds it).
        self._count = 0
        self._seqs: Iterator[int] = iter(range(0))
        self._stream = chain.from_iterable(iter(self._next_batch_records, None))
        self.read = partial(next, self._stream)
        self._first_seq = 0
        self._first_lost = 0  # lost just before record 0 of the batch
        self._allocate(batch_records, max(batch_bytes or 1 << 20, self.max_message_length))

    def _allocate(self, records: int, data_bytes: int) -> None:
        self._buffer = bytearray(data_bytes)
        self._data_ptr = ffi.from_buffer(self._buffer)
        self._arrays = [ffi.new(f"{ctype}[]", records)
                        for ctype in ("int32_t", "int32_t", "int32_t", "int64_t")]
        views = [memoryview(ffi.buffer(array)).cast("B").cast(code)
                 for array, code in zip(self._arrays, "iiiq", strict=True)]
        self._data = memoryview(self._buffer)
        self._offsets, self._lengths, self._types, self._ends = views
        # mp_ring_batch_format's output: the struct format cutting a batch into payloads
        self._format_capacity = records * C.MP_RING_FORMAT_ITEM
        self._format = ffi.new("char[]", self._format_capacity)
        batch = ffi.new("mp_ring_batch_t *")
        batch.data = self._data_ptr
        batch.data_capacity = data_bytes
        batch.offsets, batch.lengths, batch.types, batch.ends = self._arrays
        batch.max_records = records
        self._batch = batch

    def _fill(self, n: int) -> int:
        """Book the batch a C read (or wait-and-read) just fetched; ``n`` is its result.
        Returns the record count (0 for none, a wait's timeout or interruption)."""
        batch = self._batch
        if n <= 0:
            if n:
                check(n, self.path)  # returns a wait's timeout or interruption, raises others
            lost = batch.lost
            if lost:
                self._pending_lost += lost
            self._count = 0
            self._seqs = _HANDED_OUT
            return 0
        first = batch.first_seq
        self._count = n
        # a lone record is handed out as soon as it is fetched (read(), get(), read_batch())
        self._seqs = iter(range(first, first + n)) if n > 1 else _HANDED_OUT
        self._first_seq = first
        self._first_lost = batch.lost + self._pending_lost
        self._pending_lost = 0
        return n

    def _handed_out(self) -> int:
        """Records of the last batch handed out so far."""
        return self._count - length_hint(self._seqs)

    # -- reading --------------------------------------------------------------------------
    def read(self) -> Record | None:
        """The next record (payload copied to ``bytes``), or ``None`` if there is none yet.

        Records are fetched from the ring a batch at a time into a read-ahead buffer (one C
        call per batch); :meth:`commit` only ever covers the records handed out.

        (``__init__`` replaces this method by ``partial(next, self._stream)``, which does the
        same with no Python frame per record.)

        Raises
        ------
        RingCorrupted
            Validated data breaks the framing (never expected).
        ValueError
            The reader is closed.
        """
        return next(self._stream)

    def _next_batch_records(self) -> Iterator[Record | None]:
        """An iterator over the next batch's records, or over ``(None,)`` if the ring is
        empty. The batch is fetched here, unless :meth:`get` has just booked one whose
        records are all still pending.

        ``_stream`` chains these iterators: a C-level ``map``/``zip`` over the batch, whose
        payloads one ``struct`` call cuts out of the buffer (the format comes from
        ``mp_ring_batch_format``), so no Python code runs per record. Its first input is
        ``_seqs``: exhausting ``_seqs`` (as :meth:`read_batch` does) ends the batch's
        iterator too.
        """
        if not length_hint(self._seqs):
            n = self._fill(_read(self._reader, self._batch))
            if n <= 1:  # empty, or a reader that keeps up: no chain to build
                if not n:
                    return _NOTHING_YET
                # handed out at once: chain returns an iterable's first item in the same
                # call. (get() builds a lone record the same way: a helper costs a frame.)
                return (_new_record(Record, (self._first_seq, self._types[0],
                                             _unpack(self._data_ptr, self._lengths[0]),
                                             self._first_lost)),)
        n = self._count
        # one struct call makes every payload a bytes object (one copy each, no slices)
        cut = _unpack(self._format, _format(self._batch, self._format, self._format_capacity))
        payloads = Struct(cut).unpack_from(self._buffer)
        lost = chain((self._first_lost,), repeat(0))
        return map(_new_record, repeat(Record),
                   zip(self._seqs, self._types[:n], payloads, lost, strict=False))

    def get(self, timeout: float | None = None, spin: float = 0.0) -> Record | None:
        """The next record, waiting for one if there is none yet; ``None`` if none came.

        :meth:`read` and :meth:`wait` in one: when nothing is fetched and pending, a single C
        call returns what the ring holds or spins ``spin`` seconds, sleeps on the futex up
        to ``timeout`` and copies what arrived, so a record reaches the caller with one
        crossing into C after it is written. ``reader.read() or reader.get(timeout)`` keeps
        :meth:`read`'s per-record speed while records keep coming.

        Returns ``None`` on timeout, when a signal interrupted the sleep, or when the writer
        closed the ring during the wait (as :meth:`wait` returns ``False``).
        """
        if not length_hint(self._seqs):
            n = self._fill(_wait_read(self._reader, self._batch,
                                      -1 if timeout is None else int(timeout * 1e9),
                                      int(spin * 1e9) if spin else 0))
            if n <= 1:  # the read stream's iterator is spent: nothing for it to hand out
                if not n:
                    return None
                return _new_record(Record, (self._first_seq, self._types[0],
                                            _unpack(self._data_ptr, self._lengths[0]),
                                            self._first_lost))
        return next(self._stream)  # type: ignore[no-any-return]

    def read_batch(self) -> Batch:
        """Up to ``batch_records`` records in one C call (``count`` may be 0).

        The returned :class:`Batch` views the reader's buffers and is valid until the next
        read on this reader. Records already fetched by :meth:`read` come first.
        """
        i = self._handed_out()
        count = self._count
        if i >= count:
            count = self._fill(_read(self._reader, self._batch))
            if not count:
                return Batch(0, self._batch.first_seq, 0, self._data, self._offsets,
                             self._lengths, self._types)
            i = 0
        deque(self._seqs, maxlen=0)  # everything handed out; ends read()'s batch iterator
        if i == 0:
            return Batch(count, self._first_seq, self._first_lost, self._data, self._offsets,
                         self._lengths, self._types)
        return Batch(count - i, self._first_seq + i, 0, self._data,
                     self._offsets[i:count], self._lengths[i:count], self._types[i:count])

    def wait(self, timeout: float | None = None, spin: float = 0.0) -> bool:
        """Block until a record is available, sleeping in the kernel (futex).

        The GIL is released while waiting. The writer only pays for a ``FUTEX_WAKE`` when a
        reader actually sleeps.

        Parameters
        ----------
        timeout : float, optional
            Seconds; ``None`` waits indefinitely, 0 only checks.
        spin : float
            Seconds to busy-poll first (lower latency, burns a core meanwhile).

        Returns
        -------
        bool
            ``True`` if a record is available; ``False`` on timeout, when a signal
            interrupted the sleep, or when the writer closed the ring during the wait (a
            wait that starts while the writer is stopped sleeps until a new writer writes
            or the timeout expires).
        """
        if length_hint(self._seqs):
            return True
        timeout_ns = -1 if timeout is None else int(timeout * 1e9)
        rc = _wait(self._reader, timeout_ns, int(spin * 1e9))
        if rc == 0:
            return True
        if rc != _TIMEOUT and rc != _INTERRUPTED:
            check(rc, self.path)
        return False

    def commit(self) -> None:
        """Save the cursor (after everything read so far) in the slot; no-op if anonymous.

        Crash-safe: a kill at any point leaves either the previous or this commit in force.
        Records still in the read-ahead buffer (fetched, not yet returned by :meth:`read`)
        are not committed.
        """
        i = self._handed_out()
        if i < self._count:  # i >= 1: a fill always hands out its first record at once
            check(C.mp_ring_reader_commit_at(self._reader, self._ends[i - 1],
                                             self._first_seq + i), self.path)
        else:
            C.mp_ring_reader_commit(self._reader)

    # -- state ----------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """Sequence number of the next record this reader will return (if not lapped)."""
        if length_hint(self._seqs):
            return self._first_seq + self._handed_out()
        return self._reader.next_seq

    @property
    def lost(self) -> int:
        """Records lost to overruns, in total (restored from the last commit on attach)."""
        return self._reader.lost

    @property
    def overruns(self) -> int:
        """Times this reader was lapped, in total (restored from the last commit)."""
        return self._reader.overruns

    def stats(self) -> RingStats:
        """A snapshot of the segment's counters and readers (plain Python values)."""
        return read_stats(self._segment, own_slot=self._slot)

    def close(self) -> None:
        """Detach (the durable cursor stays, at its last commit). Idempotent."""
        if self._segment.fd >= 0:
            C.mp_ring_reader_close(self._reader)
            self._segment.close()
            # _stream refers back to self: drop that cycle; reads now raise ValueError
            self._stream = map(_closed, repeat(self.path))
            self.read = partial(next, self._stream)

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RingReader({self.name!r}, reader={self.reader!r}, next_seq={self.next_seq})"


def _closed(path: str) -> None:
    raise ValueError(f"ring segment {path}: the reader is closed")


def _attach(segment: Segment, handle: object, reader_name: bytes | None, start: int) -> int:
    """Initialise ``handle``; for a durable name find or claim its slot. Returns the slot."""
    if reader_name is None:
        check(C.mp_ring_reader_init(handle, segment.ring, -1, start, os.getpid()),
              segment.path)
        return -1
    segment.lock(C.MP_RING_LOCK_SLOTS, wait=True)
    try:
        index = C.mp_ring_slot_find(segment.ring, reader_name)
        if index < 0:
            index = check(C.mp_ring_slot_claim(segment.ring, reader_name, start),
                          segment.path)
        if not segment.lock(C.MP_RING_LOCK_FIRST_SLOT + index):
            raise RingBusy(f"ring segment {segment.path}: reader {reader_name.decode()!r} "
                           "is attached in another process")
        check(C.mp_ring_reader_init(handle, segment.ring, index, start, os.getpid()),
              segment.path)
        return index
    finally:
        segment.unlock(C.MP_RING_LOCK_SLOTS)


def remove_reader(name: str, reader: str) -> None:
    """Delete the durable cursor ``reader`` of ring ``name``, freeing its slot.

    Raises
    ------
    RingNotFound
        No such segment.
    KeyError
        No such reader.
    RingBusy
        The reader is attached in some process.
    """
    reader_name = validate_reader_name(reader)
    segment = Segment.open(name)
    try:
        segment.lock(C.MP_RING_LOCK_SLOTS, wait=True)
        index = C.mp_ring_slot_find(segment.ring, reader_name)
        if index < 0:
            raise KeyError(f"ring segment {segment.path} has no reader {reader!r}")
        if not segment.lock(C.MP_RING_LOCK_FIRST_SLOT + index):
            raise RingBusy(f"ring segment {segment.path}: reader {reader!r} is attached")
        check(C.mp_ring_slot_release(segment.ring, index), segment.path)
    finally:
        segment.close()
