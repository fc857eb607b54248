"""Read-only snapshots of a ring's counters and readers, as plain Python values.

Reading stats maps the segment read-only and only loads: it never writes to the segment,
so it cannot disturb the writer or the readers. Values are read one by one, not as one
atomic snapshot: under load, ``records_written`` and a reader's lag may be a few records
apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shm._lib import C, check, ffi
from shm._segment import PREFIX, Segment, shm_dir, validate_name

__all__ = ["ReaderStats", "RingStats", "list_rings", "read_stats", "ring_stats"]

_WRITER_STATES = {
    C.MP_RING_WRITER_NEVER: "new",
    C.MP_RING_WRITER_RUNNING: "running",
    C.MP_RING_WRITER_STOPPED: "stopped",
}


@dataclass(frozen=True)
class ReaderStats:
    """One durable reader cursor."""

    name: str
    slot: int
    attached: bool      # a live process holds the reader (its slot lock is taken)
    pid: int            # last process attached, 0 after a clean close
    next_seq: int       # live cursor: seq of the next record it will read
    lag_records: int    # records written that it has not read yet
    lag_bytes: int
    lost: int           # records it lost to overruns (lapped), in total
    overruns: int       # times it was lapped
    committed_seq: int  # last record it committed (0: none); a restart resumes after it
    committed_lag: int  # records written after committed_seq
    last_commit_ns: int  # CLOCK_REALTIME of the last commit
    attached_ns: int    # CLOCK_REALTIME of the last attach


@dataclass(frozen=True)
class RingStats:
    """A ring segment's header, writer counters and readers."""

    name: str
    path: str
    capacity: int           # data bytes
    max_message_length: int
    max_readers: int
    segment_length: int     # file size
    created_ns: int         # CLOCK_REALTIME
    records_written: int    # since creation, across writer restarts
    bytes_written: int      # payload bytes since creation
    last_seq: int           # seq of the newest record (0: none yet)
    oldest_seq: int         # seq of the oldest record still in the ring (-1: unknown)
    tail: int               # byte position the next record starts at
    writer_state: str       # new | running | stopped | dead (running but its process died)
    writer_pid: int
    writer_heartbeat_ns: int
    writer_started_ns: int
    writer_attach_count: int
    readers: tuple[ReaderStats, ...]


def read_stats(segment: Segment, *, own_writer: bool = False,
               own_slot: int = -1) -> RingStats:
    """Snapshot an open segment.

    Parameters
    ----------
    segment : Segment
        The mapping to read.
    own_writer, own_slot : bool, int
        Whether this process is the writer / the reader attached to slot ``own_slot``: our
        own locks are invisible to the lock probe that tells live processes from dead ones.
    """
    raw = ffi.new("mp_ring_stats_t *")
    C.mp_ring_stats_read(segment.ring, raw)
    next_seq = raw.next_seq
    state = _WRITER_STATES.get(raw.writer_state, f"unknown({raw.writer_state})")
    if state == "running" and not own_writer and not segment.lock_held(C.MP_RING_LOCK_WRITER):
        state = "dead"
    readers = []
    slot = ffi.new("mp_ring_slot_stats_t *")
    for index in range(raw.max_readers):
        if not check(C.mp_ring_slot_stats_read(segment.ring, index, slot), segment.path):
            continue
        committed = slot.committed
        attached = index == own_slot or segment.lock_held(C.MP_RING_LOCK_FIRST_SLOT + index)
        readers.append(ReaderStats(
            name=ffi.string(slot.name).decode("ascii", "replace"),
            slot=index,
            attached=attached,
            pid=slot.pid,
            next_seq=slot.next_seq,
            lag_records=max(0, next_seq - slot.next_seq),
            lag_bytes=max(0, raw.tail - slot.position),
            lost=slot.lost,
            overruns=slot.overruns,
            committed_seq=committed.next_seq - 1,
            committed_lag=max(0, next_seq - committed.next_seq),
            last_commit_ns=committed.time_ns,
            attached_ns=slot.attached_ns,
        ))
    return RingStats(
        name=segment.name,
        path=segment.path,
        capacity=raw.capacity,
        max_message_length=raw.max_message_length,
        max_readers=raw.max_readers,
        segment_length=raw.segment_length,
        created_ns=raw.created_ns,
        records_written=next_seq - C.MP_RING_FIRST_SEQ,
        bytes_written=raw.bytes_written,
        last_seq=next_seq - 1,
        oldest_seq=raw.oldest_seq,
        tail=raw.tail,
        writer_state=state,
        writer_pid=raw.writer_pid,
        writer_heartbeat_ns=raw.writer_heartbeat_ns,
        writer_started_ns=raw.writer_started_ns,
        writer_attach_count=raw.writer_attach_count,
        readers=tuple(readers),
    )


def ring_stats(name: str) -> RingStats:
    """Snapshot ring ``name`` without attaching to it (read-only mapping).

    Raises
    ------
    RingNameError, RingNotFound, RingLayoutError
    """
    segment = Segment.open(name, writable=False)
    try:
        return read_stats(segment)
    finally:
        segment.close()


def list_rings() -> list[str]:
    """Names of every ``marketprism.*`` segment in the shared-memory directory, sorted."""
    try:
        entries = os.listdir(shm_dir())
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if entry.startswith(PREFIX):
            name = entry[len(PREFIX):]
            try:
                names.append(validate_name(name))
            except ValueError:
                continue
    return sorted(names)
