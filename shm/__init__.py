"""marketprism's shared-memory ring: one writer, many readers, across processes.

A ring lives in ``/dev/shm/marketprism.<name>`` (``MARKETPRISM_SHM_DIR`` overrides the
directory). The writer appends variable-length records (0..capacity/8 bytes, a type id > 0,
sequence numbers from 1) and never waits for anyone; each reader follows at its own pace and
is told exactly how many records it lost if the writer laps it. Durable reader names keep
their cursor in the segment across restarts.

Byte layout (little-endian; offsets pinned in ``native/mp_ring.h``, mirrored and tested in
:mod:`shm._layout`)::

    0     header (128 B)          magic "MMPRING1", layout version 1, capacity, record
                                  alignment 8, max readers, max message length, offsets
    128   writer counters (128 B) tail_intent, tail, oldest, latest, next_seq, bytes, futex
    256   writer info (128 B)     state (new/running/stopped), pid, heartbeat
    384   sleepers (128 B)        set by a reader about to sleep on the futex
    512   reader slots (256 B each): name[32], pid, double-buffered commit (position,
          next_seq, lost, overruns, time), live cursor on its own two cache lines
    data_offset (page aligned): capacity bytes of records, each
          int32 length | int32 type | int64 seq | payload, 8-byte aligned;
          type -1 pads the end of the region when a record does not fit

Thread safety: a :class:`RingWriter` or :class:`RingReader` is used by one thread at a
time; any number of processes may each hold one. One writer per ring (a second one gets
:class:`RingBusy`), one holder per durable reader name. Stats snapshots only read.

Example::

    from shm import RingReader, RingWriter

    writer = RingWriter("demo", capacity=1 << 24)
    reader = RingReader("demo", reader="printer")
    writer.write(b"hello", type_id=1)
    if reader.wait(timeout=1.0):
        print(reader.read())   # Record(seq=1, type_id=1, payload=b'hello', lost=0)
    reader.commit()

Command line: ``python -m shm ls | inspect NAME | rm NAME`` (``shm.cli.main(argv)``).
"""

from shm._segment import remove_ring, segment_path
from shm.errors import (
    RingBusy,
    RingCorrupted,
    RingError,
    RingLayoutError,
    RingNameError,
    RingNotFound,
)
from shm.reader import Batch, Record, RingReader, remove_reader
from shm.stats import ReaderStats, RingStats, list_rings, ring_stats
from shm.writer import DEFAULT_CAPACITY, DEFAULT_MAX_READERS, RingWriter

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_READERS",
    "Batch",
    "ReaderStats",
    "Record",
    "RingBusy",
    "RingCorrupted",
    "RingError",
    "RingLayoutError",
    "RingNameError",
    "RingNotFound",
    "RingReader",
    "RingStats",
    "RingWriter",
    "list_rings",
    "remove_reader",
    "remove_ring",
    "ring_stats",
    "segment_path",
]
