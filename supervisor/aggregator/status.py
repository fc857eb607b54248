"""``marketprism status``: the ``/health`` document as a table, the operator's first command.

It asks the running aggregator (``http://<listen>:<health_port>/health``). When the
aggregator is not reachable it builds the same document itself from the stats blocks and
systemd (the same pure :func:`~.health.build_health`), and says so: the command works
exactly when it is needed most. Colour only on a terminal (and never with ``$NO_COLOR``).

Example::

    marketprism: healthy, 5/5 instances healthy, up 2h03m, mode systemd, json orjson
    INSTANCE             STATUS     UNIT            RESTARTS BOOKS    MSG/S LAST MSG ...
    okx_spot             healthy    active/running         0   2/2    2,310     0.0s ...

Exit status: 0 when healthy, 1 when not, 78 for a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, NamedTuple

from supervisor import config as config_mod
from supervisor import jsonlib

_GREEN, _RED, _YELLOW, _DIM, _BOLD, _RESET = (
    "\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[1m", "\033[0m")


class Column(NamedTuple):
    title: str
    width: int
    right: bool  # right-aligned (numbers)


COLUMNS = (
    Column("INSTANCE", 20, False), Column("STATUS", 9, False), Column("UNIT", 16, False),
    Column("RESTARTS", 8, True), Column("BOOKS", 7, True), Column("MSG/S", 9, True),
    Column("LAST MSG", 8, True), Column("RESYNCS", 7, True), Column("RECONN", 6, True),
    Column("RSS/SOFT/HARD MB", 17, True), Column("CPU%", 6, True), Column("LAG", 7, True),
)


def health_url(cfg: config_mod.Config) -> str:
    host = cfg.aggregator.listen
    if host in ("0.0.0.0", "::", ""):  # a wildcard listen is reachable on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.aggregator.health_port}/health"


def fetch_health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """GET ``url``; a 503 still carries the document. Raises OSError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our URL
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    doc = jsonlib.loads(body)
    if not isinstance(doc, dict):
        raise OSError(f"{url}: not a health document")
    return doc


def local_health(cfg: config_mod.Config) -> dict[str, Any]:
    """The health document built in this process, from shared memory and systemd."""
    from supervisor.aggregator.health import build_health
    from supervisor.aggregator.main import package_version
    from supervisor.aggregator.sources import Sampler
    from supervisor.aggregator.units import SystemdView, UnitQuery

    query = UnitQuery()
    view = asyncio.run(query.fetch(Sampler(cfg.instances, 1.0, "").unit_names()))
    # Our shell is no systemd service, so judge by the units themselves: if systemd neither
    # runs nor is set to run any of them, the instances run in the foreground (or not at all).
    mode = "systemd" if any(u.managed for u in view.units.values()) else "foreground"
    if view.available and mode == "foreground" and not view.error:
        view = SystemdView(False, "systemd unavailable (foreground mode: no marketprism unit "
                           "is enabled or running)", {})
    sampler = Sampler(cfg.instances, cfg.aggregator.interval, mode)
    sampler.set_systemd(view)
    doc = build_health(sampler.sample(), jsonlib.BACKEND, package_version())
    doc.pop("uptime_seconds", None)  # no aggregator, no uptime
    return doc


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds) % 60:02d}s"


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    return fmt.format(value) if isinstance(value, int | float) and \
        not isinstance(value, bool) else "-"


def _analyzer_lag(proc: dict[str, Any]) -> Any:
    """The analyzer's ring reader lag, else whatever lag the analyzer reports itself."""
    ring = proc.get("ring") or {}
    readers = ring.get("readers") or {}
    reader = ring.get("analyzer_reader")
    if reader in readers:
        return readers[reader].get("lag")
    analyzer = proc.get("analyzer") or {}
    return analyzer.get("lag")


