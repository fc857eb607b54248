"""Service glue: sd_notify datagrams, syslog-prefixed logs, stats blocks, units sync."""

import logging
import os
import socket
import struct
import subprocess
import sys

import pytest

from supervisor import service, statsblock, units
from supervisor.config import parse


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_notifier_sends_ready_status_watchdog_stopping(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    n = service.Notifier()
    assert n.watchdog_interval == 2.0
    n.ready("1/1 books synced")
    n.status("x")
    n.status("x")  # unchanged: not sent again
    n.watchdog()
    n.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=1/1 books synced", "STATUS=x", "WATCHDOG=1",
                   "STOPPING=1\nSTATUS=stopping"]


def test_watchdog_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert service.Notifier().watchdog_usec == 0


def test_notifier_without_systemd_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = service.Notifier()
    n.ready()
    n.watchdog()
    assert not n.enabled


def test_log_lines_carry_syslog_priority_and_instance():
    code = ("import logging; from supervisor.service import setup_logging;"
            "log = setup_logging('collector[okx_spot]', prefix=True);"
            "log.warning('resync symbol=%s', 'BTC-USDT'); log.error('boom');"
            "log.info('hello')\ntry:\n  1/0\nexcept ZeroDivisionError:\n  log.exception('oops')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    lines = proc.stderr.splitlines()
    assert lines[0] == "<4>collector[okx_spot]: resync symbol=BTC-USDT"
    assert lines[1] == "<3>collector[okx_spot]: boom"
    assert lines[2] == "<6>collector[okx_spot]: hello"
    assert lines[3].startswith("<3>collector[okx_spot]: oops | Traceback")
    assert len(lines) == 4  # the traceback stays on one line


@pytest.fixture
def root_logger():
    """The root logger's handlers and level, restored after a daemon's main() replaced them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def daemon_stub(asynchronous: bool):
    """Stands in for a daemon class: logs one NOTICE and one INFO record, then run() is 0."""

    class Daemon:
        def __init__(self, *args):
            log = args[-1]  # every daemon takes the marketprism logger last
            log.log(service.NOTICE, "a notice")
            log.info("an info")

        def run(self):
            if asynchronous:
                async def ran():
                    return 0
                return ran()
            return 0

    return Daemon


@pytest.mark.parametrize("module, daemon, argv, tag, asynchronous", [
    ("supervisor.collector.main", "Collector", ["okx_spot"], "collector[okx_spot]", True),
    ("supervisor.aggregator.main", "Aggregator", [], "aggregator", True),
    ("supervisor.analyzer.main", "Analyzer", ["okx_spot"], "analyzer[okx_spot]", False),
    ("supervisor.nats_bridge.main", "Daemon", ["okx_spot"], "nats-bridge[okx_spot]", True),
], ids=["collector", "aggregator", "analyzer", "nats-bridge"])
def test_every_daemon_maps_log_level_notice_to_journal_priority_5(
        module, daemon, argv, tag, asynchronous, tmp_path, monkeypatch, capsys, root_logger):
    import faulthandler
    import importlib

    main = importlib.import_module(module)
    path = tmp_path / "marketprism.toml"
    path.write_text('[service]\nlog_level = "notice"\n'
                    + CFG.split("[instances.binance_spot]")[0] + "[instances.okx_spot.nats]\n")
    monkeypatch.setenv("MARKETPRISM_SYSLOG_PREFIX", "1")
    monkeypatch.setattr(main, "set_process_name", lambda role, instance: None)
    monkeypatch.setattr(faulthandler, "enable", lambda *a, **kw: None)  # the analyzer's
    monkeypatch.setattr(main, daemon, daemon_stub(asynchronous))
    assert main.main([*argv, "--config", str(path)]) == 0
    assert root_logger.level == service.NOTICE
    assert capsys.readouterr().err.splitlines() == [f"<5>{tag}: a notice"]  # INFO dropped


def test_process_name_fits_comm():
    code = ("from supervisor.service import set_process_name;"
            "set_process_name('collector', 'binance_derivatives');"
            "print(open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    assert out == "mpc:binance_der"


def test_resource_report_names_rss_cgroup_fds_disk(tmp_path):
    line = service.resource_report(str(tmp_path))
    for key in ("rss=", "cgroup_memory=", "fds=", "free in"):
        assert key in line


@pytest.fixture
def block_name():
    name = f"test-{os.getpid()}"
    yield name
    try:
        os.unlink(statsblock.block_path(name))
    except FileNotFoundError:
        pass


def test_stats_block_round_trip(block_name):
    w = statsblock.StatsWriter(block_name)
    w.publish({"messages": 5, "status": "ok"})
    doc, updated, pid = statsblock.read_block(block_name)
    assert doc == {"messages": 5, "status": "ok"} and pid == os.getpid() and updated > 0
    w.publish({"messages": 6})
    assert statsblock.read_block(block_name)[0] == {"messages": 6}
    assert block_name in statsblock.list_blocks()
    w.close()


def test_missing_stats_block_is_reported(block_name):
    with pytest.raises(statsblock.StatsBlockError, match="no stats block"):
        statsblock.read_block(block_name)


def test_corrupt_stats_block_is_reported(block_name):
    w = statsblock.StatsWriter(block_name)
    w.publish({"a": 1})
    w.close()
    path = statsblock.block_path(block_name)
    with open(path, "r+b") as fh:
        fh.write(b"XXXXXXXX")
    with pytest.raises(statsblock.StatsBlockError, match="bad magic"):
        statsblock.read_block(block_name)
    with open(path, "r+b") as fh:  # valid header, garbage document
        fh.write(statsblock.MAGIC)
        fh.seek(statsblock.HEADER_SIZE)
        fh.write(b"{nope")
    with pytest.raises(statsblock.StatsBlockError, match="malformed document"):
        statsblock.read_block(block_name)


def test_writer_killed_mid_update_leaves_a_readable_block(block_name):
    w = statsblock.StatsWriter(block_name)
    w.publish({"a": 1})
    w._mm[16:24] = struct.pack("<Q", w._seq + 1)  # odd: as if killed mid-publish
    w.close()
    w2 = statsblock.StatsWriter(block_name)  # restart repairs the sequence
    w2.publish({"a": 2})
    assert statsblock.read_block(block_name)[0] == {"a": 2}
    w2.close()


CFG = """
[instances.okx_spot]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
[instances.binance_spot]
exchange = "binance"
market = "spot"
symbols = ["BTC-USDT"]
enabled = false
"""


def test_units_sync_writes_limits_and_enables_configured(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "lib/systemd/system").mkdir(parents=True)
    for unit in ("collector@.service", "analyzer@.service", "marketprism.target"):
        src = os.path.join(os.path.dirname(__file__), "..", "units", unit)
        (root / "lib/systemd/system" / unit).write_text(open(src).read())
    cfg = parse(CFG, "/etc/marketprism/marketprism.toml")
    units.sync(cfg, root=str(root))
    etc = root / "etc/systemd/system"
    limits = (etc / "collector@okx_spot.service.d/limits.conf").read_text()
    assert "MemoryHigh=120M\nMemoryMax=160M" in limits and limits.startswith(units.MARKER)
    wants = sorted(p.name for p in (etc / "marketprism.target.wants").iterdir())
    assert wants == ["analyzer@okx_spot.service", "collector@okx_spot.service"]
    # An instance removed from the config loses its generated drop-in.
    units.sync(parse(CFG.split("[instances.binance_spot]")[0].replace("okx_spot", "okx_x")),
               root=str(root))
    assert not (etc / "collector@okx_spot.service.d/limits.conf").exists()


def test_record_failure_counts_and_exports(tmp_path, capsys):
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    for _ in range(2):
        units.record_failure("collector@x.service", str(tmp_path / "state"), str(textdir))
    prom = (textdir / units.TEXTFILE_NAME).read_text()
    assert 'marketprism_unit_failures_total{unit="collector@x.service"} 2' in prom
    assert "<3>marketprism-failure: collector@x.service failed" in capsys.readouterr().err
    logging.getLogger().handlers[:] = []


def test_units_sync_and_foreground_include_the_nats_bridge_only_when_configured(tmp_path):
    from supervisor.foreground import children_for

    root = tmp_path / "root"
    (root / "lib/systemd/system").mkdir(parents=True)
    for unit in ("collector@.service", "analyzer@.service", "nats-bridge@.service",
                 "marketprism.target"):
        src = os.path.join(os.path.dirname(__file__), "..", "units", unit)
        (root / "lib/systemd/system" / unit).write_text(open(src).read())
    text = CFG + '[instances.okx_spot.nats]\nservers = ["nats://127.0.0.1:4222"]\n'
    cfg = parse(text, "/etc/marketprism/marketprism.toml")
    units.sync(cfg, root=str(root))
    wants = sorted(p.name for p in (root / "etc/systemd/system/marketprism.target.wants")
                   .iterdir())
    assert wants == ["analyzer@okx_spot.service", "collector@okx_spot.service",
                     "nats-bridge@okx_spot.service"]
    names = [c.name for c in children_for(cfg)]
    assert names == ["collector@okx_spot", "analyzer@okx_spot", "nats-bridge@okx_spot",
                     "aggregator"]
    assert "nats-bridge@okx_spot" not in [c.name for c in children_for(parse(CFG))]
