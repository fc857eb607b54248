"""One test per ring invariant (framing, limits, wrap, lapping), single process."""

from __future__ import annotations

import struct
from array import array

import pytest

import shm
from shm import _layout

CAPACITY = 4096  # smallest ring: max message 512 bytes


def record_at(name: str, position: int, capacity: int = CAPACITY) -> tuple[int, int]:
    """(length, type) of the record header at ring position ``position``, from the file."""
    with open(shm.segment_path(name), "rb") as file:
        header = _layout.peek_header(file.read(_layout.HEADER_LENGTH))
        file.seek(header["data_offset"] + position % capacity)
        return struct.unpack("<ii", file.read(8))


@pytest.mark.parametrize("capacity", [5000, 4097, 3 * 4096, 1000000])
def test_rejects_capacity_that_is_not_a_power_of_two(ring_name: str, capacity: int) -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        shm.RingWriter(ring_name, capacity=capacity)
    assert ring_name not in shm.list_rings()


@pytest.mark.parametrize("capacity", [2048, 1 << 31])
def test_rejects_capacity_out_of_range(ring_name: str, capacity: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        shm.RingWriter(ring_name, capacity=capacity)


@pytest.mark.parametrize("type_id", [0, -1, -7])
def test_rejects_type_id_zero_or_negative(ring_name: str, type_id: int) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        with pytest.raises(ValueError, match="type id"):
            writer.write(b"x", type_id)
        with pytest.raises(ValueError, match="type id"):
            writer.write_many([b"x", b"y"], type_id)
        assert writer.next_seq == 1
        assert writer.stats().records_written == 0


def test_enforces_max_message_length(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        assert writer.max_message_length == CAPACITY // 8
        writer.write(bytes(CAPACITY // 8))
        with pytest.raises(ValueError, match="outside"):
            writer.write(bytes(CAPACITY // 8 + 1))
        record = reader.read()
        assert record is not None and len(record.payload) == CAPACITY // 8
        assert reader.read() is None


def test_first_record_has_seq_one_and_zero_byte_records_work(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        assert writer.write(b"") == 1
        assert writer.write(b"", type_id=9) == 2
        assert reader.read() == (1, 1, b"", 0)
        assert reader.read() == (2, 9, b"", 0)
        assert reader.read() is None


def test_inserts_padding_record_on_wrap(ring_name: str) -> None:
    payload = bytes(range(100))  # 116-byte record, 120 aligned
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        for _ in range(34):  # 34 * 120 = 4080: 16 bytes left before the end
            writer.write(payload)
        assert writer.stats().tail == 4080
        assert [r.seq for r in iter(reader.read, None)] == list(range(1, 35))
        writer.write(payload)
        assert record_at(ring_name, 4080) == (16, _layout.PADDING_TYPE)
        assert record_at(ring_name, 4096) == (116, 1)  # the record went to index 0
        assert writer.stats().tail == 4096 + 120
        assert reader.read() == (35, 1, payload, 0)  # across the padding, nothing lost


def test_pads_an_eight_byte_gap_at_the_end(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        writer.write(bytes(4088 - 7 * (512 + 16) - 16))  # then 7 max-size records
        for _ in range(7):
            writer.write(bytes(512))
        assert writer.stats().tail == 4088  # 8 bytes left: too few for a record header
        assert [r.seq for r in iter(reader.read, None)] == list(range(1, 9))
        writer.write(b"after the gap")
        assert record_at(ring_name, 4088) == (8, _layout.PADDING_TYPE)
        assert reader.read() == (9, 1, b"after the gap", 0)


def test_lapped_reader_gets_exact_lost_count_and_resumes_at_oldest(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name, reader="slow") as reader:
        writer.write(b"first")
        assert reader.read().seq == 1
        for seq in range(2, 1001):
            writer.write(seq.to_bytes(4, "little") * (seq % 40))
        oldest = writer.stats().oldest_seq
        assert 2 < oldest < 1000
        record = reader.read()
        assert record.seq == oldest
        assert record.lost == oldest - 2  # exactly the records 2 .. oldest-1
        assert record.payload == oldest.to_bytes(4, "little") * (oldest % 40)
        rest = list(iter(reader.read, None))
        assert [r.seq for r in rest] == list(range(oldest + 1, 1001))
        assert all(r.lost == 0 for r in rest)
        assert (reader.lost, reader.overruns) == (oldest - 2, 1)
        mine = writer.stats().readers[0]
        assert (mine.name, mine.lost, mine.overruns, mine.lag_records) == (
            "slow", oldest - 2, 1, 0)


def test_lapped_batch_reports_loss_before_its_first_record(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name, start="oldest") as reader:
        for _ in range(500):
            writer.write(bytes(50))
        batch = reader.read_batch()
        assert batch.lost == batch.first_seq - 1 > 0
        assert batch.first_seq + batch.count - 1 == 500


def test_write_batch_is_all_or_nothing(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        with pytest.raises(ValueError):
            writer.write_batch(bytes(600), [10, 513, 10])
        with pytest.raises(ValueError, match="add up"):
            writer.write_batch(bytes(20), array("i", [10, 11]))
        assert writer.stats().records_written == 0
        assert writer.write_batch(b"aabbb", array("i", [2, 3])) == 1
        assert writer.next_seq == 3


def test_batch_exposes_aligned_views_of_each_payload(ring_name: str) -> None:
    payloads = [b"", b"a", b"bcdefghij", bytes(range(17))]
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        writer.write_many(payloads, type_id=4)
        batch = reader.read_batch()
        assert (batch.count, batch.first_seq, batch.lost) == (4, 1, 0)
        assert [bytes(batch.payload(i)) for i in range(4)] == payloads
        assert all(batch.offsets[i] % 8 == 0 for i in range(4))
        assert [(r.seq, r.type_id, bytes(r.payload)) for r in batch] == [
            (i + 1, 4, p) for i, p in enumerate(payloads)]
        assert reader.read_batch().count == 0


def test_reader_starting_latest_sees_only_new_records(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        writer.write_many([b"old"] * 3)
        with shm.RingReader(ring_name) as latest, \
                shm.RingReader(ring_name, start="oldest") as oldest:
            writer.write(b"new")
            assert [r.payload for r in iter(latest.read, None)] == [b"new"]
            assert [r.seq for r in iter(oldest.read, None)] == [1, 2, 3, 4]


def test_closed_handles_raise_instead_of_crashing(ring_name: str) -> None:
    writer = shm.RingWriter(ring_name, capacity=CAPACITY)
    reader = shm.RingReader(ring_name)
    writer.close()
    reader.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")
    with pytest.raises(ValueError, match="closed"):
        reader.read()
    with pytest.raises(ValueError, match="closed"):
        reader.wait(0)