def _row(name: str, proc: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, colour) per column for one instance."""
    col = proc.get("collector") or {}
    unit = (proc.get("units") or {}).get("collector") or {}
    status = proc.get("status", "?")
    status_colour = {"healthy": _GREEN, "unhealthy": _RED}.get(status, _DIM)
    if "active_state" in unit:
        unit_text = f"{unit['active_state']}/{unit.get('sub_state', '')}"
        unit_colour = "" if unit["active_state"] == "active" else _RED
        restarts = _num(unit.get("n_restarts"))
    else:
        unit_text, unit_colour, restarts = "-", _DIM, "-"
    synced, total = col.get("books_synced"), col.get("books_total")
    books = f"{synced}/{total}" if isinstance(synced, int) and isinstance(total, int) else "-"
    mem = proc.get("memory") or {}
    rss, soft, hard = mem.get("rss_mb"), mem.get("soft_mb"), mem.get("hard_mb")
    mem_text = f"{_num(rss, '{:.0f}')}/{_num(soft)}/{_num(hard)}"
    mem_colour = ""
    if isinstance(rss, int | float) and isinstance(hard, int | float) and rss > 0.9 * hard:
        mem_colour = _RED
    elif isinstance(rss, int | float) and isinstance(soft, int | float) and rss > soft:
        mem_colour = _YELLOW
    age = col.get("last_message_age")
    return [
        (name, _BOLD), (status, status_colour), (unit_text, unit_colour), (restarts, ""),
        (books, "" if synced == total else _YELLOW), (_num(col.get("message_rate")), ""),
        (_duration(age), ""), (_num(col.get("resyncs_total")), ""),
        (_num(col.get("reconnects")), ""), (mem_text, mem_colour),
        (_num(proc.get("cpu"), "{:.1f}"), ""), (_num(_analyzer_lag(proc)), ""),
    ]


def render(doc: dict[str, Any], color: bool = False, source: str = "") -> str:
    """The table for a health document (``source`` notes where it came from)."""
    def paint(text: str, colour: str) -> str:
        return f"{colour}{text}{_RESET}" if color and colour else text

    def cells(values: list[tuple[str, str]]) -> str:
        out = []
        for (text, colour), column in zip(values, COLUMNS, strict=True):
            padded = text.rjust(column.width) if column.right else text.ljust(column.width)
            out.append(paint(padded, colour))
        return " ".join(out).rstrip()

    status = doc.get("status", "unknown")
    head = [f"marketprism: {paint(status, _GREEN if status == 'healthy' else _RED)}",
            f"{doc.get('healthy_instances', '?')}/{doc.get('enabled_instances', '?')} "
            "instances healthy"]
    if "uptime_seconds" in doc:
        head.append(f"up {_duration(doc['uptime_seconds'])}")
    head += [f"mode {doc.get('mode', '?')}", f"json {doc.get('json_backend') or '?'}"]
    lines = [", ".join(head)]
    if source:
        lines.append(paint(source, _YELLOW))
    lines.append(cells([(c.title, _DIM) for c in COLUMNS]))
    details = []
    for name, proc in (doc.get("processes") or {}).items():
        if not isinstance(proc, dict):
            continue
        lines.append(cells(_row(name, proc)))
        for reason in proc.get("reasons") or []:
            details.append(paint(f"  {name}: {reason}", _RED))
        for warning in proc.get("warnings") or []:
            details.append(paint(f"  {name}: {warning}", _YELLOW))
    systemd = doc.get("systemd") or {}
    if systemd.get("error"):
        lines.append(paint(systemd["error"], _DIM))
    if details:
        lines.append("")
        lines += details
    return "\n".join(lines)


def get_health(cfg: config_mod.Config, url: str | None) -> tuple[dict[str, Any], str]:
    """(document, note): from the aggregator, else built locally with a note saying so."""
    url = url or health_url(cfg)
    try:
        return fetch_health(url), ""
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return local_health(cfg), (f"aggregator not reachable at {url} ({reason}); "
                                   "read the stats blocks directly")


def use_color(stream: Any, force: bool | None = None) -> bool:
    if force is not None:
        return force
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file")
    parser.add_argument("--url", help="health URL (default: from the config's [aggregator])")
    parser.add_argument("--json", action="store_true", help="print the /health JSON")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="redraw every SECONDS until Ctrl-C")
    parser.add_argument("--color", dest="color", action="store_true", default=None,
                        help="colour even when not a terminal")
    parser.add_argument("--no-color", dest="color", action="store_false")


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_or_report(args.config)
    if cfg is None:
        return config_mod.EX_CONFIG
    color = use_color(sys.stdout, args.color)
    try:
        while True:
            doc, note = get_health(cfg, args.url)
            if args.json:
                text = jsonlib.dumps(doc).decode()
            else:
                text = render(doc, color, note)
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\033[H\033[2J")  # home + clear: redraw in place
            print(text, flush=True)
            if not args.watch:
                return 0 if doc.get("status") == "healthy" else 1
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


__all__ = ["render", "fetch_health", "local_health", "health_url", "get_health", "run",
           "add_arguments"]
