"""Byte layout of a ring segment, mirrored from ``native/mp_ring.h`` (the source of truth).

tests/test_ring_layout.py checks every number here against ``ffi.offsetof``/``ffi.sizeof``.
Python uses them only to peek at the header of a segment it cannot attach (wrong version or
magic), so ``python -m shm inspect`` can still say what the file is.

Segment (little-endian)::

    0     header           128  magic u64 @0, layout_version u32 @8, record_alignment u32 @12,
                                capacity u64 @16, max_readers u32 @24, max_message_length u32
                                @28, data_offset u64 @32, segment_length u64 @40, slots_offset
                                u64 @48, slot_length u32 @56, record_header_length u32 @60,
                                created_ns i64 @64
    128   writer counters  128  tail_intent @0, tail @8, oldest_position @16, latest_position
                                @24, next_seq @32, bytes_written @40, futex_word u32 @48
    256   writer info      128  state u32 @0, pid i32 @4, heartbeat_ns @8, started_ns @16,
                                attach_count @24
    384   sleepers         128  flag u32 @0
    512   reader slots     256 each: name[32] @0, in_use u32 @32, pid i32 @36, commit_gen @40,
                                commits[2] @48 (position, next_seq, lost, overruns, time_ns),
                                live position @128, next_seq @136, lost @144, overruns @152,
                                attached_ns @160
    data_offset (4096-aligned)  capacity bytes of records

Record (8-byte aligned)::

    int32 length (incl. the 16-byte header; <= 0 while being written)
    int32 type   (> 0; -1 = padding up to the end of the data region)
    int64 seq    (first record: 1; padding has only length and type, it may be 8 bytes)
    payload      (0 .. capacity/8 bytes)
"""

from __future__ import annotations

import struct

MAGIC = 0x31474E4952504D4D  # b"MMPRING1" little-endian
LAYOUT_VERSION = 1
CACHE_LINE_LENGTH = 64
RECORD_ALIGNMENT = 8
RECORD_HEADER_LENGTH = 16
PADDING_TYPE = -1
FIRST_SEQ = 1
NAME_LENGTH = 32
SLOT_LENGTH = 256
DESCRIPTOR_LENGTH = 512
PAGE_LENGTH = 4096
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 30
MAX_READERS = 1024

HEADER_LENGTH = 128
HEADER_OFFSETS = {
    "magic": 0,
    "layout_version": 8,
    "record_alignment": 12,
    "capacity": 16,
    "max_readers": 24,
    "max_message_length": 28,
    "data_offset": 32,
    "segment_length": 40,
    "slots_offset": 48,
    "slot_length": 56,
    "record_header_length": 60,
    "created_ns": 64,
}
DESCRIPTOR_OFFSETS = {"header": 0, "writer": 128, "writer_info": 256, "sleepers": 384}
WRITER_COUNTER_OFFSETS = {
    "tail_intent": 0,
    "tail": 8,
    "oldest_position": 16,
    "latest_position": 24,
    "next_seq": 32,
    "bytes_written": 40,
    "futex_word": 48,
}
WRITER_INFO_OFFSETS = {
    "state": 0,
    "pid": 4,
    "heartbeat_ns": 8,
    "started_ns": 16,
    "attach_count": 24,
}
SLOT_OFFSETS = {
    "name": 0,
    "in_use": 32,
    "pid": 36,
    "commit_gen": 40,
    "commits": 48,
    "position": 128,
    "next_seq": 136,
    "lost": 144,
    "overruns": 152,
    "attached_ns": 160,
}
COMMIT_LENGTH = 40
RECORD_OFFSETS = {"length": 0, "type": 4, "seq": 8}

# The first 72 bytes of the header, in field order.
_HEADER_STRUCT = struct.Struct("<QIIQIIQQQIIq")
assert _HEADER_STRUCT.size == 72


def peek_header(raw: bytes) -> dict[str, int]:
    """Decode the header fields from the first bytes of a segment file (no validation).

    Parameters
    ----------
    raw : bytes
        At least 72 bytes read from offset 0.

    Returns
    -------
    dict
        Field name to value, in ``HEADER_OFFSETS`` order.
    """
    return dict(zip(HEADER_OFFSETS, _HEADER_STRUCT.unpack_from(raw), strict=True))


def data_offset(max_readers: int) -> int:
    """Where the data region starts for a segment with ``max_readers`` slots."""
    end = DESCRIPTOR_LENGTH + max_readers * SLOT_LENGTH
    return (end + PAGE_LENGTH - 1) & ~(PAGE_LENGTH - 1)
