"""marketprism's shared-memory ring: one writer, many readers, across processes.

A ring lives in ``/dev/shm/marketprism.<name>`` (``MARKETPRISM_SHM_DIR`` overrides the
directory). The writer appends variable-length records (0..capacity/8 bytes, a positive type
id, sequence numbers from 1) and never waits for anyone; each reader follows at its own pace
and is told exactly how many records it lost if the writer laps it. Durable reader names keep
their cursor in the segment across restarts. The layout is in ``native/mp_ring.h`` (mirrored
in :mod:`shm._layout`).

Example::

    from shm import RingReader, RingWriter

    writer = RingWriter("demo", capacity=1 << 24)
    reader = RingReader("demo", reader="printer")
    writer.write(b"hello", type_id=1)
    if reader.wait(timeout=1.0):
        print(reader.read())   # Record(seq=1, type_id=1, payload=b'hello', lost=0)
    reader.commit()

Command line: ``python -m shm ls | inspect NAME | rm NAME``.
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
