"""Attaching: bad inputs raise the documented errors; writers and durable readers re-attach."""

from __future__ import annotations

import dataclasses
import os
import struct

import pytest

import shm
from shm import _layout

CAPACITY = 4096
WRITER = _layout.DESCRIPTOR_OFFSETS["writer"]


def patch(name: str, offset: int, fmt: str, *values: int) -> None:
    with open(shm.segment_path(name), "r+b") as file:
        file.seek(offset)
        file.write(struct.pack(fmt, *values))


def test_missing_segment_raises_ring_not_found(ring_name: str) -> None:
    with pytest.raises(shm.RingNotFound, match=shm.segment_path(ring_name)):
        shm.RingReader(ring_name)
    with pytest.raises(FileNotFoundError):  # RingNotFound is one
        shm.ring_stats(ring_name)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65, "..", "with space", "é", "a\0b"])
def test_bad_ring_name_raises_value_error_naming_it(name: str) -> None:
    with pytest.raises(shm.RingNameError, match="bad ring name") as info:
        shm.RingWriter(name)
    assert isinstance(info.value, ValueError)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("reader", ["", "x" * 32, "a:b"])
def test_bad_reader_name_raises_value_error(ring_name: str, reader: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY):
        with pytest.raises(shm.RingNameError, match="bad reader name"):
            shm.RingReader(ring_name, reader=reader)


def test_file_without_the_magic_raises_layout_error(ring_name: str) -> None:
    with open(shm.segment_path(ring_name), "wb") as file:
        file.write(b"not a ring" * 1000)
    for attach in (shm.RingReader, shm.RingWriter, shm.ring_stats):
        with pytest.raises(shm.RingLayoutError, match=f"{ring_name}.*bad magic"):
            attach(ring_name)


