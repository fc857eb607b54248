"""Command line for ring segments: ``ls``, ``inspect NAME``, ``rm NAME``.

``main(argv)`` is the whole entry point so ``marketprism ring ...`` can mount it unchanged.
Exit status: 0 on success, 1 when a segment is missing, busy or unusable, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from shm import _layout
from shm._segment import segment_path
from shm.errors import RingError, RingLayoutError
from shm.reader import remove_reader
from shm.stats import RingStats, list_rings, ring_stats

__all__ = ["main"]


def _age(ns: int) -> str:
    if ns <= 0:
        return "-"
    seconds = max(0.0, time.time() - ns / 1e9)
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _writer(stats: RingStats) -> str:
    if stats.writer_state in ("running", "dead") and stats.writer_pid:
        return f"{stats.writer_state} (pid {stats.writer_pid})"
    return stats.writer_state


def cmd_ls(args: argparse.Namespace) -> int:
    rows = []
    for name in list_rings():
        try:
            stats = ring_stats(name)
        except RingError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append(stats)
    if args.json:
        print(json.dumps([r if isinstance(r, dict) else dataclasses.asdict(r) for r in rows]))
        return 0
    print(f"{'NAME':<24} {'CAPACITY':>10} {'WRITE SEQ':>12} {'READERS':>7}  WRITER")
    for row in rows:
        if isinstance(row, dict):
            print(f"{row['name']:<24} {'?':>10} {'?':>12} {'?':>7}  unusable: {row['error']}")
            continue
        print(f"{row.name:<24} {_size(row.capacity):>10} {row.last_seq:>12} "
              f"{len(row.readers):>7}  {_writer(row)}")
    return 0


def _peek(name: str) -> None:
    path = segment_path(name)
    with open(path, "rb") as file:
        raw = file.read(_layout.HEADER_LENGTH)
    if len(raw) < _layout.HEADER_LENGTH:
        print(f"  file is {os.path.getsize(path)} bytes: too small for a ring header")
        return
    header = _layout.peek_header(raw)
    if header["magic"] != _layout.MAGIC:
        print(f"  magic {header['magic']:#018x}: not a marketprism ring")
        return
    for key, value in header.items():
        print(f"  {key:<22} {hex(value) if key == 'magic' else value}")


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        stats = ring_stats(args.name)
    except RingLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("raw header:")
        _peek(args.name)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
        return 0
    print(f"ring {stats.name}  ({stats.path}, {_size(stats.segment_length)})")
    print(f"  capacity            {_size(stats.capacity)} ({stats.capacity} bytes), "
          f"max message {stats.max_message_length} bytes, "
          f"layout v{_layout.LAYOUT_VERSION}")
    print(f"  created             {_age(stats.created_ns)}")
    print(f"  writer              {_writer(stats)}, heartbeat {_age(stats.writer_heartbeat_ns)}"
          f", attached {stats.writer_attach_count} time(s)")
    print(f"  records written     {stats.records_written} ({_size(stats.bytes_written)} "
          "payload)")
    print(f"  seq in ring         {stats.oldest_seq}..{stats.last_seq}")
    print(f"  readers             {len(stats.readers)} of {stats.max_readers} slots")
    if stats.readers:
        print(f"    {'NAME':<24} {'STATE':<10} {'NEXT SEQ':>12} {'LAG':>10} {'LOST':>10} "
              f"{'OVERRUNS':>8} {'COMMITTED':>12}  LAST COMMIT")
        for reader in stats.readers:
            state = f"pid {reader.pid}" if reader.attached else "detached"
            print(f"    {reader.name:<24} {state:<10} {reader.next_seq:>12} "
                  f"{reader.lag_records:>10} {reader.lost:>10} {reader.overruns:>8} "
                  f"{reader.committed_seq:>12}  {_age(reader.last_commit_ns)}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if args.reader:
        remove_reader(args.name, args.reader)
        print(f"removed reader {args.reader} of ring {args.name}")
        return 0
    from shm._segment import remove_ring

    remove_ring(args.name, force=args.force)
    print(f"removed {segment_path(args.name)}")
    return 0


def build_parser(prog: str = "python -m shm") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="marketprism shared-memory rings")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list every ring: capacity, write seq, writer state")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_ls)
    inspect = sub.add_parser("inspect", help="header, writer and each reader's lag/lost")
    inspect.add_argument("name")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=cmd_inspect)
    rm = sub.add_parser("rm", help="remove a ring (or one durable reader with --reader)")
    rm.add_argument("name")
    rm.add_argument("--reader", help="remove only this durable reader cursor")
    rm.add_argument("--force", action="store_true", help="remove even if a writer runs")
    rm.set_defaults(func=cmd_rm)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ring command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RingError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 1
