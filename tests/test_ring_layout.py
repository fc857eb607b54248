"""The C header is the one source of truth for the segment layout; Python mirrors it."""

from __future__ import annotations

import pytest

from shm import _layout
from shm._lib import C, ffi


@pytest.mark.parametrize(("ctype", "offsets"), [
    ("mp_ring_header_t", _layout.HEADER_OFFSETS),
    ("mp_ring_descriptor_t", _layout.DESCRIPTOR_OFFSETS),
    ("mp_ring_writer_counters_t", _layout.WRITER_COUNTER_OFFSETS),
    ("mp_ring_writer_info_t", _layout.WRITER_INFO_OFFSETS),
    ("mp_ring_reader_slot_t", _layout.SLOT_OFFSETS),
    ("mp_ring_record_header_t", _layout.RECORD_OFFSETS),
])
def test_python_offsets_match_the_c_header(ctype: str, offsets: dict[str, int]) -> None:
    assert {field: ffi.offsetof(ctype, field) for field in offsets} == offsets


def test_python_sizes_match_the_c_header() -> None:
    assert ffi.sizeof("mp_ring_header_t") == _layout.HEADER_LENGTH
    assert ffi.sizeof("mp_ring_descriptor_t") == _layout.DESCRIPTOR_LENGTH
    assert ffi.sizeof("mp_ring_reader_slot_t") == _layout.SLOT_LENGTH
    assert ffi.sizeof("mp_ring_commit_t") == _layout.COMMIT_LENGTH
    assert ffi.sizeof("mp_ring_record_header_t") == _layout.RECORD_HEADER_LENGTH


def test_hot_counters_sit_on_their_own_two_cache_lines() -> None:
    line = _layout.CACHE_LINE_LENGTH
    for block in ("writer", "writer_info", "sleepers"):
        assert ffi.offsetof("mp_ring_descriptor_t", block) % (2 * line) == 0
    # the reader's live cursor does not share lines with its name/commit block
    assert _layout.SLOT_OFFSETS["position"] == 2 * line


def test_python_constants_match_the_c_header() -> None:
    assert C.MP_RING_MAGIC == _layout.MAGIC
    assert C.MP_RING_LAYOUT_VERSION == _layout.LAYOUT_VERSION
    assert C.MP_RING_RECORD_ALIGNMENT == _layout.RECORD_ALIGNMENT
    assert C.MP_RING_RECORD_HEADER_LENGTH == _layout.RECORD_HEADER_LENGTH
    assert C.MP_RING_PADDING_TYPE == _layout.PADDING_TYPE
    assert C.MP_RING_FIRST_SEQ == _layout.FIRST_SEQ
    assert C.MP_RING_NAME_LENGTH == _layout.NAME_LENGTH
    assert C.MP_RING_MIN_CAPACITY == _layout.MIN_CAPACITY
    assert C.MP_RING_MAX_CAPACITY == _layout.MAX_CAPACITY
    assert C.MP_RING_MAX_READERS == _layout.MAX_READERS


def test_data_region_starts_where_python_expects(ring_name: str) -> None:
    import shm

    with shm.RingWriter(ring_name, capacity=8192, max_readers=20) as writer:
        length = writer.stats().segment_length
    assert length == _layout.data_offset(20) + 8192
    with open(shm.segment_path(ring_name), "rb") as file:
        header = _layout.peek_header(file.read(_layout.HEADER_LENGTH))
    assert header["magic"] == _layout.MAGIC
    assert header["data_offset"] == _layout.data_offset(20)
    assert header["max_message_length"] == 8192 // 8


def test_batch_format_cuts_payloads_and_skips_alignment_padding():
    """mp_ring_batch_format writes the struct format read() uses to cut a batch: one
    ``Ns`` per record and an ``Nx`` for the padding before it."""
    offsets, lengths = [0, 8, 8, 16, 280], [5, 0, 8, 260, 3]
    arrays = ffi.new("int32_t[]", offsets), ffi.new("int32_t[]", lengths)  # kept alive here
    batch = ffi.new("mp_ring_batch_t *")
    batch.offsets, batch.lengths = arrays
    batch.count = len(offsets)
    out = ffi.new("char[]", len(offsets) * C.MP_RING_FORMAT_ITEM)
    n = C.mp_ring_batch_format(batch, out, len(out))
    assert ffi.unpack(out, n) == b"5s3x0s8s260s4x3s"
    assert C.mp_ring_batch_format(batch, out, C.MP_RING_FORMAT_ITEM) == -1  # too small
