"""The replay's event loop: sub-millisecond timer waits, readiness reported as by epoll."""

from __future__ import annotations

import asyncio
import selectors
import socket
import statistics
import threading
import time

import pytest

from supervisor.replay import timers


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def sleep_durations(loop_factory, seconds: float, n: int = 21) -> list[float]:
    async def body() -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            out.append(time.perf_counter() - t0)
        return out
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(body())


def test_a_sub_millisecond_sleep_ends_before_the_next_whole_millisecond():
    # epoll alone rounds 0.2 ms up to 1 ms: every one of these sleeps would last >= 1 ms
    took = sleep_durations(timers.new_event_loop, 0.0002)
    assert min(took) >= 0.0002
    assert statistics.median(took) < 0.0009, took


def test_without_select_for_its_descriptor_it_falls_back_to_whole_milliseconds(monkeypatch):
    monkeypatch.setattr(timers, "_FD_SETSIZE", 0)  # as if the epoll fd were >= FD_SETSIZE
    took = sleep_durations(timers.new_event_loop, 0.0002, n=5)
    assert min(took) >= 0.001 - 1e-4  # epoll's rounding, not an early return


def test_a_fine_wait_returns_a_descriptor_already_ready(pair):
    a, b = pair
    sel = timers.FineTimeoutSelector()
    try:
        sel.register(a, selectors.EVENT_READ, "a")
        b.send(b"x")
        t0 = time.perf_counter()
        events = sel.select(0.2503)
        assert [(key.data, mask) for key, mask in events] == [("a", selectors.EVENT_READ)]
        assert time.perf_counter() - t0 < 0.25
    finally:
        sel.close()


def test_a_fine_wait_wakes_when_a_descriptor_becomes_ready(pair):
    a, b = pair
    sel = timers.FineTimeoutSelector()
    sender = threading.Timer(0.01, b.send, (b"x",))
    try:
        sel.register(a, selectors.EVENT_READ, "a")
        sender.start()
        t0 = time.perf_counter()
        events = sel.select(5.0003)
        assert [key.data for key, _ in events] == ["a"]
        assert time.perf_counter() - t0 < 5.0
    finally:
        sender.join()
        sel.close()


def test_a_fine_wait_with_nothing_ready_times_out_empty(pair):
    a, _ = pair
    sel = timers.FineTimeoutSelector()
    try:
        sel.register(a, selectors.EVENT_READ, "a")
        t0 = time.perf_counter()
        assert sel.select(0.0004) == []
        assert time.perf_counter() - t0 >= 0.0004
        assert sel.select(0) == []
    finally:
        sel.close()
