"""systemd's view of our units, read with ``systemctl show`` (no D-Bus binding needed).

One ``systemctl show`` call per refresh asks for every unit at once; its answer is one
``Key=Value`` block per unit, blocks separated by a blank line, in the order asked::

    Id=collector@okx_spot.service
    LoadState=loaded
    ActiveState=active            # active | reloading | inactive | failed | activating | ...
    SubState=running
    Result=success                # why it last stopped: exit-code | signal | watchdog | ...
    NRestarts=2                   # automatic restarts (Restart=) since the last manual start
    MainPID=4242
    ActiveEnterTimestamp=Mon 2026-11-23 11:20:22 UTC
    ActiveEnterTimestampMonotonic=123456789   # µs of CLOCK_MONOTONIC, locale-free
    UnitFileState=enabled         # enabled (e.g. systemctl enable collector@okx_spot) | ...

``ActiveEnterTimestampMonotonic`` is what we turn into a wall-clock "since": the pretty
timestamp depends on systemd's version, locale and timezone, the monotonic one does not.

Machines without systemd as PID 1 (containers, these dev VMs, ``marketprism run``) have a
``systemctl`` binary that cannot talk to anything; :func:`systemd_booted` detects that the
way ``sd_booted(3)`` does, and the aggregator reports "systemd unavailable" instead of
running the command.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
              "ActiveEnterTimestamp", "ActiveEnterTimestampMonotonic", "UnitFileState")
UNAVAILABLE = "systemd unavailable"
ROLES = ("collector", "analyzer", "nats-bridge")
# ActiveState values systemd defines (a bounded label set for metrics).
ACTIVE_STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating",
                 "maintenance")


class UnitState(NamedTuple):
    """One unit as systemd reports it."""

    unit: str
    load_state: str  # "loaded", or "not-found" for an instance never set up
    active_state: str
    sub_state: str
    result: str
    n_restarts: int
    main_pid: int  # 0 when not running
    since: float | None  # wall-clock epoch seconds of ActiveEnterTimestamp, None if never
    since_text: str  # systemd's own rendering of it
    unit_file_state: str = ""  # "enabled" once `systemctl enable`d; "disabled", "static"...

    @property
    def managed(self) -> bool:
        """systemd runs (or is set to run) this unit: enabled, or anything but inactive."""
        return self.unit_file_state in ("enabled", "enabled-runtime") or \
            self.active_state not in ("inactive", "")

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


class SystemdView(NamedTuple):
    """Unit states of one refresh: ``available`` False means no systemd at all."""

    available: bool
    error: str  # "" when the query worked; otherwise why there are no states
    units: dict[str, UnitState]  # by unit name


def systemd_booted(run_dir: str = "/run/systemd/system") -> bool:
    """True when PID 1 is systemd: it alone creates ``/run/systemd/system`` (sd_booted(3))."""
    return os.path.isdir(run_dir)


def service_mode(environ: Mapping[str, str] | None = None, booted: bool | None = None
                 ) -> tuple[str, str]:
    """("systemd", "") when this process is a systemd service, else ("foreground", why not).

    A service has ``$INVOCATION_ID`` (systemd >= 232 sets it for every unit it starts).
    Under ``marketprism run`` on a systemd machine the units are not what runs the
    instances, so their (inactive) states must not decide health.
    """
    env = os.environ if environ is None else environ
    booted = systemd_booted() if booted is None else booted
    if not booted:
        return "foreground", f"{UNAVAILABLE} (PID 1 is not systemd)"
    if not env.get("INVOCATION_ID"):
        return "foreground", f"{UNAVAILABLE} (foreground mode: not started by systemd)"
    return "systemd", ""


def unit_name(role: str, instance: str) -> str:
    """``collector@okx_spot.service`` for role ``collector`` and instance ``okx_spot``."""
    return f"{role}@{instance}.service"


def parse_show(text: str, now_wall: float | None = None,
               now_mono: float | None = None) -> dict[str, UnitState]:
    """Parse ``systemctl show -p ...`` output for several units into states by unit name.

    ``now_wall``/``now_mono`` (seconds) convert the monotonic timestamp to wall clock;
    tests pass them to pin the result.
    """
    wall = time.time() if now_wall is None else now_wall
    mono = time.monotonic() if now_mono is None else now_mono
    states: dict[str, UnitState] = {}
    for block in text.strip().split("\n\n"):
        props: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        unit = props.get("Id")
        if not unit:
            continue
        enter_us = _int(props.get("ActiveEnterTimestampMonotonic"))
        since = wall - (mono - enter_us / 1e6) if enter_us > 0 else None
        states[unit] = UnitState(
            unit=unit, load_state=props.get("LoadState", ""),
            active_state=props.get("ActiveState", ""), sub_state=props.get("SubState", ""),
            result=props.get("Result", ""), n_restarts=_int(props.get("NRestarts")),
            main_pid=_int(props.get("MainPID")), since=since,
            since_text=props.get("ActiveEnterTimestamp", ""),
            unit_file_state=props.get("UnitFileState", ""),
        )
    return states


def _int(value: str | None) -> int:
    """systemd prints "[not set]" or "" for absent numbers; those are 0."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


class UnitQuery:
    """Asks systemd for the states of a set of units, without blocking the event loop.

    Usage::

        query = UnitQuery()
        view = await query.fetch(["collector@okx_spot.service"])
        view.units["collector@okx_spot.service"].active_state  # "active"

    ``booted`` and ``systemctl`` are injectable so tests can drive the parsing path with a
    stand-in binary; by default they come from :func:`systemd_booted` and ``$PATH``.
    """

    def __init__(self, booted: bool | None = None, systemctl: str | None = None,
                 timeout: float = 5.0, reason: str = "") -> None:
        self.booted = systemd_booted() if booted is None else booted
        self.systemctl = systemctl or shutil.which("systemctl") or ""
        self.timeout = timeout
        self._reason = reason  # why unit states are not wanted, when the caller knows

    @property
    def available(self) -> bool:
        return self.booted and bool(self.systemctl)

    def unavailable_reason(self) -> str:
        if self._reason:
            return self._reason
        if not self.booted:
            return f"{UNAVAILABLE} (PID 1 is not systemd)"
        return f"{UNAVAILABLE} (no systemctl binary)"

    async def fetch(self, units: Iterable[str]) -> SystemdView:
        """One ``systemctl show`` for all ``units``; failures become ``error``, never raise."""
        names = list(units)
        if not self.available:
            return SystemdView(False, self.unavailable_reason(), {})
        if not names:
            return SystemdView(True, "", {})
        args = [self.systemctl, "show", "--no-pager", "-p", ",".join(PROPERTIES), "--", *names]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return SystemdView(True, f"cannot run systemctl: {exc.strerror}", {})
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return SystemdView(True, f"systemctl show timed out after {self.timeout:g}s", {})
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()
            return SystemdView(True, f"systemctl show failed ({proc.returncode}): "
                               f"{detail[-1] if detail else 'no message'}", {})
        return SystemdView(True, "", parse_show(out.decode(errors="replace")))


__all__ = ["UnitState", "SystemdView", "UnitQuery", "parse_show", "systemd_booted",
           "service_mode", "unit_name", "PROPERTIES", "UNAVAILABLE", "ROLES", "ACTIVE_STATES"]
