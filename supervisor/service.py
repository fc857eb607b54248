"""Service glue shared by every marketprism daemon: systemd notify, names, logs, resources.

systemd supervises; this module only tells it the truth:

- :class:`Notifier` sends ``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1`` and
  ``EXTEND_TIMEOUT_USEC=`` over ``$NOTIFY_SOCKET`` (the sdnotify package; a no-op without
  systemd, so foreground mode runs the same code).
- :func:`set_process_name` gives ``ps``/``top``/``systemd-cgls`` a readable name per instance.
- :func:`setup_logging` writes one event per line to stderr with a syslog ``<N>`` prefix, which
  journald turns into the entry's priority (``journalctl -p warning`` works).
- :func:`resource_report` is the one diagnostic line logged before any fatal exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable

import psutil

try:
    import prctl
except ImportError:  # pragma: no cover - python-prctl is a hard dependency of the .deb
    prctl = None

import sdnotify

NOTICE = 25  # syslog "notice" between INFO and WARNING
logging.addLevelName(NOTICE, "NOTICE")

_SYSLOG_PRIORITY = {
    logging.DEBUG: 7, logging.INFO: 6, NOTICE: 5, logging.WARNING: 4, logging.ERROR: 3,
    logging.CRITICAL: 2,
}
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
              "warning": logging.WARNING, "error": logging.ERROR}


class SyslogPrefixFormatter(logging.Formatter):
    """``<prio>role[instance] message``: journald strips ``<prio>`` into PRIORITY=.

    Outside journald (a terminal) the prefix is dropped unless ``prefix`` is forced.
    """

    def __init__(self, tag: str, prefix: bool) -> None:
        super().__init__()
        self.tag = tag
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            # One event per line: fold the traceback into the same line.
            msg += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        line = f"{self.tag}: {msg}" if self.tag else msg
        if self.prefix:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
            return f"<{prio}>{line}"
        return f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {line}"


def under_journald() -> bool:
    """True when stderr is connected to the journal (systemd sets $JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(tag: str, level: str = "info", prefix: bool | None = None) -> logging.Logger:
    """Configure the root logger for a daemon; returns the ``marketprism`` logger."""
    if prefix is None:
        prefix = under_journald() or os.environ.get("MARKETPRISM_SYSLOG_PREFIX") == "1"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SyslogPrefixFormatter(tag, prefix))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return logging.getLogger("marketprism")


def set_log_level(level: str) -> None:
    """Set the root logger to a configured ``service.log_level`` through :data:`LOG_LEVELS`.

    Every daemon calls this once its config is loaded, so "notice" is :data:`NOTICE` (journal
    priority 5) in all of them; an unknown name falls back to INFO.
    """
    logging.getLogger().setLevel(LOG_LEVELS.get(level, logging.INFO))


def set_process_name(role: str, instance: str) -> None:
    """``comm`` (15 bytes, shown by top/systemd-cgls) and the full command-line title."""
    if prctl is None:
        return
    prctl.set_name(f"mp{role[0]}:{instance}"[:15])
    prctl.set_proctitle(f"marketprism-{role} {instance}")


class Notifier:
    """sd_notify over ``$NOTIFY_SOCKET``; every method is a no-op without systemd."""

    def __init__(self) -> None:
        self._n = sdnotify.SystemdNotifier()
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process
        self.watchdog_usec = usec
        self.ready_sent = False
        self._status = ""

    @property
    def watchdog_interval(self) -> float:
        """Seconds between pings: half the systemd timeout, or 1 s without one."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else 1.0

    def _send(self, text: str) -> None:
        if self.enabled:
            self._n.notify(text)

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self.ready_sent = True

    def status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")


class LoopLag:
    """Measures event-loop lag: how late a periodic timer fires (a blocked loop shows)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.lag = 0.0  # seconds, last measurement
        self.max_lag = 0.0  # since the last reset_max()
        self.last_tick = time.monotonic()

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.lag = max(0.0, now - start - self.interval)
            self.max_lag = max(self.max_lag, self.lag)
            self.last_tick = now

    def current(self) -> float:
        """Lag now, including a tick that is overdue (a loop blocked right now)."""
        overdue = time.monotonic() - self.last_tick - self.interval
        return max(self.lag, overdue)

    def reset_max(self) -> float:
        value, self.max_lag = self.max_lag, 0.0
        return value


def cgroup_memory() -> tuple[int | None, int | None]:
    """(usage, limit) bytes of this process's memory cgroup (v2 or v1), None if unknown."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified
            base = f"/sys/fs/cgroup{path}"
            return _read_int(f"{base}/memory.current"), _read_int(f"{base}/memory.max")
        if "memory" in controllers.split(","):
            base = f"/sys/fs/cgroup/memory{path}"
            limit = _read_int(f"{base}/memory.limit_in_bytes")
            if limit is not None and limit >= 1 << 62:
                limit = None  # v1 "unlimited"
            return _read_int(f"{base}/memory.usage_in_bytes"), limit
    return None, None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return None if text == "max" else int(text) if text.isdigit() else None


def resource_report(state_dir: str, extra: Callable[[], str] | None = None) -> str:
    """One line: RSS, cgroup memory use/limit, open FDs, free disk of ``state_dir``."""
    proc = psutil.Process()
    rss = proc.memory_info().rss
    usage, limit = cgroup_memory()
    try:
        free = shutil.disk_usage(state_dir).free
        disk = f"{free / 2**20:.0f}MiB free in {state_dir}"
    except OSError:
        disk = f"{state_dir} unavailable"
    mb = lambda v: "?" if v is None else f"{v / 2**20:.1f}MiB"  # noqa: E731
    parts = [f"rss={mb(rss)}", f"cgroup_memory={mb(usage)}/{mb(limit) if limit else 'max'}",
             f"fds={proc.num_fds()}", disk]
    if extra is not None:
        parts.append(extra())
    return " ".join(parts)


__all__ = ["Notifier", "LoopLag", "setup_logging", "set_log_level", "set_process_name",
           "resource_report", "cgroup_memory", "NOTICE", "LOG_LEVELS", "under_journald"]
