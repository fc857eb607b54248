"""One sample of the running system, taken inside the lab container and printed as JSON.

Run by the soak every few seconds as ``python -m soak.probe UNIT...`` inside the container
(it needs the container's PID namespace, ``/dev/shm`` and systemd). A sample holds:

- ``units``: each unit's ActiveState, SubState, MainPID, NRestarts, Result, MemoryCurrent;
- ``procs``: for each unit's main process: RSS, open descriptors, sockets in CLOSE_WAIT
  (the previous system leaked them), CPU seconds and start time;
- ``stats``: the counters of every stats block (collectors and analyzers), trimmed to what
  the soak reports (counters, latency histograms, pid);
- ``rings``: each ring's last sequence and writer state, and its readers' committed
  sequence, lag and durable ``lost``/``overruns`` counters.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import psutil

from supervisor import jsonlib
from supervisor.statsblock import StatsBlockError, list_blocks, read_block

UNIT_PROPS = ("Id", "ActiveState", "SubState", "MainPID", "NRestarts", "Result",
              "MemoryCurrent")
COLLECTOR_KEYS = ("pid", "messages", "events", "resyncs", "reconnects", "malformed",
                  "rest_errors", "rate_limited", "ring_records", "ring_seq", "zmq_dropped",
                  "books_synced", "books_total", "message_rate", "loop_lag_max",
                  "latency_recv_ring", "ready")
ANALYZER_KEYS = ("pid", "events", "lost", "overruns", "sequence_gaps", "upstream_gaps",
                 "malformed", "committed_seq", "lag", "seeds", "no_book", "batches",
                 "latency_recv_analyzer", "plugin", "state", "ready")


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """``systemctl show -p ... UNIT...`` output (blocks split by blank lines) by unit Id."""
    out: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            out[props["Id"]] = props
    return out


def units(names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    proc = subprocess.run(["systemctl", "show", "-p", ",".join(UNIT_PROPS), *names],
                          capture_output=True, text=True, timeout=30, check=False)
    return parse_show(proc.stdout)


def close_wait(proc: psutil.Process) -> int:
    """Sockets of ``proc`` in CLOSE_WAIT: the peer closed, this process never did."""
    return sum(1 for c in proc.connections(kind="inet") if c.status == psutil.CONN_CLOSE_WAIT)


def process(pid: int) -> dict[str, Any] | None:
    """RSS, descriptors, CLOSE_WAIT sockets, CPU and start time of ``pid`` (None if gone)."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            cpu = p.cpu_times()
            return {"pid": pid, "rss": p.memory_info().rss, "fds": p.num_fds(),
                    "close_wait": close_wait(p), "cpu": round(cpu.user + cpu.system, 3),
                    "started": p.create_time(), "status": p.status()}
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def trim(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ANALYZER_KEYS if doc.get("role") == "analyzer" else COLLECTOR_KEYS
    return {k: doc[k] for k in keys if k in doc}


def stats_blocks() -> dict[str, dict[str, Any]]:
    out = {}
    for name in list_blocks():
        try:
            doc, updated, pid = read_block(name)
        except StatsBlockError:
            continue
        out[name] = {**trim(doc), "writer_pid": pid, "updated": updated}
    return out


def rings() -> dict[str, dict[str, Any]]:
    import shm

    out = {}
    for name in shm.list_rings():
        try:
            st = shm.ring_stats(name)
        except shm.RingError:
            continue
        out[name] = {
            "last_seq": st.last_seq, "bytes_written": st.bytes_written,
            "writer_state": st.writer_state, "writer_pid": st.writer_pid,
            "writer_attach_count": st.writer_attach_count,
            "readers": {r.name: {"committed_seq": r.committed_seq, "lag": r.lag_records,
                                 "committed_lag": r.committed_lag, "lost": r.lost,
                                 "overruns": r.overruns, "attached": r.attached}
                        for r in st.readers},
        }
    return out


def sample(unit_names: list[str]) -> dict[str, Any]:
    shown = units(unit_names)
    procs = {}
    for unit, props in shown.items():
        pid = int(props.get("MainPID") or 0)
        if pid:
            info = process(pid)
            if info is not None:
                procs[unit] = info
    return {"t": time.time(), "units": shown, "procs": procs, "stats": stats_blocks(),
            "rings": rings()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.write(jsonlib.dumps(sample(args)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
