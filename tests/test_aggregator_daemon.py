"""The real aggregator process over real HTTP, with stats blocks written by real processes.

Each test starts ``python -m supervisor.aggregator.main`` on ephemeral loopback ports with a
test ``NOTIFY_SOCKET``; the instances' stats blocks are published by child processes (so a
``kill -9`` is a real dead writer) or by a thread of the test. Every wait is a condition
with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor import jsonlib, statsblock
from tests.test_aggregator_health import analyzer_doc, collector_doc

PROMTOOL = shutil.which("promtool")
NODE_EXPORTER = shutil.which("prometheus-node-exporter")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Publishes the collector document given as argv[2] into block argv[1] every 0.1 s, with its
# own pid and start time, until killed.
WRITER = """
import sys, time
from supervisor import jsonlib
from supervisor.statsblock import StatsWriter
w = StatsWriter(sys.argv[1])
doc = jsonlib.loads(sys.argv[2])
doc["started"] = time.time()
while True:
    w.publish(doc)
    time.sleep(0.1)
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Instances:
    """Unique instance names for this test run, and cleanup of their blocks."""

    def __init__(self) -> None:
        self.prefix = f"agt{os.getpid() % 100000}"
        self.names: list[str] = []

    def new(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            for block in (name, f"{name}.analyzer"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(statsblock.block_path(block))


class Writer:
    """A child process publishing one instance's collector block (a real, killable pid)."""

    def __init__(self, name: str, doc: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, name,
                                      jsonlib.dumps(doc).decode()], cwd=ROOT)
        wait_for(lambda: self._published(name), 10, f"{name} block from pid {self.proc.pid}")

    def _published(self, name: str) -> bool:
        assert self.proc.poll() is None, "writer died"
        try:
            return statsblock.read_block(name)[2] == self.proc.pid
        except statsblock.StatsBlockError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Feeder(threading.Thread):
    """Publishes a block from this test process every 50 ms until paused or stopped."""

    def __init__(self, name: str, doc: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.writer = statsblock.StatsWriter(name)
        self.doc = doc
        self.running = threading.Event()
        self.running.set()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            if self.running.is_set():
                self.writer.publish(self.doc)
            self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.writer.close()


class Aggregator:
    """One aggregator process: its ports, its notify socket, its stderr."""

    def __init__(self, tmp_path, instances: dict[str, str], textfile: str = "",
                 interval: float = 0.5) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        body = [f'[aggregator]\nhealth_port = {self.health_port}\n'
                f'metrics_port = {self.metrics_port}\ntextfile = "{textfile}"\n'
                f'interval = {interval}\n']
        for name, extra in instances.items():
            body.append(f'[instances.{name}]\nexchange = "okx"\nmarket = "spot"\n'
                        f'symbols = ["BTC-USDT", "ETH-USDT"]\n{extra}\n')
        self.config = tmp_path / "marketprism.toml"
        self.config.write_text("\n".join(body))
        self.notify_path = str(tmp_path / "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(15)
        self.stderr = open(tmp_path / "aggregator.log", "wb")  # noqa: SIM115
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": "1000000"}
        env.pop("WATCHDOG_PID", None)
        env.pop("INVOCATION_ID", None)  # a CI job run as a systemd service: still foreground
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.aggregator.main", "--config", str(self.config)],
            cwd=ROOT, env=env, stderr=self.stderr)
        self.messages: list[str] = []

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/health"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def recv_until(self, prefix: str) -> str:
        """Read notify datagrams until one starts with ``prefix``; return it."""
        while True:
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                pytest.fail(f"no {prefix!r} notification; got {self.messages}; log:\n"
                            f"{self.log()}")
            self.messages.append(msg)
            if msg.startswith(prefix):
                return msg

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = get(self.health_url)
        return status, jsonlib.loads(body)

    def metrics(self) -> str:
        status, body = get(self.metrics_url)
        assert status == 200
        return body.decode()

    def wait_health(self, code: int, timeout: float = 15.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"aggregator exited; log:\n{self.log()}"
            status, doc = self.health()
            return doc if status == code else None
        return wait_for(check, timeout, f"/health {code}")

    def log(self) -> str:
        self.stderr.flush()
        with open(self.stderr.name, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.stderr.close()
        return self.proc.returncode


@pytest.fixture
def instances() -> Iterator[Instances]:
    inst = Instances()
    yield inst
    inst.cleanup()


@pytest.fixture
def start(tmp_path) -> Iterator[Callable[..., Aggregator]]:
    started: list[Aggregator] = []

    def factory(instances: dict[str, str], **kw: Any) -> Aggregator:
        agg = Aggregator(tmp_path, instances, **kw)
        started.append(agg)
        agg.recv_until("READY=1")
        return agg

    yield factory
    for agg in started:
        agg.stop()


def metric_values(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


NO_ANALYZER = "analyzer = { enabled = false }"


# ----- lifecycle ----------------------------------------------------------------------------
def test_ready_only_once_both_ports_serve_then_watchdog_and_clean_sigterm(start, instances):
    agg = start({instances.new("a"): NO_ANALYZER})
    # READY=1 has arrived: both ports must answer right now, no retry.
    assert get(agg.health_url)[0] == 503
    assert get(agg.metrics_url)[0] == 200
    agg.recv_until("WATCHDOG=1")
    ready = next(m for m in agg.messages if m.startswith("READY=1"))
    assert "STATUS=0/1 instances healthy" in ready
    agg.proc.send_signal(signal.SIGTERM)
    assert agg.proc.wait(10) == 0
    agg.recv_until("STOPPING=1")
    assert "stopped cleanly" in agg.log()


def test_bad_config_exits_78_with_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[aggregator]\nhealth_port = 99999\n[instances.x]\nexchange='okx'\n"
                   "market='spot'\nsymbols=['BTC-USDT']\n")
    proc = subprocess.run([sys.executable, "-m", "supervisor.aggregator.main", "--config",
                           str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "aggregator.health_port: not a TCP port: 99999" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_port_in_use_exits_1(tmp_path, instances):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"[aggregator]\nhealth_port = {port}\nmetrics_port = {free_port()}\n"
                       f"[instances.{instances.new('p')}]\nexchange='okx'\nmarket='spot'\n"
                       "symbols=['BTC-USDT']\n")
        proc = subprocess.run([sys.executable, "-m", "supervisor.aggregator.main",
                               "--config", str(cfg)], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


# ----- health flips ---------------------------------------------------------------------------
def test_health_flips_to_503_when_the_writer_pid_dies_and_back_when_it_restarts(start,
                                                                               instances):
    a, b = instances.new("a"), instances.new("b")
    writers = [Writer(a, collector_doc(instance=a)), Writer(b, collector_doc(instance=b))]
    agg = start({a: NO_ANALYZER, b: NO_ANALYZER})
    try:
        doc = agg.wait_health(200)
        assert doc["processes"][a]["status"] == "healthy"
        assert doc["processes"][a]["collector"]["pid"] == writers[0].proc.pid
        dead = writers[0].proc.pid
        writers[0].kill()
        doc = agg.wait_health(503)
        assert f"{a}: collector: pid {dead} is not running" in doc["reasons"]
        assert doc["processes"][b]["status"] == "healthy"  # the other one is undisturbed
        writers[0] = Writer(a, collector_doc(instance=a))  # "systemd restarted it"
        doc = agg.wait_health(200)
        assert doc["processes"][a]["collector"]["pid"] == writers[0].proc.pid
    finally:
        for w in writers:
            w.kill()


def test_health_flips_to_503_when_a_block_goes_stale_and_back(start, instances):
    name = instances.new("s")
    feeder = Feeder(name, collector_doc(instance=name))
    agg = start({name: NO_ANALYZER})
    try:
        agg.wait_health(200)
        feeder.running.clear()  # a hung writer: pid alive, block no longer updated
        doc = agg.wait_health(503, timeout=20)
        (reason,) = doc["reasons"]
        assert reason.startswith(f"{name}: collector: stats block stale (last update ")
        assert reason.endswith("s ago, limit 3s)")
        feeder.running.set()
        agg.wait_health(200)
    finally:
        feeder.stop()


def test_feed_problems_in_the_document_make_503_with_reasons(start, instances):
    name = instances.new("f")
    feeder = Feeder(name, collector_doc(instance=name, books_synced=1,
                                        last_message_age=120.0))
    agg = start({name: NO_ANALYZER})
    try:
        doc = agg.wait_health(503)
        assert doc["processes"][name]["reasons"] == [
            "collector: 1/2 books synced",
            "collector: last message 120.0s ago (stale_after 60s)"]
    finally:
        feeder.stop()


def test_missing_and_malformed_blocks_are_reported_and_never_crash(start, instances):
    name, missing = instances.new("m"), instances.new("n")
    path = statsblock.block_path(name)
    with open(path, "wb") as fh:
        fh.write(b"not a stats block at all" * 10)
    agg = start({name: NO_ANALYZER, missing: NO_ANALYZER})
    status, doc = agg.health()
    assert status == 503
    assert doc["processes"][name]["collector"]["error"] == f"{path}: bad magic b'not a st'"
    assert doc["processes"][missing]["collector"]["error"].endswith(
        "no stats block (instance never started?)")
    with open(path, "wb") as fh:  # truncated header
        fh.write(b"MPSTATS1")
    assert "truncated (8 bytes)" in agg.health()[1]["processes"][name]["reasons"][0]
    writer = statsblock.StatsWriter(name)  # right header, then a payload that is not JSON
    writer.publish({"x": 1})
    with open(path, "r+b") as fh:
        fh.seek(statsblock.HEADER_SIZE)
        fh.write(b"{no")
    assert "malformed document" in agg.health()[1]["processes"][name]["reasons"][0]
    assert get(agg.metrics_url)[0] == 200
    writer.close()
    feeders = [Feeder(n, collector_doc(instance=n)) for n in (name, missing)]  # repaired
    try:
        agg.wait_health(200)
    finally:
        for feeder in feeders:
            feeder.stop()
    assert agg.proc.poll() is None


def test_enabled_analyzer_without_its_block_is_reported(start, instances):
    name = instances.new("z")
    feeder = Feeder(name, collector_doc(instance=name))
    agg = start({name: ""})
    try:
        doc = agg.wait_health(503)
        assert doc["processes"][name]["reasons"] == [
            f"analyzer: {statsblock.block_path(name + '.analyzer')}: no stats block "
            "(instance never started?)"]
        analyzer = Feeder(f"{name}.analyzer", analyzer_doc(instance=name, lag=7))
        try:
            doc = agg.wait_health(200)
            assert doc["processes"][name]["analyzer"]["lag"] == 7
            values = metric_values(agg.metrics())
            labels = frozenset({"instance": name, "exchange": "okx", "market": "spot",
                                "check": "crossed_book"}.items())
            assert values[("marketprism_quality_violations_total", labels)] == 1
        finally:
            analyzer.stop()
    finally:
        feeder.stop()


# ----- metrics --------------------------------------------------------------------------------
def test_metrics_counters_match_the_stats_blocks(start, instances):
    name = instances.new("c")
    doc = collector_doc(instance=name)
    feeder = Feeder(name, doc)
    agg = start({name: NO_ANALYZER})
    try:
        agg.wait_health(200)
        values = metric_values(agg.metrics())
        base = {"instance": name, "exchange": "okx", "market": "spot"}

        def v(metric: str, **labels: str) -> float:
            return values[(metric, frozenset({**base, **labels}.items()))]

        assert v("marketprism_messages_total") == doc["messages"]
        assert v("marketprism_message_bytes_total") == doc["bytes"]
        assert v("marketprism_reconnects_total") == doc["reconnects"]
        assert v("marketprism_resyncs_total", reason="checksum") == doc["resyncs"]["checksum"]
        assert v("marketprism_events_total", type="Trade") == doc["events"]["Trade"]
        assert v("marketprism_latency_seconds_count", stage="receive_to_ring") == \
            doc["latency_recv_ring"]["count"]
        assert v("marketprism_instance_healthy") == 1
        assert v("marketprism_stats_block_up", role="collector") == 1
        assert values[("marketprism_systemd_available", frozenset())] == 0
        status, doc_ = agg.health()  # not a systemd service: foreground mode, units unused
        assert doc_["mode"] == "foreground"
        assert doc_["systemd"]["error"].startswith("systemd unavailable (")
        # The next publish changes a counter: the next scrape shows it.
        feeder.doc = {**doc, "messages": doc["messages"] + 1000}
        wait_for(lambda: metric_values(agg.metrics())[
            ("marketprism_messages_total", frozenset(base.items()))] == doc["messages"] + 1000,
            10, "updated counter")
    finally:
        feeder.stop()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install "
                                             "prometheus); CI installs it")
def test_real_metrics_output_passes_promtool_check_metrics(start, instances):
    ok, bad = instances.new("o"), instances.new("x")
    feeder = Feeder(ok, collector_doc(instance=ok))
    agg = start({ok: NO_ANALYZER, bad: ""})
    try:
        agg.wait_health(503)
        text = agg.metrics()
        assert f'instance="{ok}"' in text
        for accept in ("", "application/openmetrics-text; version=0.0.1"):
            status, body = get(agg.metrics_url, {"Accept": accept} if accept else None)
            assert status == 200
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        feeder.stop()


# ----- node_exporter textfile -----------------------------------------------------------------
@pytest.mark.skipif(NODE_EXPORTER is None, reason="prometheus-node-exporter not installed "
                                                  "(apt-get install prometheus-node-exporter)")
def test_node_exporter_textfile_collector_exposes_our_gauges(start, instances, tmp_path):
    name = instances.new("t")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    feeder = Feeder(name, collector_doc(instance=name))
    port = free_port()
    exporter = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
         "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={textdir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    agg = start({name: NO_ANALYZER}, textfile=str(textdir / "marketprism.prom"))
    try:
        healthy = f'marketprism_instance_healthy{{exchange="okx",instance="{name}",' \
                  'market="spot"} 1'

        def scraped() -> str | None:
            assert exporter.poll() is None, exporter.stderr.read().decode()  # type: ignore
            try:
                status, body = get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None
            text = body.decode()
            return text if status == 200 and healthy in text else None

        text = wait_for(scraped, 20, "node_exporter to expose marketprism_instance_healthy")
        assert agg.proc.poll() is None
        assert 'node_textfile_scrape_error 0' in text
        assert f'marketprism_process_resident_memory_bytes{{exchange="okx",instance="{name}"' \
            in text
        assert "marketprism_latency_seconds" not in text  # instance-level families only
        assert os.listdir(textdir) == ["marketprism.prom"]  # no temporary left behind
        first = os.stat(textdir / "marketprism.prom").st_ino
        wait_for(lambda: os.stat(textdir / "marketprism.prom").st_ino != first, 10,
                 "the textfile to be rewritten (renamed over) next interval")
    finally:
        exporter.terminate()
        exporter.wait(10)
        feeder.stop()


def test_unwritable_textfile_is_counted_not_fatal(start, instances, tmp_path):
    name = instances.new("u")
    agg = start({name: NO_ANALYZER}, textfile=str(tmp_path / "missing" / "m.prom"))

    def counted() -> bool:
        values = metric_values(agg.metrics())
        return values[("marketprism_textfile_write_errors_total", frozenset())] >= 2
    wait_for(counted, 10, "two failed textfile writes")
    assert agg.log().count("cannot write the node_exporter textfile") == 1  # logged once
    assert agg.proc.poll() is None


# ----- marketprism status ----------------------------------------------------------------------
def status_cmd(agg: Aggregator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", "status", "--config",
                           str(agg.config), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def test_marketprism_status_prints_the_table(start, instances):
    ok, bad = instances.new("h"), instances.new("d")
    feeder = Feeder(ok, collector_doc(instance=ok, rss=130 * 2**20))
    agg = start({ok: NO_ANALYZER, bad: NO_ANALYZER})
    try:
        agg.wait_health(503)
        proc = status_cmd(agg)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("marketprism: unhealthy, 1/2 instances healthy, up ")
        assert lines[1].split() == ["INSTANCE", "STATUS", "UNIT", "RESTARTS", "BOOKS", "MSG/S",
                                    "LAST", "MSG", "RESYNCS", "RECONN", "RSS/SOFT/HARD", "MB",
                                    "CPU%", "LAG"]
        row = next(line for line in lines if line.startswith(ok)).split()
        assert row[:5] == [ok, "healthy", "-", "-", "2/2"]
        assert row[5:10] == ["1,234", "0.2s", "3", "4", "130/100/150"]
        assert any(line.startswith(bad) and " unhealthy " in line for line in lines)
        assert f"  {bad}: collector: " in proc.stdout
        assert f"  {ok}: collector: RSS 130.0 MB above the soft limit" in proc.stdout
        assert "\033[" not in proc.stdout  # not a terminal: no colour
        assert "\033[32mhealthy" in status_cmd(agg, "--color").stdout
        as_json = jsonlib.loads(status_cmd(agg, "--json").stdout)
        assert as_json["processes"][ok]["status"] == "healthy"
        agg.stop()  # no aggregator: the same table, built from shared memory directly
        proc = status_cmd(agg)
        assert "aggregator not reachable at http://127.0.0.1:" in proc.stdout
        assert any(line.startswith(ok) and " healthy " in line
                   for line in proc.stdout.splitlines())
    finally:
        feeder.stop()


def test_sighup_reloads_the_instance_list(start, instances):
    a, b = instances.new("r"), instances.new("q")
    feeder = Feeder(a, collector_doc(instance=a))
    agg = start({a: NO_ANALYZER, b: NO_ANALYZER})
    try:
        agg.wait_health(503)
        text = agg.config.read_text()
        agg.config.write_text(text.replace(f"[instances.{b}]", f"[instances.{b}]\n"
                                                                "enabled = false"))
        agg.proc.send_signal(signal.SIGHUP)
        doc = agg.wait_health(200)
        assert doc["processes"][b]["status"] == "disabled"
    finally:
        feeder.stop()


def test_marketprism_status_watch_redraws_until_interrupted(start, instances):
    name = instances.new("w")
    agg = start({name: NO_ANALYZER})
    # Ctrl-C as at a terminal: a suite started in the background (`make test &`) has SIGINT
    # ignored, which the CLI would inherit, and Python installs no handler for it then.
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "status", "--config",
                             str(agg.config), "--watch", "0.1"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        headers = 0
        deadline = time.monotonic() + 20
        while headers < 3:  # readline returns as soon as a redraw is printed
            assert time.monotonic() < deadline, "fewer than 3 redraws in 20s"
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "status --watch exited"
            headers += line.startswith("marketprism: ")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
