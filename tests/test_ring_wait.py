"""Blocking waits: futex sleep/wake across processes, GIL release, wake only when needed."""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from collections.abc import Callable

import pytest

import shm
from shm import _layout

CAPACITY = 1 << 16
FUTEX_WORD = _layout.DESCRIPTOR_OFFSETS["writer"] + _layout.WRITER_COUNTER_OFFSETS["futex_word"]
SLEEPERS = _layout.DESCRIPTOR_OFFSETS["sleepers"]


def u32(name: str, offset: int) -> int:
    with open(shm.segment_path(name), "rb") as file:
        file.seek(offset)
        return struct.unpack("<I", file.read(4))[0]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.001)


def test_wait_returns_when_another_process_writes(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    reader = shm.RingReader(ring_name)
    pid = os.fork()
    if pid == 0:  # child: write once the parent sleeps in the kernel
        try:
            writer = shm.RingWriter(ring_name)
            wait_until(lambda: u32(ring_name, SLEEPERS) == 1)
            writer.write(b"wake up")
        finally:
            os._exit(0)
    started = time.monotonic()
    assert reader.wait(timeout=20.0)
    assert time.monotonic() - started < 15
    assert reader.read().payload == b"wake up"
    os.waitpid(pid, 0)
    reader.close()


def test_wait_releases_the_gil_while_sleeping(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        # The thread can only write if the main thread's wait() let go of the GIL.
        def write_when_asleep() -> None:
            wait_until(lambda: u32(ring_name, SLEEPERS) == 1)
            writer.write(b"from a thread")

        thread = threading.Thread(target=write_when_asleep)
        thread.start()
        assert reader.wait(timeout=20.0)
        thread.join()
        assert reader.read().payload == b"from a thread"


def test_wait_times_out_when_nothing_arrives(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY), shm.RingReader(ring_name) as reader:
        started = time.monotonic()
        assert reader.wait(timeout=0.05) is False
        assert time.monotonic() - started >= 0.05
        assert reader.wait(timeout=0) is False
        assert reader.wait(timeout=0.01, spin=0.005) is False


def test_wait_returns_at_once_when_records_are_available(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        writer.write_many([b"a", b"b"])
        assert reader.wait(timeout=0)
        reader.read()  # the second record is now in the read-ahead buffer
        assert reader.wait(timeout=0)
        reader.read()
        assert reader.wait(timeout=0) is False


def test_writer_only_wakes_when_a_reader_sleeps(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name) as reader:
        before = u32(ring_name, FUTEX_WORD)
        writer.write_many([b"x"] * 100)
        for _ in range(100):
            writer.write(b"y")
        assert u32(ring_name, FUTEX_WORD) == before  # nobody slept: no FUTEX_WAKE
        assert reader.wait(timeout=0.01) is True
        list(iter(reader.read, None))
        assert reader.wait(timeout=0.01) is False  # slept: flag set
        assert u32(ring_name, SLEEPERS) == 1
        writer.write(b"z")
        assert u32(ring_name, FUTEX_WORD) == before + 1
        assert u32(ring_name, SLEEPERS) == 0
        writer.write(b"z")
        assert u32(ring_name, FUTEX_WORD) == before + 1


def test_sleeper_flag_heals_after_a_sleeping_reader_is_killed(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer:
        pid = os.fork()
        if pid == 0:
            try:
                shm.RingReader(ring_name, reader="sleeper").wait(timeout=60)
            finally:
                os._exit(0)
        wait_until(lambda: u32(ring_name, SLEEPERS) == 1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        before = u32(ring_name, FUTEX_WORD)
        writer.write(b"one wake for the dead sleeper")
        writer.write(b"then none")
        writer.write(b"and none")
        assert u32(ring_name, FUTEX_WORD) == before + 1


def test_closing_the_writer_wakes_sleeping_readers(ring_name: str) -> None:
    writer = shm.RingWriter(ring_name, capacity=CAPACITY)
    with shm.RingReader(ring_name) as reader:
        closer = threading.Thread(
            target=lambda: (wait_until(lambda: u32(ring_name, SLEEPERS) == 1), writer.close()))
        closer.start()
        started = time.monotonic()
        assert reader.wait(timeout=30.0) is False
        assert time.monotonic() - started < 20
        closer.join()
        assert reader.stats().writer_state == "stopped"


@pytest.mark.parametrize("spin", [0.0, 0.0005])
def test_reader_keeps_up_with_a_paced_writer_in_another_process(ring_name: str,
                                                                spin: float) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    with shm.RingReader(ring_name, reader="paced") as reader:
        pid = os.fork()
        if pid == 0:
            try:
                with shm.RingWriter(ring_name) as writer:
                    for i in range(200):
                        writer.write(i.to_bytes(4, "little"))
                        time.sleep(0.0005)
            finally:
                os._exit(0)
        seqs = []
        while len(seqs) < 200:
            assert reader.wait(timeout=20.0, spin=spin)
            seqs.extend(record.seq for record in iter(reader.read, None))
        os.waitpid(pid, 0)
    assert seqs == list(range(1, 201))


# ----- get(): read, or wait and read, in one call -----------------------------------------
def test_get_hands_out_what_is_there_then_none_after_the_timeout(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name, reader="g") as reader:
        for payload in (b"a", b"bb", b"ccc"):
            writer.write(payload)
        assert [reader.get(0.0).payload for _ in range(3)] == [b"a", b"bb", b"ccc"]
        assert reader.get(timeout=0.01, spin=0.005) is None
        reader.commit()
        assert reader.next_seq == 4
    with shm.RingReader(ring_name, reader="g") as again:  # the commit covered all three
        assert again.get(timeout=0) is None


@pytest.mark.parametrize("spin", [0.0, 0.5])
def test_get_returns_the_record_another_process_writes(ring_name: str, spin: float) -> None:
    shm.RingWriter(ring_name, capacity=CAPACITY).close()
    reader = shm.RingReader(ring_name)
    pid = os.fork()
    if pid == 0:  # child: write once the parent waits (asleep on the futex, or spinning)
        try:
            writer = shm.RingWriter(ring_name)
            if spin:
                time.sleep(0.05)
            else:
                wait_until(lambda: u32(ring_name, SLEEPERS) == 1)
            writer.write(b"for get")
        finally:
            os._exit(0)
    record = reader.get(timeout=20.0, spin=spin)
    os.waitpid(pid, 0)
    assert record is not None and (record.seq, record.payload, record.lost) == (1, b"for get", 0)
    assert reader.get(timeout=0) is None
    reader.close()


def test_get_reports_a_lap_exactly_once(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY) as writer, \
            shm.RingReader(ring_name, reader="g") as reader:
        writer.write(b"first")
        assert reader.get(0).seq == 1
        assert reader.get(0) is None
        for seq in range(2, 2001):
            writer.write(seq.to_bytes(4, "little") * 10)
        oldest = writer.stats().oldest_seq
        assert 2 < oldest < 2000
        record = reader.get(1.0)
        assert (record.seq, record.lost) == (oldest, oldest - 2)
        rest = list(iter(lambda: reader.get(0), None))
        assert [r.seq for r in rest] == list(range(oldest + 1, 2001))
        assert all(r.lost == 0 for r in rest) and reader.lost == oldest - 2


def test_get_on_a_closed_reader_raises(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=CAPACITY):
        reader = shm.RingReader(ring_name)
        reader.close()
        with pytest.raises(ValueError, match="closed"):
            reader.get(0.01)
