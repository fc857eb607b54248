"""Applies the soak's fault plan to the running system and logs every step with its time.

Network faults are armed through the replay exchange's control API (``POST
/_control/fault``, one fault, ``count`` 1); the soak then watches ``GET /_control/faults``
and records when each one fired (it disappears from the armed list). Process faults are
signals sent inside the container to a unit's current main PID, and only to a unit that is
``active`` at that moment (a unit still restarting from the previous fault is skipped,
and the skip is logged): ``kill -9``; ``SIGSTOP`` then ``SIGCONT`` after the planned
seconds; ``SIGSTOP`` held, then a check ``watchdog_sec + abort_sec + margin`` later that
systemd's watchdog has replaced the process (if not, it is continued and reported).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from soak.plan import Action
from supervisor.replay.harness import control

log = logging.getLogger("soak")


class Lab(Protocol):
    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> Any: ...

    def show(self, unit: str, *props: str) -> dict[str, str]: ...


@dataclass
class Entry:
    """One fault as it happened (the JSON report lists them all)."""

    planned: float  # seconds after the fault phase started
    at: float  # wall clock, s
    action: Action
    outcome: str  # armed | signalled | skipped: <why> | error: <why>
    fault_id: int = 0  # replay fault id
    pid: int = 0  # signalled process (container PID)
    applied_at: float = 0.0  # wall clock the replay fault was seen fired (0: not seen)
    notes: list[str] = field(default_factory=list)

    def to_dict(self, start: float = 0.0) -> dict[str, Any]:
        """As JSON; ``t`` is seconds after ``start`` (the fault phase's wall-clock start)."""
        d: dict[str, Any] = {"t": round(self.at - start, 3), **self.action.to_dict(),
                             "outcome": self.outcome}
        if self.fault_id:
            d["fault_id"] = self.fault_id
            d["fired_after_s"] = round(self.applied_at - self.at, 3) if self.applied_at \
                else None
        if self.pid:
            d["pid"] = self.pid
        if self.notes:
            d["notes"] = self.notes
        return d


class Injector:
    """Executes actions; call :meth:`due` often (it runs follow-ups and polls fired faults).

    Parameters
    ----------
    lab : Lab
        Runs commands inside the container (:class:`tests.lab.SystemdLab`).
    replay_url : str
        The replay exchange, e.g. ``http://127.0.0.1:18090``.
    watchdog_sec, abort_sec : float
        The units' ``WatchdogSec=`` and the time systemd allows the watchdog's SIGABRT
        before SIGKILL (``TimeoutAbortSec=``, defaulting to ``TimeoutStopSec=``).
    """

    def __init__(self, lab: Lab, replay_url: str, watchdog_sec: float = 30.0,
                 abort_sec: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        self.lab = lab
        self.url = replay_url.rstrip("/")
        self.watchdog_sec = watchdog_sec
        self.abort_sec = abort_sec
        self.clock = clock
        self.entries: list[Entry] = []
        self.violations: list[str] = []
        self._armed: dict[int, Entry] = {}
        self._stopped: dict[int, Entry] = {}  # pid -> entry, until continued or checked
        self._later: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0
        self._next_poll = 0.0

    # ----- actions ------------------------------------------------------------------------
    def apply(self, action: Action, planned: float) -> Entry:
        entry = Entry(planned, self.clock(), action, "")
        try:
            if action.is_process:
                self._signal(entry)
            else:
                self._arm(entry)
        except Exception as exc:  # noqa: BLE001 - a failed injection is logged, not fatal
            entry.outcome = f"error: {type(exc).__name__}: {exc}"[:300]
        self.entries.append(entry)
        log.info("t=%7.1fs %-60s %s", planned, action.describe(), entry.outcome
                 + (f" pid={entry.pid}" if entry.pid else "")
                 + (f" id={entry.fault_id}" if entry.fault_id else ""))
        return entry

    def _arm(self, entry: Entry) -> None:
        a = entry.action
        body = {"venue": a.instance, "kind": a.kind, "symbol": a.symbol, "count": 1,
                **a.params}
        answer = control(self.url + "/_control/fault", "POST", body)
        entry.fault_id = int(answer["fault"]["id"])
        entry.outcome = "armed"
        self._armed[entry.fault_id] = entry

    def _signal(self, entry: Entry) -> None:
        a = entry.action
        props = self.lab.show(a.unit, "ActiveState", "SubState", "MainPID")
        pid = int(props.get("MainPID") or 0)
        if props.get("ActiveState") != "active" or not pid:
            entry.outcome = (f"skipped: {a.unit} is {props.get('ActiveState')}/"
                             f"{props.get('SubState')}")
            return
        entry.pid = pid
        if a.kind == "kill9":
            self.lab.run("kill", "-KILL", str(pid))
        else:
            self.lab.run("kill", "-STOP", str(pid))
            self._stopped[pid] = entry
            if a.kind == "stop_short":
                self.later(float(a.params["seconds"]), lambda: self._cont(entry))
            else:
                self.later(self.watchdog_sec + self.abort_sec + 20.0,
                           lambda: self._check_watchdog(entry))
        entry.outcome = "signalled"

    def _cont(self, entry: Entry) -> None:
        self._stopped.pop(entry.pid, None)
        proc = self.lab.run("kill", "-CONT", str(entry.pid), check=False)
        entry.notes.append("continued" if proc.returncode == 0 else "gone before SIGCONT")

    def _check_watchdog(self, entry: Entry) -> None:
        """The watchdog must have replaced a process stopped longer than WatchdogSec."""
        self._stopped.pop(entry.pid, None)
        state = self.lab.run("ps", "-o", "stat=", "-p", str(entry.pid), check=False)
        if state.returncode == 0 and state.stdout.strip().startswith("T"):
            self.lab.run("kill", "-CONT", str(entry.pid), check=False)
            msg = (f"{entry.action.unit}: pid {entry.pid} still stopped "
                   f"{self.watchdog_sec + self.abort_sec + 20:g}s after SIGSTOP: the watchdog "
                   f"did not fire (continued it)")
            entry.notes.append("watchdog did not fire")
            self.violations.append(msg)
            log.error("%s", msg)
        else:
            entry.notes.append("replaced by the watchdog")

    # ----- time ---------------------------------------------------------------------------
    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._later, (self.clock() + delay, self._n, fn))

    @property
    def pending(self) -> int:
        """Follow-ups not run yet (SIGCONTs, watchdog checks)."""
        return len(self._later)

    def next_due(self) -> float:
        return self._later[0][0] if self._later else float("inf")

    def due(self) -> None:
        """Run the follow-ups that are due, and (at most once a second) poll fired faults."""
        now = self.clock()
        while self._later and self._later[0][0] <= now:
            _, _, fn = heapq.heappop(self._later)
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                log.error("follow-up failed: %s", exc)
        if self._armed and now >= self._next_poll:
            self._next_poll = now + 1.0
            self.poll_fired()

    def poll_fired(self) -> None:
        try:
            armed = {int(f["id"]) for f in control(self.url + "/_control/faults")["faults"]}
        except (OSError, ValueError) as exc:
            log.warning("cannot poll the replay's faults: %s", exc)
            return
        now = self.clock()
        for fid in [f for f in self._armed if f not in armed]:
            self._armed.pop(fid).applied_at = now

    def finish(self) -> int:
        """Note which faults never fired and disarm them; returns how many.

        Call once :attr:`pending` is 0 (the run loop waits for the follow-ups).
        """
        self.poll_fired()
        for entry in self._armed.values():
            entry.notes.append("never fired (disarmed at the end)")
        unfired = len(self._armed)
        self._armed.clear()
        try:
            control(self.url + "/_control/fault", "DELETE")
        except (OSError, ValueError) as exc:
            log.warning("cannot clear the replay's faults: %s", exc)
        return unfired

    def release(self) -> None:
        """On an aborted run: continue every process this injector may have left stopped."""
        for pid in list(self._stopped):
            self.lab.run("kill", "-CONT", str(pid), check=False)
        self._stopped.clear()
        self._later.clear()


__all__ = ["Entry", "Injector"]
