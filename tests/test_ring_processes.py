"""Real processes: a writer and readers in separate processes, kill -9 included.

Every record's payload is derived from its sequence number (seq in bytes 0..7, then a slice
of a fixed random blob chosen by the seq), so readers check each record's content, not just
its count. The test process never holds a ring open across a fork; children attach
themselves. Waits poll ring stats against deadlines.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import struct
import time
from array import array
from collections.abc import Callable

import pytest

import shm

CTX = mp.get_context("fork")
BLOB = random.Random(2024).randbytes(1 << 16)
BLOB_VIEW = memoryview(BLOB)
STAMP = struct.Struct("<q")
DEADLINE = 120.0


def payload(seq: int) -> bytes:
    size = (seq * 2654435761) % 600
    start = (seq * 40503) % (len(BLOB) - 1024)
    if size < 8:
        return BLOB[start:start + size]
    return STAMP.pack(seq) + BLOB[start:start + size - 8]


def check_batch(batch: shm.Batch, bad: list[int]) -> None:
    """Append to ``bad`` the seq of every record whose payload is not payload(seq)."""
    raw = batch.data.obj  # the bytearray: startswith() compares in place, no copies
    offsets, lengths, first = batch.offsets, batch.lengths, batch.first_seq
    blob, unpack = BLOB_VIEW, STAMP.unpack_from
    for i in range(batch.count):
        seq = first + i
        size = (seq * 2654435761) % 600
        start = (seq * 40503) % (len(BLOB) - 1024)
        offset = offsets[i]
        if lengths[i] != size:
            bad.append(seq)
        elif size < 8:
            if not raw.startswith(blob[start:start + size], offset):
                bad.append(seq)
        elif unpack(raw, offset)[0] != seq or \
                not raw.startswith(blob[start:start + size - 8], offset + 8):
            bad.append(seq)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def attached_readers(name: str) -> int:
    return sum(r.attached for r in shm.ring_stats(name).readers)


# ---- child processes ---------------------------------------------------------------------

def write_records(name: str, total: int, max_lag: int, chunk: int = 256) -> None:
    """Write payload(seq) up to seq ``total``, continuing wherever the ring is; pace to
    the slowest reader when max_lag > 0."""
    with shm.RingWriter(name) as writer:
        seq = writer.next_seq
        while seq <= total:
            items = [payload(s) for s in range(seq, min(seq + chunk, total + 1))]
            while max_lag and writer.max_reader_lag() > max_lag:
                time.sleep(0.0001)
            assert writer.write_batch(b"".join(items), [len(i) for i in items]) == seq
            seq += len(items)


def read_records(name: str, reader: str, total: int, results: mp.Queue,
                 pause: tuple | None = None) -> None:
    """Read and check every record up to seq ``total``; report (reader, first seqs of each
    overrun, lost, bad seqs, gaps). ``pause=(after_seq, paused, resume)`` stalls once."""
    bad: list[int] = []
    overruns: list[tuple[int, int]] = []
    with shm.RingReader(name, reader=reader, start="oldest", batch_records=2048) as ring:
        expected = ring.next_seq
        while expected <= total:
            if pause and expected > pause[0]:
                pause[1].set()
                pause[2].wait()
                pause = None
            batch = ring.read_batch()
            if not batch.count:
                ring.wait(1.0, spin=0.0002)
                continue
            if batch.lost or batch.first_seq != expected:
                overruns.append((batch.first_seq, batch.lost))
            if batch.first_seq != expected + batch.lost:
                bad.append(-batch.first_seq)  # the seq jump does not match the lost count
            check_batch(batch, bad)
            expected = batch.first_seq + batch.count
            ring.commit()
        results.put((reader, overruns, ring.lost, bad[:20]))


def exactly_once_reader(name: str, out_path: str, total: int) -> None:
    """Process records, append their seqs to out_path, then commit. On start, drop output
    past the last commit (it will be delivered again): output + cursor stay in step."""
    with shm.RingReader(name, reader="exactly-once", start="oldest") as ring:
        committed = ring.next_seq - 1
        done = array("q")
        with open(out_path, "a+b") as file:
            file.seek(0)
            raw = file.read()
        done.frombytes(raw[:len(raw) // 8 * 8])
        keep = sum(1 for seq in done if seq <= committed)
        os.truncate(out_path, keep * 8)
        with open(out_path, "ab", buffering=0) as out:
            expected = committed + 1
            bad: list[int] = []
            while expected <= total and not bad:
                batch = ring.read_batch()
                if not batch.count:
                    ring.wait(1.0)
                    continue
                assert batch.first_seq == expected and batch.lost == 0
                check_batch(batch, bad)
                out.write(array("q", range(expected, expected + batch.count)).tobytes())
                expected += batch.count
                ring.commit()
            assert not bad


def run(target: Callable, *args: object) -> mp.Process:
    process = CTX.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def finish(processes: list[mp.Process], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, "processes still running at the deadline"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def collect(results: mp.Queue, count: int) -> dict[str, tuple]:
    return {item[0]: item[1:] for item in (results.get(timeout=DEADLINE) for _ in range(count))}


# ---- tests -------------------------------------------------------------------------------

def test_content_check_flags_a_record_that_differs(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=1 << 16) as writer, \
            shm.RingReader(ring_name) as reader:
        items = [payload(seq) for seq in range(1, 21)]
        items[6] = items[6][:-1] + bytes([items[6][-1] ^ 1])  # seq 7: last byte flipped
        items[11] = items[11][:-1]  # seq 12: one byte short
        writer.write_many(items)
        bad: list[int] = []
        check_batch(reader.read_batch(), bad)
    assert bad == [7, 12]


def stress(name: str, total: int) -> None:
    shm.RingWriter(name, capacity=1 << 22).close()
    results = CTX.Queue()
    readers = [run(read_records, name, f"r{i}", total, results) for i in range(3)]
    wait_until(lambda: attached_readers(name) == 3, "three readers")
    writer = run(write_records, name, total, 1 << 21)
    reports = collect(results, 3)
    finish([writer, *readers])
    for reader, (overruns, lost, bad) in reports.items():
        assert (overruns, lost, bad) == ([], 0, []), reader
    stats = shm.ring_stats(name)
    assert stats.last_seq == total
    assert all(r.committed_seq == total and r.lost == 0 for r in stats.readers)


def test_three_readers_get_every_record_intact_when_they_keep_up(ring_name: str) -> None:
    stress(ring_name, 2_000_000)


@pytest.mark.slow
def test_three_readers_get_four_million_records_intact(ring_name: str) -> None:
    stress(ring_name, 4_000_000)


def test_stalled_reader_gets_an_overrun_with_the_exact_lost_count(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=1 << 16).close()
    results, paused, resume = CTX.Queue(), CTX.Event(), CTX.Event()
    total = 20_000
    reader = run(read_records, ring_name, "stalled", total, results, (1000, paused, resume))
    wait_until(lambda: attached_readers(ring_name) == 1, "the reader")
    write_records(ring_name, 1000, 1 << 15, 16)  # paced: the reader reads all, then stalls
    assert paused.wait(DEADLINE)
    write_records(ring_name, total, 0)  # laps the stalled reader many times
    stats = shm.ring_stats(ring_name)
    resume.set()
    (overruns, lost, bad), = collect(results, 1).values()
    finish([reader])
    assert bad == []
    # It stalled after seq 1000 and resumes exactly at the oldest record still intact.
    assert overruns == [(stats.oldest_seq, stats.oldest_seq - 1001)]
    assert lost == stats.oldest_seq - 1001 > 0
    after = shm.ring_stats(ring_name).readers[0]
    assert (after.lost, after.overruns, after.committed_seq) == (lost, 1, total)


def test_lapped_reader_never_sees_a_torn_record(ring_name: str) -> None:
    """A small ring and an unpaced writer: the reader is lapped over and over while
    copying; every record it does deliver must be intact and every loss counted."""
    shm.RingWriter(ring_name, capacity=1 << 14).close()
    results = CTX.Queue()
    total = 1_000_000
    reader = run(read_records, ring_name, "lapped", total, results)
    wait_until(lambda: attached_readers(ring_name) == 1, "the reader")
    writer = run(write_records, ring_name, total, 0, 16)
    (overruns, lost, bad), = collect(results, 1).values()
    finish([writer, reader])
    assert bad == []  # no torn payload, and each seq jump equals its lost count
    assert len(overruns) > 0 and lost == sum(n for _, n in overruns)


def test_readers_continue_with_the_next_seq_after_the_writer_is_killed(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=1 << 20).close()
    results = CTX.Queue()
    total = 600_000
    readers = [run(read_records, ring_name, f"r{i}", total, results) for i in range(2)]
    wait_until(lambda: attached_readers(ring_name) == 2, "two readers")
    for target in (total // 4, total // 2):
        writer = run(write_records, ring_name, total, 1 << 19, 64)
        wait_until(lambda t=target: shm.ring_stats(ring_name).last_seq >= t, "progress")
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        stats = shm.ring_stats(ring_name)
        assert stats.writer_state == "dead" and stats.last_seq < total
    writer = run(write_records, ring_name, total, 1 << 19)
    reports = collect(results, 2)
    finish([writer, *readers])
    for reader, (overruns, lost, bad) in reports.items():
        assert (overruns, lost, bad) == ([], 0, []), reader  # 1..total, each once, intact
    assert shm.ring_stats(ring_name).writer_attach_count == 4


def test_restarted_reader_sees_every_seq_exactly_once(ring_name: str, tmp_path) -> None:
    shm.RingWriter(ring_name, capacity=1 << 20).close()
    out = str(tmp_path / "seen.bin")
    total = 400_000
    reader = run(exactly_once_reader, ring_name, out, total)
    wait_until(lambda: attached_readers(ring_name) == 1, "the reader")
    writer = run(write_records, ring_name, total, 1 << 19)
    rng = random.Random(7)
    for fraction in (0.2, 0.45, 0.7):
        target = int(total * (fraction + rng.random() * 0.1))
        wait_until(lambda t=target: shm.ring_stats(ring_name).readers[0].next_seq >= t,
                   "reader progress")
        os.kill(reader.pid, signal.SIGKILL)  # anywhere: mid-batch, mid-write, mid-commit
        reader.join()
        reader = run(exactly_once_reader, ring_name, out, total)
    finish([writer, reader])
    seen = array("q")
    with open(out, "rb") as file:
        seen.frombytes(file.read())
    assert seen == array("q", range(1, total + 1))
    assert shm.ring_stats(ring_name).readers[0].committed_seq == total
