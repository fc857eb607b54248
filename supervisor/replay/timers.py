"""An asyncio event loop whose timers keep sub-millisecond deadlines.

The pump sleeps until the next point of its ``tick`` grid. asyncio's default selector on
Linux is epoll, and Python 3.11 hands epoll its timeout in whole milliseconds, rounded
up: every wait of 0.1-0.9 ms lasted a full millisecond or more. A 1 ms tick then ran at
about 1.7 ms, and every burst (``rate * period`` frames) was 70 % larger than configured.

:class:`FineTimeoutSelector` keeps epoll for readiness but waits a sub-millisecond timeout
in ``select()`` on the epoll descriptor itself (readable once any registered descriptor
is ready), whose timeout has microsecond resolution; then it collects the events with a
zero-timeout epoll call. Whole-millisecond and longer waits take the plain epoll path.
"""

from __future__ import annotations

import asyncio
import select
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_FD_SETSIZE = 1024  # select() takes descriptors below this only


class FineTimeoutSelector(selectors.EpollSelector):
    """An epoll selector whose ``select(timeout)`` honours fractions of a millisecond."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            whole_ms = timeout * 1e3
            if whole_ms != int(whole_ms) and self._selector.fileno() < _FD_SETSIZE:
                # the epoll fd is readable when an event is pending: wait on it with
                # select()'s microsecond timeout, then read the events without blocking
                select.select((self._selector,), (), (), timeout)
                timeout = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop over :class:`FineTimeoutSelector`."""
    return asyncio.SelectorEventLoop(FineTimeoutSelector())


def run(main: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` on a loop from :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