def test_other_layout_version_raises_layout_error(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    patch(ring_name, _layout.HEADER_OFFSETS["layout_version"], "<I", 99)
    with pytest.raises(shm.RingLayoutError, match="layout version 99, expected 1"):
        shm.RingReader(ring_name)


@pytest.mark.parametrize("delta", [-4096, 4096])
def test_file_size_mismatch_raises_layout_error(ring_name: str, delta: int) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    path = shm.segment_path(ring_name)
    os.truncate(path, os.path.getsize(path) + delta)
    with pytest.raises(shm.RingLayoutError, match="size mismatch"):
        shm.RingReader(ring_name)


def test_file_smaller_than_a_header_raises_layout_error(ring_name: str) -> None:
    with open(shm.segment_path(ring_name), "wb") as file:
        file.write(b"\0" * 100)
    with pytest.raises(shm.RingLayoutError, match="smaller than"):
        shm.RingReader(ring_name)


def test_writer_asking_for_another_capacity_raises_layout_error(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    with pytest.raises(shm.RingLayoutError, match="capacity 4096.*asked for 8192"):
        shm.RingWriter(ring_name, capacity=8192)
    shm.RingWriter(ring_name).close()  # no capacity: take the segment's


def test_second_writer_is_refused_while_the_first_runs(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY):
        with pytest.raises(shm.RingBusy, match=f"running writer \\(pid {os.getpid()}\\)"):
            shm.RingWriter(ring_name)
    shm.RingWriter(ring_name).close()  # free again once the first closed


def test_durable_reader_name_can_be_attached_once(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY), \
            shm.RingReader(ring_name, reader="analyzer"):
        with pytest.raises(shm.RingBusy, match="'analyzer' is attached"):
            shm.RingReader(ring_name, reader="analyzer")


def test_running_out_of_reader_slots_raises_ring_busy(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY, max_readers=2):
        shm.RingReader(ring_name, reader="a").close()
        shm.RingReader(ring_name, reader="b").close()
        with pytest.raises(shm.RingBusy, match="all 2 reader slots"):
            shm.RingReader(ring_name, reader="c")
        shm.remove_reader(ring_name, "a")
        shm.RingReader(ring_name, reader="c").close()
        with pytest.raises(KeyError):
            shm.remove_reader(ring_name, "a")


def test_restarted_writer_continues_the_sequence(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        for i in range(300):  # several laps
            writer.write(bytes(i % 97))
    with shm.RingWriter(ring_name) as writer:
        assert writer.next_seq == 301
        assert writer.write(b"next") == 301
        stats = writer.stats()
    assert (stats.writer_attach_count, stats.last_seq, stats.writer_state) == (2, 301, "running")


def test_durable_reader_resumes_after_its_last_commit(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        writer.write_many([b"%d" % i for i in range(1, 11)])
        with shm.RingReader(ring_name, reader="r", start="oldest") as reader:
            assert [reader.read().seq for _ in range(4)] == [1, 2, 3, 4]
            reader.commit()
            reader.read()  # read but not committed: delivered again after the restart
        with shm.RingReader(ring_name, reader="r") as reader:
            assert reader.next_seq == 5
            assert [r.seq for r in iter(reader.read, None)] == list(range(5, 11))


def test_commit_covers_only_records_handed_out(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        writer.write_many([b"x"] * 10)
        with shm.RingReader(ring_name, reader="r", start="oldest") as reader:
            assert reader.read().seq == 1  # the read-ahead fetched all 10
            reader.commit()
        with shm.RingReader(ring_name, reader="r") as reader:
            assert reader.read().seq == 2
            assert reader.read_batch().first_seq == 3  # rest of the read-ahead first
            reader.commit()
        assert writer.stats().readers[0].committed_seq == 10


def test_writer_killed_mid_record_leaves_no_torn_record(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        writer.write_many([b"a" * 40, b"b" * 40])
        tail = writer.stats().tail
    with open(shm.segment_path(ring_name), "rb") as file:
        header = _layout.peek_header(file.read(_layout.HEADER_LENGTH))
    # What a writer dying inside mp_ring_write leaves: tail_intent moved on, a claimed
    # (negative) length and half a payload past the tail, tail itself unchanged.
    patch(ring_name, WRITER + _layout.WRITER_COUNTER_OFFSETS["tail_intent"], "<q", tail + 200)
    patch(ring_name, header["data_offset"] + tail, "<iiq", -(16 + 150), 7, 3)
    patch(ring_name, header["data_offset"] + tail + 16, "<8s", b"TORNTORN")
    with shm.RingReader(ring_name, start="oldest") as reader:
        assert [r.payload[:1] for r in iter(reader.read, None)] == [b"a", b"b"]
        with shm.RingWriter(ring_name) as writer:
            assert writer.write(b"c" * 10) == 3
        assert reader.read() == (3, 1, b"c" * 10, 0)
        assert reader.read() is None


def test_stats_are_plain_python_values(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name, reader="r"):
        writer.write(b"abc")
        stats = shm.ring_stats(ring_name)
    values = dataclasses.astuple(stats)
    assert all(isinstance(v, (int, str, tuple)) for v in values)
    assert (stats.records_written, stats.bytes_written, stats.last_seq) == (1, 3, 1)
    assert stats.writer_state == "running"
    (reader,) = stats.readers
    assert (reader.name, reader.attached, reader.lag_records, reader.committed_seq) == (
        "r", True, 1, 0)
    assert shm.ring_stats(ring_name).writer_state == "stopped"


def test_writer_that_died_without_closing_shows_as_dead(ring_name: str) -> None:
    pid = os.fork()
    if pid == 0:  # child: attach as writer and die without close()
        shm.RingWriter(ring_name, capacity=CAPACITY).write(b"x")
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    stats = shm.ring_stats(ring_name)
    assert (stats.writer_state, stats.writer_pid, stats.last_seq) == ("dead", pid, 1)
    with shm.RingWriter(ring_name) as writer:  # and a new writer takes over
        assert writer.next_seq == 2
