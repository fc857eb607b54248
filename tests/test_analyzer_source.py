"""RingSource: polling the instance's ring, and coalescing wake-ups while records keep coming."""

from __future__ import annotations

import threading

import pytest

import shm
from supervisor.analyzer.settings import parse_settings
from supervisor.analyzer.source import RingSource
from supervisor.config import ConfigError
from tests.test_ring_wait import FUTEX_WORD, SLEEPERS, u32, wait_until


def test_a_busy_stream_coalesces_instead_of_sleeping_on_the_futex(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=1 << 16) as writer:
        src = RingSource(ring_name, "an", 64, coalesce=0.001)
        try:
            for i in range(3):
                writer.write(b"r%d" % i)
            batch = src.poll(1.0)
            assert batch is not None and batch.count == 3 and src.busy
            # a record already there: read at once
            writer.write(b"late")
            batch = src.poll(1.0)
            assert batch is not None and batch.first_seq == 4
            assert (src.waits, src.busy) == (0, True)
            assert src.poll(0.01) is None  # busy: coalesce first, then the futex, then none
            assert (src.coalesced, src.waits, src.busy) == (1, 1, False)
            assert src.poll(0.01) is None  # idle: straight to the futex
            assert (src.coalesced, src.waits) == (1, 2)
            src.commit()
            assert src.committed_seq == 4
        finally:
            src.reader.close()


def test_coalescing_off_waits_on_the_futex_each_time(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=1 << 16) as writer:
        src = RingSource(ring_name, "an", 64)
        try:
            writer.write(b"x")
            assert src.poll(1.0).count == 1
            assert src.poll(0.01) is None
            assert (src.coalesced, src.waits) == (0, 1)
        finally:
            src.reader.close()


def test_wake_coalesce_is_a_non_negative_number_of_seconds() -> None:
    assert parse_settings({}).wake_coalesce == 0.0  # off: the lowest latency
    assert parse_settings({"wake_coalesce": 0.0002}).wake_coalesce == 0.0002
    with pytest.raises(ConfigError, match="wake_coalesce"):
        parse_settings({"wake_coalesce": -1})
    with pytest.raises(ConfigError, match="wake_coalesce"):
        parse_settings({"wake_coalesce": "fast"})


@pytest.mark.parametrize("spin, wakes_issued", [(0.0, 1), (30.0, 0)])
def test_ring_spin_catches_the_next_record_without_a_futex_wake(
        ring_name: str, spin: float, wakes_issued: int) -> None:
    """Spinning, the analyzer never registers as a sleeper, so the writer (the collector)
    publishes without a FUTEX_WAKE; without spin the same record costs one."""
    with shm.RingWriter(ring_name, capacity=1 << 16) as writer:
        src = RingSource(ring_name, "an", 64, spin=spin)
        try:
            before = u32(ring_name, FUTEX_WORD)  # the writer bumps it for every FUTEX_WAKE
            got: list = []
            poller = threading.Thread(target=lambda: got.append(src.poll(30.0)))
            poller.start()
            if spin:  # spinning for 30 s, it must not register as a sleeper meanwhile
                pause = threading.Event()
                for _ in range(200):
                    assert u32(ring_name, SLEEPERS) == 0
                    pause.wait(0.001)
            else:  # the write must find the poller asleep on the futex
                wait_until(lambda: u32(ring_name, SLEEPERS) == 1)
            writer.write(b"next")
            poller.join(30.0)
            assert not poller.is_alive() and got[0] is not None and got[0].count == 1
            assert u32(ring_name, FUTEX_WORD) - before == wakes_issued
        finally:
            src.reader.close()


def test_ring_spin_is_a_non_negative_number_of_seconds() -> None:
    assert parse_settings({}).ring_spin == 0.0
    assert parse_settings({"ring_spin": 0.0002}).ring_spin == 0.0002
    with pytest.raises(ConfigError, match="ring_spin"):
        parse_settings({"ring_spin": -0.1})
