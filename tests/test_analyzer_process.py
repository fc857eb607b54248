"""The analyzer as a real process on a real ring: exactly-once across kill -9, laps,
plug-in failures, systemd notifications, configuration errors.

Every wait is a condition with a deadline (:func:`wait_for`); nothing sleeps and hopes.
The test process is the ring's writer; a journaling plug-in (written to ``tmp_path``)
appends each ring sequence it is given to a file and, in ``on_start``, truncates that file
back to the last committed sequence, as the plug-in contract asks.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor import codec
from supervisor.events import Trade
from supervisor.statsblock import StatsBlockError, block_path, read_block

shm = pytest.importorskip("shm")
if not hasattr(shm, "RingReader"):  # pragma: no cover - only before the ring API landed
    pytest.skip("the shm ring API is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000

JOURNAL_PLUGIN = '''
"""Journals every ring seq it is given; rolls back to the last commit on start.

Faults on demand, each once (a marker file per fault): raise on a seq, hang on a seq,
abort on a seq.
"""
import os
import time

from supervisor.analyzer.plugins import PluginEventError

KINDS = {"trade"}
opts = {}


def setup(ctx):
    opts.update(ctx.options)
    if opts.get("fail_setup"):
        raise FileNotFoundError(opts["fail_setup"])
    opts["fd"] = os.open(opts["journal"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def on_start(last):
    with open(opts["journal"], "rb") as fh:
        data = fh.read()
    lines = data.split(b"\\n")[:-1]  # the last piece is "" or a line cut by a kill
    keep = [ln for ln in lines if int(ln) <= (last or 0)]
    with open(opts["journal"], "wb") as fh:
        fh.write(b"".join(ln + b"\\n" for ln in keep))
    dropped = len(lines) - len(keep)
    with open(opts["journal"] + ".starts", "a") as fh:
        fh.write(f"{last} {dropped}\\n")


def once(name):
    marker = opts["journal"] + "." + name
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def analyze(batch):
    for i, (ev, seq) in enumerate(zip(batch.events, batch.seqs)):
        if seq == opts.get("raise_at"):
            if not opts.get("event_error"):
                raise ValueError("bad")  # nothing written: the analyzer bisects
            # the contract: everything before the bad event is done, so journal it first
            os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs[:i]))
            raise PluginEventError(ev)
        if seq == opts.get("hang_at") and once("hang"):
            time.sleep(3600)
        if seq == opts.get("pause_at") and once("pause"):
            # journaled but not committed: the test kills us right here
            os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs))
            open(opts["journal"] + ".paused", "w").close()
            time.sleep(3600)
        if seq == opts.get("oom_at") and once("oom"):
            opts["hog"] = bytearray(1 << 44)  # 16 TiB: MemoryError at once
        if seq == opts.get("abort_at") and once("abort"):
            os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs))
            os.abort()
        if seq == opts.get("segfault_at") and once("segfault"):
            os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs))
            import ctypes
            ctypes.string_at(0)  # SIGSEGV, as a crashing native extension would
    os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs))
    if opts.get("slow"):
        time.sleep(opts["slow"])  # widens the write -> commit window the kills aim at
    return [{"symbol": batch.events[-1].symbol, "n": len(batch.seqs)}]
'''


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.01,
             proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"analyzer exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Notify:
    """A test ``NOTIFY_SOCKET``: records every datagram with its arrival time."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mpn")  # AF_UNIX paths must stay short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().split("\n"))

    def lines(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def times(self, line: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == line]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class Rig:
    """A ring written by the test, a config, and analyzer processes on it."""

    def __init__(self, tmp: Path, capacity: int = 1 << 24, plugin: dict[str, Any] | None = None,
                 settings: str = "", analyzer: str = "", plugin_spec: str | None = None,
                 instance: str = "", create_ring: bool = True) -> None:
        self.tmp = tmp
        self.instance = "t" + uuid.uuid4().hex[:10]
        self.shm_dir = tmp / "shm"
        self.shm_dir.mkdir()  # the rig_factory fixture points MARKETPRISM_SHM_DIR here
        self.capacity = capacity
        self.writer = shm.RingWriter(self.instance, capacity=capacity) if create_ring else None
        self.encoder = codec.Encoder()
        self.seq = 0
        self.journal = tmp / "journal"
        self.journal.touch()
        (tmp / "journal_plugin.py").write_text(JOURNAL_PLUGIN)
        opts = {"journal": str(self.journal), **(plugin or {})}
        opts_toml = ", ".join(f"{k} = {_toml(v)}" for k, v in opts.items())
        spec = str(tmp / "journal_plugin.py") if plugin_spec is None else plugin_spec
        self.config = tmp / "marketprism.toml"
        self.config.write_text(textwrap.dedent(f"""
            [service]
            state_dir = "{tmp}"
            [instances.{self.instance}]
            exchange = "binance"
            market = "derivatives"
            symbols = ["BTC-USDT-PERP", "ETH-USDT-PERP"]
            ring_capacity = {capacity}
            {instance}
            [instances.{self.instance}.analyzer]
            plugin = "{spec}"
            {analyzer}
            [instances.{self.instance}.analyzer.settings]
            plugin_options = {{ {opts_toml} }}
            {settings}
            """))
        self.notify = Notify()
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    # -- writing --------------------------------------------------------------------------
    def write(self, n: int) -> int:
        """Append ``n`` trades (alternating symbols); returns the last ring seq."""
        now = time.time_ns()
        for _ in range(n):
            self.seq += 1
            ev = Trade("BTC-USDT-PERP" if self.seq % 2 else "ETH-USDT-PERP", self.seq, now, now,
                       time.monotonic_ns(), str(self.seq), "buy", "100.5", "0.1")
            kind, payload = self.encoder.encode(ev)
            assert self.writer.write(payload, kind) == self.seq
        return self.seq

    def write_paced(self, total: int, rate: float) -> threading.Thread:
        """Write ``total`` trades at about ``rate``/s from a thread (mid-stream faults)."""
        def run() -> None:
            chunk = max(1, int(rate / 100))
            start = time.monotonic()
            written = 0
            while written < total:
                n = min(chunk, total - written)
                self.write(n)
                written += n
                ahead = written / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    # -- analyzer processes ---------------------------------------------------------------
    def start(self, watchdog_usec: int = 0, args: list[str] | None = None) -> subprocess.Popen:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONPATH=str(ROOT),
                   MARKETPRISM_SHM_DIR=str(self.shm_dir))
        env.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        log = self.tmp / f"analyzer.{len(self.procs)}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.analyzer.main", self.instance,
                 "--config", str(self.config), *(args or [])],
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def log_text(self) -> str:
        return "".join(p.read_text() for p in self.logs if p.exists())

    def journal_seqs(self) -> list[int]:
        data = self.journal.read_bytes()
        return [int(x) for x in data.split(b"\n")[:-1]]

    def journal_last(self) -> int:
        data = self.journal.read_bytes()
        lines = data.split(b"\n")
        return int(lines[-2]) if len(lines) >= 2 and lines[-2] else 0

    def stats(self) -> dict[str, Any] | None:
        try:
            return read_block(f"{self.instance}.analyzer")[0]
        except StatsBlockError:
            return None

    def committed(self) -> int:
        for r in self.writer.stats().readers:
            if r.name == "analyzer":
                return r.committed_seq
        return -1

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.notify.close()
        if self.writer is not None:
            self.writer.close()
        for path in (block_path(f"{self.instance}.analyzer"),):
            if os.path.exists(path):
                os.unlink(path)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def rig_factory(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETPRISM_SHM_DIR", str(tmp_path / "shm"))
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rig = Rig(tmp_path, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def stop(rig: Rig, proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


# ----- exactly once --------------------------------------------------------------------------
def test_kill_9_at_random_points_processes_every_sequence_exactly_once(rig_factory):
    total = 60_000
    rng = random.Random()
    kills = sorted(rng.sample(range(4_000, total - 2_000), 6))
    # One kill is not left to chance: between a batch's journal write and its commit.
    pause_at = rng.randint(1_000, kills[0] - 1_000)
    rig = rig_factory(plugin={"slow": 0.003, "pause_at": pause_at}, analyzer="batch = 256")
    writer = rig.write_paced(total, rate=15_000)
    proc = rig.start()
    paused = rig.tmp / "journal.paused"
    wait_for(paused.exists, 60, f"the plug-in paused after journaling seq {pause_at}", proc=proc)
    proc.kill()
    proc.wait()
    proc = rig.start()
    for at in kills:  # then wherever the journal happens to be
        wait_for(lambda at=at: rig.journal_last() >= at, 60, f"journal at {at}", proc=proc)
        time.sleep(rng.random() * 0.02)
        proc.kill()
        proc.wait()
        proc = rig.start()
    writer.join(60)
    wait_for(lambda: rig.committed() == total, 60, "every record committed", proc=proc)
    assert stop(rig, proc) == 0
    seqs = rig.journal_seqs()
    assert len(seqs) == total and seqs == list(range(1, total + 1))
    starts = [line.split() for line in (rig.tmp / "journal.starts").read_text().splitlines()]
    # the restart after the deliberate kill rolled the journal back to the commit
    last, dropped = int(starts[1][0]), int(starts[1][1])
    assert last < pause_at and dropped > 0
    assert "ended without a clean stop" in rig.log_text()


def test_a_lapped_analyzer_reports_the_exact_loss_and_continues(rig_factory):
    rig = rig_factory(capacity=1 << 16)
    rig.write(100)
    proc = rig.start()
    wait_for(lambda: rig.committed() == 100, 30, "first 100 committed", proc=proc)
    proc.send_signal(signal.SIGSTOP)
    try:
        rig.write(5_000)  # far more than 64 KiB of records: the stopped reader is lapped
    finally:
        proc.send_signal(signal.SIGCONT)
    last = rig.write(100)
    wait_for(lambda: rig.committed() == last, 30, "caught up after the lap", proc=proc)
    seqs = rig.journal_seqs()
    missing = sorted(set(range(1, last + 1)) - set(seqs))
    assert missing and missing == list(range(missing[0], missing[-1] + 1))  # one range
    assert len(seqs) == len(set(seqs))
    wait_for(lambda: (rig.stats() or {}).get("lost") == len(missing), 10, "stats show loss")
    s = rig.stats()
    assert (s["overruns"], s["gaps"]) == (1, 1)
    assert (f"lost {len(missing)} records (ring seq {missing[0]}..{missing[-1]}) before seq "
            f"{missing[-1] + 1}") in rig.log_text()
    assert stop(rig, proc) == 0


def test_a_ring_created_after_the_analyzer_started_is_used_not_zeromq(rig_factory):
    """Foreground mode starts collector and analyzer together: auto mode waits for the ring."""
    rig = rig_factory(create_ring=False, instance='zmq_pub = "tcp://127.0.0.1:1"')
    proc = rig.start()
    wait_for(lambda: "does not exist yet" in rig.log_text(), 30, "waiting", proc=proc)
    assert "waiting for it up to 10s before using ZeroMQ" in rig.log_text()
    rig.writer = shm.RingWriter(rig.instance, capacity=rig.capacity)
    last = rig.write(100)
    wait_for(lambda: rig.committed() == last, 30, "ring attached and read", proc=proc)
    assert "over ZeroMQ" not in rig.log_text()
    assert stop(rig, proc) == 0


# ----- systemd ---------------------------------------------------------------------------
def test_ready_after_catching_up_watchdog_from_the_loop_and_sigterm_stops_cleanly(rig_factory):
    rig = rig_factory()
    rig.write(1_000)
    proc = rig.start(watchdog_usec=1_000_000)
    wait_for(lambda: rig.notify.lines("READY=1"), 30, "READY=1", proc=proc)
    wait_for(lambda: len(rig.notify.times("WATCHDOG=1")) >= 4, 10, "watchdog pings", proc=proc)
    assert rig.committed() == 1_000  # READY only once caught up
    wait_for(lambda: any(s.startswith("STATUS=lag 0, ") and s.endswith("plugin ok")
                         for s in rig.notify.lines("STATUS=")), 10, "STATUS line", proc=proc)
    pings = rig.notify.times("WATCHDOG=1")
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 1.0
    assert stop(rig, proc) == 0
    lines = rig.notify.lines()
    assert "STOPPING=1" in lines and lines.index("STOPPING=1") > lines.index("READY=1")
    s = rig.stats()
    assert s["state"] == "stopped" and s["committed_seq"] == 1_000 and s["events"] == 1_000
    assert "stopped cleanly" in rig.log_text()


@pytest.mark.parametrize("edit, key", [
    (lambda t, i: t.replace(f"[instances.{i}.analyzer]\n",
                            f"[instances.{i}.analyzer]\nenabled = false\n"),
     "analyzer.enabled: the analyzer is disabled"),
    (lambda t, i: t.replace("plugin_options", "colour = 1\nplugin_options"),
     "analyzer.settings.colour: unknown key"),
    (lambda t, i: t.replace("plugin_options", "time_gap = -1\nplugin_options"),
     "analyzer.settings.time_gap: must be > 0"),
    (lambda t, i: t.replace("plugin_options", 'source = "zmq"\nplugin_options'),
     "analyzer.settings.source: source is zmq but the instance has no zmq_pub"),
    (lambda t, i: t.replace('plugin = "', 'plugin = "no_such_pkg_xyz:analyze" #'),
     "analyzer.plugin: plugin 'no_such_pkg_xyz:analyze': no module named"),
    (lambda t, i: t.replace(f"[instances.{i}.analyzer]\n",
                            f"[instances.{i}.analyzer]\nreader = \"a b\"\n"),
     "analyzer.reader: reader names are"),
    (lambda t, i: t.replace(f"instances.{i}", "instances.other"),
     f"instances.{'{'}INSTANCE{'}'}: unknown instance (configured: other)"),
])
def test_configuration_errors_exit_78_naming_the_key(rig_factory, edit, key):
    rig = rig_factory()
    rig.config.write_text(edit(rig.config.read_text(), rig.instance))
    proc = rig.start()
    assert proc.wait(timeout=30) == 78
    out = rig.log_text()
    key = key.replace("{INSTANCE}", rig.instance)
    assert "configuration error: " in out and key in out, out
    assert out.count("\n") == 1  # one line


# ----- plug-in failures ----------------------------------------------------------------------
def test_a_plugin_exception_skips_that_event_logs_it_and_loses_nothing_else(rig_factory):
    rig = rig_factory(plugin={"raise_at": 50})
    last = rig.write(200)
    proc = rig.start()
    wait_for(lambda: rig.committed() == last, 30, "all committed", proc=proc)
    assert rig.journal_seqs() == [s for s in range(1, last + 1) if s != 50]
    out = rig.log_text()
    assert "failed on ring seq 50, event skipped: ValueError: bad; event: Trade(" in out
    assert "trade_id='50'" in out
    wait_for(lambda: (rig.stats() or {}).get("plugin", {}).get("errors") == 1, 10, "counted")
    assert rig.stats()["plugin"]["state"] == "ok"
    assert stop(rig, proc) == 0


def test_a_plugin_event_error_names_the_event_and_the_rest_of_the_batch_follows(rig_factory):
    rig = rig_factory(plugin={"raise_at": 50, "event_error": True})
    last = rig.write(200)
    proc = rig.start()
    wait_for(lambda: rig.committed() == last, 30, "all committed", proc=proc)
    assert rig.journal_seqs() == [s for s in range(1, last + 1) if s != 50]
    assert "failed on ring seq 50, event skipped: PluginEventError" in rig.log_text()
    assert stop(rig, proc) == 0


def test_a_hanging_plugin_starves_the_watchdog_and_a_restart_resumes(rig_factory):
    rig = rig_factory(plugin={"hang_at": 300})
    last = rig.write(1_000)
    proc = rig.start(watchdog_usec=1_000_000)
    wait_for(lambda: "has been running for more than" in rig.log_text(), 30,
             "hang reported", proc=proc)
    hung_at = time.monotonic()
    # no ping for two watchdog periods while the process is alive: systemd would kill it
    wait_for(lambda: time.monotonic() - hung_at > 2.0, 5, "two periods")
    assert proc.poll() is None
    assert not [t for t in rig.notify.times("WATCHDOG=1") if t > hung_at + 0.2]
    assert "time.sleep(3600)" in rig.log_text() or "in analyze" in rig.log_text()
    proc.kill()  # what systemd does on a watchdog timeout (SIGABRT, then SIGKILL)
    proc.wait()
    proc = rig.start(watchdog_usec=1_000_000)
    wait_for(lambda: rig.committed() == last, 30, "resumed to the end", proc=proc)
    assert rig.journal_seqs() == list(range(1, last + 1))
    assert stop(rig, proc) == 0


@pytest.mark.parametrize("fault, sig, message", [
    ("abort_at", signal.SIGABRT, "Fatal Python error: Aborted"),
    ("segfault_at", signal.SIGSEGV, "Fatal Python error: Segmentation fault"),
])
def test_a_crashing_plugin_kills_the_process_with_a_traceback_and_a_restart_resumes(
        rig_factory, fault, sig, message):
    rig = rig_factory(plugin={fault: 300})
    last = rig.write(1_000)
    proc = rig.start()
    assert proc.wait(timeout=30) == -sig
    out = rig.log_text()
    assert message in out and "journal_plugin.py" in out  # the plug-in's frame
    proc = rig.start()
    wait_for(lambda: rig.committed() == last, 30, "resumed to the end", proc=proc)
    assert rig.journal_seqs() == list(range(1, last + 1))
    assert "ended without a clean stop" in rig.log_text()
    assert stop(rig, proc) == 0


def test_a_plugin_out_of_memory_exits_with_a_resource_report_and_a_restart_resumes(
        rig_factory):
    rig = rig_factory(plugin={"oom_at": 300})
    last = rig.write(1_000)
    proc = rig.start()
    assert proc.wait(timeout=30) == 1
    out = rig.log_text()
    assert "fatal: MemoryError" in out and "rss=" in out and "cgroup_memory=" in out
    proc = rig.start()
    wait_for(lambda: rig.committed() == last, 30, "resumed to the end", proc=proc)
    assert rig.journal_seqs() == list(range(1, last + 1))
    assert stop(rig, proc) == 0


def test_a_plugin_whose_setup_fails_leaves_the_built_in_analysis_running_degraded(
        rig_factory):
    rig = rig_factory(plugin={"fail_setup": "/models/flow.onnx"})
    last = rig.write(500)
    proc = rig.start()
    wait_for(lambda: rig.notify.lines("READY=1"), 30, "READY=1", proc=proc)
    wait_for(lambda: any("plugin degraded" in s for s in rig.notify.lines("STATUS=")), 10,
             "degraded STATUS", proc=proc)
    wait_for(lambda: (rig.stats() or {}).get("events") == last, 10, "built-in analysis ran")
    s = rig.stats()
    assert s["plugin"]["state"] == "degraded" and "flow.onnx" in s["plugin"]["reason"]
    assert s["analysis"]["BTC-USDT-PERP"]["trades"]["60s"]["trades"] == 250
    assert "disabled: setup failed: FileNotFoundError" in rig.log_text()
    assert rig.journal_seqs() == []
    assert stop(rig, proc) == 0
