"""User plug-ins: a function that receives the instance's events in batches.

Configuration (``[instances.X.analyzer]``): ``plugin = "package.module:function"`` or a path
to a ``.py`` file (its ``analyze`` function, or ``file.py:function``). Options for the plug-in
go in ``settings.plugin_options`` and reach its ``setup``. A spec that names nothing
importable is a configuration error (exit 78).

The module may define, besides the function::

    KINDS = {"trade", "book_delta"}   # event kinds to receive (default: every kind)

    def setup(ctx: PluginContext) -> None:       # once, e.g. load an ONNX model
    def on_start(last_committed_seq: int | None) -> None:  # before the first batch
    def analyze(batch: PluginBatch) -> Iterable[dict] | None:
    def close() -> None:                          # on a clean stop

Contract (what the analyzer guarantees, and what a plug-in must do for exactly-once output)

- **Order and sequence.** ``batch.events[i]`` is ring record ``batch.seqs[i]``; sequences
  only grow. A gap between two batches' sequences is data the ring lost (the analyzer was
  lapped; it logs and counts the exact number) or records of kinds not in ``KINDS``.
- **Commit.** After ``analyze`` returns for every event read in one ring batch, the analyzer
  commits its durable cursor. A crash (``os.abort()``, segfault, OOM kill, watchdog kill)
  before that commit makes the restarted analyzer deliver those events again.
- **Rollback.** ``on_start(last_committed_seq)`` is called after ``setup`` and before any
  batch: the plug-in must discard output it wrote for sequences above ``last_committed_seq``
  (e.g. truncate a journal at that point). Then every sequence reaches its output exactly
  once across any number of crashes, as long as the ring did not lap the analyzer. In
  ZeroMQ mode there is no durable cursor: ``last_committed_seq`` is ``None`` (at-most-once).
- **Errors.** Raise :class:`PluginEventError` (``raise PluginEventError(event) from exc``)
  to say "everything before ``event`` in this batch is done, this one is bad": it is logged
  and skipped, and the rest of the batch is delivered in a new call. Any other exception
  means "nothing of this call happened": the analyzer re-delivers the call's events in halves
  until it isolates the offending event(s), logs each with its sequence, and skips them. A
  plug-in with visible side effects should therefore either raise ``PluginEventError`` or
  ignore sequences it has already handled.
- **Results.** Dicts returned by ``analyze`` are published on the analyzer's ZeroMQ PUB as
  ``instance/plugin/<symbol>`` with ``ring_seq`` (the batch's last sequence unless the dict
  sets it), so subscribers can de-duplicate after a restart.
- **Failure modes.** A plug-in that hangs stops the processing loop, hence the watchdog
  pings: systemd kills and restarts the analyzer (its stack is logged after
  ``plugin_timeout``). Aborts and segfaults print a Python traceback (faulthandler) to the
  journal. ``MemoryError`` is not treated as a bad event: the analyzer logs a fatal line with
  its memory figures and exits 1; a plug-in that grows past ``MemoryMax=`` is killed by the
  kernel. Either way systemd restarts the analyzer, which resumes from the commit. A
  ``setup`` or ``on_start`` that raises leaves the analyzer running the built-in analysis
  only, with ``degraded`` in its STATUS line.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from supervisor.events import Event, Kind

NONE = "none"
OK = "ok"
DEGRADED = "degraded"


class PluginEventError(Exception):
    """Raised by a plug-in: ``event`` is bad; the events before it in the batch are done."""

    def __init__(self, event: Event, message: str = "") -> None:
        super().__init__(message or f"bad event {event!r}"[:200])
        self.event = event


class PluginSpecError(Exception):
    """The ``plugin`` setting names nothing loadable (a configuration error)."""


@dataclass(frozen=True)
class PluginContext:
    """What ``setup`` receives."""

    instance: str
    options: Mapping[str, Any]  # settings.plugin_options, untouched
    state_dir: str  # a place for the plug-in's own files (journals, caches)
    mode: str  # "ring" (exactly-once capable) or "zmq"
    log: logging.Logger


class PluginBatch(NamedTuple):
    instance: str
    events: Sequence[Event]
    seqs: Sequence[int]  # ring sequence of each event


@dataclass
class Plugin:
    name: str  # the spec, for logs
    analyze: Callable[[PluginBatch], Iterable[dict[str, Any]] | None]
    setup: Callable[[PluginContext], None] | None = None
    on_start: Callable[[int | None], None] | None = None
    close: Callable[[], None] | None = None
    kinds: frozenset[int] = frozenset(int(k) for k in Kind)


def load_plugin(spec: str) -> Plugin | None:
    """Resolve a plug-in spec; ``None`` for ``""``.

    Raises
    ------
    PluginSpecError
        The module, file or function does not exist (fix the config).
    Exception
        Anything the module raised while being imported (a broken plug-in: the caller runs
        degraded).
    """
    if not spec:
        return None
    target, _, func = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if target.endswith(".py") or os.sep in target:
        module = _load_file(target)
        func = func or "analyze"
    else:
        if not func:
            raise PluginSpecError(f"plugin {spec!r}: expected 'package.module:function' or a "
                                  f"path to a .py file")
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
                raise PluginSpecError(f"plugin {spec!r}: no module named {exc.name!r}") from None
            raise
    analyze: Any = module
    for part in func.split("."):
        analyze = getattr(analyze, part, None)
        if analyze is None:
            raise PluginSpecError(f"plugin {spec!r}: {module.__name__} has no {func!r}")
    if not callable(analyze):
        raise PluginSpecError(f"plugin {spec!r}: {func!r} is not callable")
    kinds = getattr(module, "KINDS", None)
    plugin = Plugin(spec, analyze, getattr(module, "setup", None),
                    getattr(module, "on_start", None), getattr(module, "close", None))
    if kinds is not None:
        try:
            plugin.kinds = frozenset(int(k) if isinstance(k, int) else int(Kind[k.upper()])
                                     for k in kinds)
        except (KeyError, AttributeError, ValueError) as exc:
            raise PluginSpecError(f"plugin {spec!r}: bad KINDS {kinds!r}: {exc}") from None
    return plugin


def _load_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise PluginSpecError(f"plugin file {path!r} does not exist")
    name = "marketprism_plugin_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginSpecError(f"plugin file {path!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class PluginRunner:
    """Calls the plug-in, isolates failing events, and keeps its state for STATUS/stats."""

    def __init__(self, plugin: Plugin | None, instance: str, log: logging.Logger,
                 error_log_interval: float = 10.0) -> None:
        self.plugin = plugin
        self.instance = instance
        self.log = log
        self.state = NONE if plugin is None else OK
        self.reason = ""  # why degraded
        self.calls = 0
        self.errors = 0  # events skipped because the plug-in failed on them
        self.results = 0
        self.busy_since = 0.0  # monotonic start of the call in progress (0: idle)
        self.busy_seqs = (0, 0)
        self._error_interval = error_log_interval
        self._error_logged = 0.0
        self._errors_quiet = 0

    @property
    def active(self) -> bool:
        return self.state == OK

    def start(self, ctx: PluginContext, last_committed_seq: int | None) -> None:
        """``setup`` then ``on_start``; a failure of either degrades, never raises."""
        p = self.plugin
        if p is None or self.state != OK:
            return
        step = "setup"
        try:
            if p.setup is not None:
                p.setup(ctx)
            step = "on_start"
            if p.on_start is not None:
                p.on_start(last_committed_seq)
        except Exception as exc:
            self.degrade(f"{step} failed: {type(exc).__name__}: {exc}", exc)
            return
        self.log.info("plugin %s ready (kinds: %s; resuming after seq %s)", p.name,
                      ",".join(Kind(k).name.lower() for k in sorted(p.kinds)),
                      last_committed_seq)

    def degrade(self, reason: str, exc: BaseException | None = None) -> None:
        self.state = DEGRADED
        self.reason = reason
        name = self.plugin.name if self.plugin else "?"
        self.log.error("plugin %s disabled: %s; running the built-in analysis only "
                       "(degraded)", name, reason, exc_info=exc)

    def run(self, events: list[Event], seqs: list[int]) -> list[dict[str, Any]]:
        """Deliver one batch; returns the plug-in's results (each with ``ring_seq``)."""
        out: list[dict[str, Any]] = []
        if not events or self.plugin is None or self.state != OK:
            return out
        analyze = self.plugin.analyze
        stack = [(0, len(events))]
        while stack:
            lo, hi = stack.pop()
            if lo >= hi:
                continue
            ev = events if lo == 0 and hi == len(events) else events[lo:hi]
            sq = seqs if ev is events else seqs[lo:hi]
            self.busy_seqs = (sq[0], sq[-1])
            self.busy_since = time.monotonic()
            self.calls += 1
            try:
                res = analyze(PluginBatch(self.instance, ev, sq))
            except MemoryError:
                # Not the event's fault: let the process die (resource report in the journal)
                # and restart with its memory back, resuming from the commit.
                raise
            except PluginEventError as exc:
                i = _find(events, exc.event, lo, hi)
                if i is not None:
                    self._skip(events[i], seqs[i], exc)
                    stack.append((i + 1, hi))
                    continue
                self._split(stack, lo, hi, events, seqs, exc)
                continue
            except Exception as exc:
                self._split(stack, lo, hi, events, seqs, exc)
                continue
            finally:
                self.busy_since = 0.0
            if res:
                last = sq[-1]
                for r in res:
                    if isinstance(r, dict):
                        r.setdefault("ring_seq", last)
                        out.append(r)
        self.results += len(out)
        return out

    def _split(self, stack: list[tuple[int, int]], lo: int, hi: int, events: list[Event],
               seqs: list[int], exc: Exception) -> None:
        if hi - lo == 1:
            self._skip(events[lo], seqs[lo], exc)
            return
        mid = (lo + hi) // 2
        stack.append((mid, hi))
        stack.append((lo, mid))  # popped first: order is kept

    def _skip(self, event: Event, seq: int, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._error_logged < self._error_interval:
            self._errors_quiet += 1
            return
        quiet, self._errors_quiet = self._errors_quiet, 0
        self._error_logged = now
        more = f" (+{quiet} more skipped since the last report)" if quiet else ""
        self.log.error("plugin %s failed on ring seq %d, event skipped: %s: %s; event: %s%s",
                       self.plugin.name if self.plugin else "?", seq, type(exc).__name__, exc,
                       repr(event)[:500], more, exc_info=exc)

    def stop(self) -> None:
        p = self.plugin
        if p is not None and p.close is not None and self.state == OK:
            try:
                p.close()
            except Exception as exc:
                self.log.error("plugin %s close failed: %s", p.name, exc, exc_info=exc)

    def stats(self) -> dict[str, Any]:
        return {"plugin": self.plugin.name if self.plugin else "", "state": self.state,
                "reason": self.reason, "calls": self.calls, "errors": self.errors,
                "results": self.results}


def _find(events: list[Event], event: Event, lo: int, hi: int) -> int | None:
    for i in range(lo, hi):
        if events[i] is event:
            return i
    for i in range(lo, hi):
        if events[i] == event:
            return i
    return None


class HangWatch(threading.Thread):
    """Logs the stack of a plug-in call that runs longer than ``timeout``.

    Diagnostics only: the watchdog pings still come from the processing loop, which a hung
    plug-in stops, so systemd does the killing. This thread makes sure the journal says
    where the plug-in was stuck before that happens.
    """

    def __init__(self, runner: PluginRunner, timeout: float, log: logging.Logger) -> None:
        super().__init__(name="plugin-hang-watch", daemon=True)
        self.runner = runner
        self.timeout = timeout
        self.log = log
        self._stop_event = threading.Event()
        self._main = threading.main_thread().ident

    def run(self) -> None:
        reported = 0.0
        while not self._stop_event.wait(min(self.timeout / 4, 0.5)):
            since = self.runner.busy_since
            if since and since != reported and time.monotonic() - since > self.timeout:
                reported = since
                frame = sys._current_frames().get(self._main)  # noqa: SLF001
                stack = "".join(traceback.format_stack(frame)) if frame else "?"
                first, last = self.runner.busy_seqs
                self.log.error("plugin %s has been running for more than %.1fs on ring seq "
                               "%d..%d (the watchdog will restart the analyzer); stack: %s",
                               self.runner.plugin.name if self.runner.plugin else "?",
                               self.timeout, first, last,
                               stack.strip().replace("\n", " | "))

    def stop(self) -> None:
        self._stop_event.set()


__all__ = ["PluginEventError", "PluginSpecError", "PluginContext", "PluginBatch", "Plugin",
           "PluginRunner", "HangWatch", "load_plugin", "NONE", "OK", "DEGRADED"]
