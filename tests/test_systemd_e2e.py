"""End to end under a real systemd 252: the units are the supervisor, prove every promise.

One container for the module (booted in ~1 s by tests/lab); the replay exchange runs in it as
a transient unit and serves all five instances. The units are the real ones from units/,
with a drop-in pointing ExecStart= at this checkout and one making the watchdog and restarts
quick enough for a test (the policy itself is unchanged). Tests run in file order.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.lab import REPO, VENV_BIN, SystemdLab, available

pytestmark = [pytest.mark.systemd,
              pytest.mark.skipif(bool(available()), reason=available() or "ok")]

INSTANCES = ("okx_spot", "okx_derivatives", "binance_spot", "binance_derivatives",
             "deribit_derivatives")
HEALTH = "http://127.0.0.1:8087/health"
WATCHDOG_SEC = 6

# A collector that crashes at start-up (its ZeroMQ port is the aggregator's, already bound):
# exit status 1, restarted until the start limit gives up.
CRASHY = """
[instances.crashy]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
ws_url = "ws://127.0.0.1:8090/okx/ws/v5/public"
enabled = false
zmq_pub = "tcp://127.0.0.1:8087"
analyzer = { enabled = false }
"""

# Journals every ring seq the binance_spot analyzer processes; on start it rolls the journal
# back to the last committed seq (the plug-in contract for exactly-once output).
JOURNAL_PLUGIN = '''
import os

opts = {}


def setup(ctx):
    opts.update(ctx.options)


def on_start(last):
    path = opts["journal"]
    lines = open(path, "rb").read().split(b"\\n")[:-1] if os.path.exists(path) else []
    keep = b"".join(ln + b"\\n" for ln in lines if int(ln) <= (last or 0))
    with open(path, "wb") as fh:
        fh.write(keep)
    opts["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND)


def analyze(batch):
    os.write(opts["fd"], b"".join(b"%d\\n" % s for s in batch.seqs))
'''
JOURNAL = "/var/lib/marketprism/journal-binance_spot"
PLUGIN_ANALYZER = (
    'analyzer = { zmq_pub = "tcp://127.0.0.1:5623", plugin = "/etc/marketprism/journal.py", '
    f'settings = {{ plugin_options = {{ journal = "{JOURNAL}" }} }} }}')

TEST_DROPIN = f"""# Test lab: quicker watchdog and restarts; the policy itself is the unit's.
[Service]
WatchdogSec={WATCHDOG_SEC}
RestartSec=0.5
"""


def health() -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(HEALTH, timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def messages(doc: dict, instance: str) -> int:
    return doc["processes"][instance]["collector"]["messages"]


@pytest.fixture(scope="module")
def lab():
    demo = (REPO / "supervisor" / "data" / "demo.toml").read_text()
    demo = demo.replace('analyzer = { zmq_pub = "tcp://127.0.0.1:5623" }', PLUGIN_ANALYZER)
    assert PLUGIN_ANALYZER in demo
    with SystemdLab("mpe2e") as lab:
        lab.write("/etc/marketprism/journal.py", JOURNAL_PLUGIN)
        lab.install_checkout(demo + CRASHY)
        for unit in ("collector@.service", "analyzer@.service"):
            lab.write(f"/etc/systemd/system/{unit}.d/60-test.conf", TEST_DROPIN)
        lab.systemctl("daemon-reload")
        lab.run("systemd-run", "--unit=mp-replay", "-p", "Type=simple",
                str(VENV_BIN / "marketprism-replay"), "serve", "--port", "8090",
                "--rate", "300")
        lab.wait_for("replay exchange", lambda: lab.sh(
            f"{VENV_BIN}/marketprism-replay stats >/dev/null 2>&1", check=False
        ).returncode == 0, timeout=30)
        yield lab
    # Nothing left behind: no container state, cgroups or processes.
    leftovers = [p for p in ("/run/sdlab-mpe2e", "/sys/fs/cgroup/memory/mpe2e",
                             "/sys/fs/cgroup/systemd/mpe2e") if Path(p).exists()]
    assert not leftovers, leftovers


def test_target_start_waits_for_ready_and_health_is_200(lab):
    t0 = time.monotonic()
    lab.systemctl("start", "marketprism.target", timeout=180)
    took = time.monotonic() - t0
    for inst in INSTANCES:
        for unit in (f"collector@{inst}.service", f"analyzer@{inst}.service"):
            props = lab.show(unit, "ActiveState", "SubState", "StatusText", "Type")
            assert (props["ActiveState"], props["SubState"], props["Type"]) == (
                "active", "running", "notify"), (unit, props)
        # READY=1 went out only once both books had synced.
        assert "2/2 books synced" in lab.prop(f"collector@{inst}.service", "StatusText")
        assert "ready: 2/2 books synced" in lab.journal(f"collector@{inst}.service")
    assert lab.prop("marketprism-aggregator.service", "ActiveState") == "active"
    assert took > 0.5  # start blocked on READY, not returned at fork
    lab.wait_for("/health 200", lambda: health()[0] == 200, timeout=30)


def test_kill_9_of_one_collector_is_isolated_and_healed(lab):
    victim = "collector@binance_spot.service"
    others = [f"collector@{i}.service" for i in INSTANCES if i != "binance_spot"]
    before = {u: int(lab.prop(u, "NRestarts")) for u in others}
    _, doc = health()
    counts = {i: messages(doc, i) for i in INSTANCES if i != "binance_spot"}
    pid = lab.prop(victim, "MainPID")
    lab.run("kill", "-9", pid)
    lab.wait_for("restart", lambda: lab.prop(victim, "NRestarts") == "1", timeout=20)
    lab.wait_for("active again", lambda: lab.prop(victim, "ActiveState") == "active" and
                 lab.prop(victim, "MainPID") != pid, timeout=30)
    lab.wait_for("/health 200 again", lambda: health()[0] == 200, timeout=40)
    assert {u: int(lab.prop(u, "NRestarts")) for u in others} == before
    _, doc = health()
    for inst, n in counts.items():
        assert messages(doc, inst) > n, f"{inst} stalled while binance_spot restarted"
    assert "status=9/KILL" in lab.journal(victim)


def test_analyzer_killed_mid_stream_resumes_without_loss_or_repeat(lab):
    unit = "analyzer@binance_spot.service"

    def journal() -> list[int]:
        return [int(x) for x in lab.run("cat", JOURNAL).stdout.split()]

    for kills in range(1, 4):
        seen = len(journal())
        lab.wait_for("analyzer progress", lambda seen=seen: len(journal()) > seen + 100)
        lab.run("kill", "-9", lab.prop(unit, "MainPID"))
        lab.wait_for("restart", lambda k=kills: int(lab.prop(unit, "NRestarts")) == k,
                     timeout=20)
        lab.wait_for("active", lambda: lab.prop(unit, "ActiveState") == "active", timeout=30)
    # Freeze the ring (stop its writer) and let the analyzer drain it.
    lab.systemctl("stop", "collector@binance_spot.service")
    stats = lab.run(str(VENV_BIN / "python"), "-c", "import shm, json; s = shm.ring_stats("
                    "'binance_spot'); print(json.dumps([s.last_seq, [(r.name, r.lost) for r "
                    "in s.readers]]))").stdout
    last, readers = json.loads(stats)
    assert dict(map(tuple, readers))["analyzer"] == 0  # never lapped
    lab.wait_for("analyzer drained the ring", lambda: journal()[-1] == last, timeout=30)
    seqs = journal()
    assert seqs == list(range(seqs[0], last + 1)), "a ring seq was lost or repeated"
    assert "status=9/KILL" in lab.journal(unit)
    lab.systemctl("start", "collector@binance_spot.service", timeout=60)


def test_sigstop_trips_the_watchdog_and_systemd_restarts(lab):
    unit = "collector@okx_spot.service"
    restarts = int(lab.prop(unit, "NRestarts"))
    pid = lab.prop(unit, "MainPID")
    t0 = time.monotonic()
    lab.run("kill", "-STOP", pid)
    lab.wait_for("watchdog restart", lambda: int(lab.prop(unit, "NRestarts")) > restarts,
                 timeout=WATCHDOG_SEC + 20)
    lab.wait_for("active again", lambda: lab.prop(unit, "ActiveState") == "active",
                 timeout=30)
    assert time.monotonic() - t0 < WATCHDOG_SEC + 20
    journal = lab.journal(unit)
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal


def test_memory_max_kills_an_oversized_collector_and_systemd_restarts_it(lab):
    unit = "collector@deribit_derivatives.service"
    assert lab.show(unit, "MemoryHigh", "MemoryMax") == {
        "MemoryHigh": str(60 << 20), "MemoryMax": str(100 << 20)}  # from units sync
    restarts = int(lab.prop(unit, "NRestarts"))
    results: set[str] = set()
    replay = str(VENV_BIN / "marketprism-replay")
    lab.run(replay, "fault", "deribit", "huge_book", "--symbol", "BTC-USD-PERP",
            "--levels", "1500000")
    lab.run(replay, "fault", "deribit", "drop", "--symbol", "BTC-USD-PERP")

    def restarted() -> bool:
        results.add(lab.prop(unit, "Result"))  # visible only until the restart
        return int(lab.prop(unit, "NRestarts")) > restarts

    lab.wait_for("OOM kill and restart", restarted, timeout=90, interval=0.1)
    assert results & {"signal", "oom-kill"}, results
    assert "status=9/KILL" in lab.journal(unit)
    lab.wait_for("active again", lambda: lab.prop(unit, "ActiveState") == "active",
                 timeout=40)


def test_bad_config_fails_with_78_and_is_not_restarted(lab):
    unit = "collector@nope.service"
    lab.systemctl("start", unit, check=False)
    lab.wait_for("failed", lambda: lab.prop(unit, "ActiveState") == "failed", timeout=20)
    props = lab.show(unit, "ExecMainStatus", "NRestarts", "Result")
    assert props == {"ExecMainStatus": "78", "NRestarts": "0", "Result": "exit-code"}
    assert "instances.nope: unknown instance" in lab.journal(unit)
    lab.systemctl("reset-failed", unit, check=False)


def test_crash_loop_hits_the_start_limit_and_on_failure_records_it(lab):
    unit = "collector@crashy.service"
    lab.systemctl("start", "--no-block", unit)
    lab.wait_for("start limit", lambda: "Start request repeated too quickly" in
                 lab.journal(unit), timeout=120, interval=0.5)
    assert lab.prop(unit, "ActiveState") == "failed"
    assert int(lab.prop(unit, "NRestarts")) >= 9
    failure_unit = f"marketprism-failure@{unit}.service"
    lab.wait_for("OnFailure= ran", lambda: f"{unit} failed" in lab.journal(failure_unit),
                 timeout=20)
    state = json.loads(lab.run("cat", "/var/lib/marketprism/failures.json").stdout)
    assert state[unit]["failures"] >= 1
    lab.systemctl("reset-failed", unit, check=False)


def test_journal_has_instance_lines_with_priorities(lab):
    unit = "collector@binance_derivatives.service"
    lab.run(str(VENV_BIN / "marketprism-replay"), "fault", "binance_derivatives", "drop",
            "--symbol", "BTC-USDT-PERP")
    lab.wait_for("resync logged", lambda: "resync symbol=BTC-USDT-PERP" in lab.journal(unit))
    entries = [json.loads(line) for line in lab.journal(unit, "-o", "json").splitlines()
               if line.startswith("{")]
    ours = [e for e in entries if str(e.get("MESSAGE", "")).startswith(
        "collector[binance_derivatives]")]
    prio = {e["MESSAGE"].split(": ", 1)[1].split(" ")[0]: e["PRIORITY"] for e in ours}
    assert prio["resync"] == "4" and prio["ready:"] == "6"
    warnings = lab.journal(unit, "-p", "warning")
    assert "resync symbol=BTC-USDT-PERP" in warnings and "ready:" not in warnings


def test_stop_target_stops_everything_and_marks_rings_stopped(lab):
    units = [f"{role}@{inst}.service" for inst in INSTANCES for role in ("collector",
                                                                           "analyzer")]
    units.append("marketprism-aggregator.service")
    # systemctl returns once the target's job is done; PartOf= then stops the services
    # (analyzers before the collectors they are ordered after), each within TimeoutStopSec.
    lab.systemctl("stop", "marketprism.target", timeout=120)
    lab.wait_for("every unit inactive", lambda: all(
        lab.prop(u, "ActiveState") == "inactive" for u in units), timeout=30)
    for unit in units:
        assert lab.prop(unit, "Result") == "success", unit
    rings = lab.run(str(VENV_BIN / "python"), "-m", "shm", "ls").stdout
    for inst in INSTANCES:
        line = next(ln for ln in rings.splitlines() if ln.startswith(inst + " "))
        assert line.rstrip().endswith("stopped"), line


def test_units_pass_verify_and_security_checks(lab):
    for unit in ("collector@okx_spot.service", "analyzer@okx_spot.service",
                 "marketprism-aggregator.service", "marketprism-failure@x.service"):
        verify = lab.run("systemd-analyze", "verify", "--man=no", unit, check=False)
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
        score = lab.run("systemd-analyze", "security", "--no-pager", unit).stdout
        exposure = float(score.strip().splitlines()[-1].split("level for ")[1].split(": ")[1]
                         .split()[0])
        assert exposure <= 2.0, (unit, exposure)

