"""The Debian package: the build, lintian, and install / start / upgrade / purge under systemd.

``packaging/build-deb.sh`` (what ``make deb`` runs) builds the package twice per session into
``build/test-deb/``: at the committed changelog's version, and as a local rebuild with a higher
version for the upgrade. The systemd tests install them in a booted container (tests/lab,
named ``mpdeb`` so it never meets another suite's lab); its writes go to a throw-away overlay,
so the host's dpkg database and files are never touched.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

from supervisor import config as config_mod
from supervisor.exchanges import feed_class
from supervisor.units import MARKER
from tests.lab import REPO, SystemdLab, available

PACKAGE = "marketprism"
DEBIAN = REPO / "packaging" / "debian"
CONFFILE_SOURCE = REPO / "packaging" / "marketprism.toml"
BUILD_DIR = REPO / "build" / "test-deb"
LIB = "/usr/lib/marketprism"
CONFFILE = "/etc/marketprism/marketprism.toml"
BIN = "/usr/bin"  # explicit: the caller's PATH (pyenv shims, the venv) reaches the container
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
with open(REPO / "pyproject.toml", "rb") as _fh:
    SCRIPTS = sorted(tomllib.load(_fh)["project"]["scripts"])
UNITS = sorted(p.name for p in (REPO / "units").iterdir() if p.suffix in (".service", ".target"))
# Debian's packages for what pyproject.toml lists from PyPI (issue 8), besides the substvars.
RUNTIME_DEPENDS = ("python3 (>= 3.11)", "python3-zmq", "python3-psutil",
                   "python3-prometheus-client", "python3-prctl", "python3-sdnotify",
                   "python3-cffi-backend", "python3-aiohttp", "python3-multidict")
REAL_HOSTS = {"ws.okx.com", "www.okx.com", "stream.binance.com", "api.binance.com",
              "fstream.binance.com", "fapi.binance.com", "www.deribit.com"}


class Debs(NamedTuple):
    base: Path  # built from the committed changelog
    base_version: str
    next: Path  # the same tree with a higher version: the upgrade
    next_version: str


# ----- building ---------------------------------------------------------------------------
def _missing_build_tools() -> str:
    """'' when the build dependencies and lintian are installed, else what is missing."""
    proc = subprocess.run(["dpkg-checkbuilddeps", str(DEBIAN / "control")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr.strip() or proc.stdout.strip()
    if not Path("/usr/bin/lintian").exists():
        return "lintian is not installed"
    return ""


def _build(out: Path, version: str | None) -> Path:
    cmd = [str(REPO / "packaging" / "build-deb.sh"), "--out", str(out)]
    if version:
        cmd += ["--version", version]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    debs = sorted(out.glob(f"{PACKAGE}_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="session")
def debs() -> Debs:
    missing = _missing_build_tools()
    if missing:
        message = f"cannot build the .deb: {missing} (make deb installs APT_DEB)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base_version = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(DEBIAN / "changelog"), "-S", "Version"],
        capture_output=True, text=True, check=True).stdout.strip()
    next_version = f"{base_version}+test1"
    return Debs(_build(BUILD_DIR / "base", None), base_version,
                _build(BUILD_DIR / "next", next_version), next_version)


@cache
def _data_tar(deb: Path) -> Path:
    path = deb.with_suffix(".data.tar")
    path.write_bytes(subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                    capture_output=True, check=True).stdout)
    return path


def _members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """The package's files by absolute path."""
    with tarfile.open(_data_tar(deb)) as tar:
        return {m.name.removeprefix("."): m for m in tar.getmembers() if m.name != "./"}


def _read_member(deb: Path, name: str) -> str:
    with tarfile.open(_data_tar(deb)) as tar:
        member = tar.extractfile("." + name)
        assert member is not None, name
        return member.read().decode()


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


# ----- the package file -------------------------------------------------------------------
def test_lintian_pedantic_reports_no_errors_or_warnings(debs: Debs) -> None:
    proc = subprocess.run(["lintian", "--pedantic", "--fail-on", "error,warning",
                           "--no-tag-display-limit", str(debs.base)],
                          capture_output=True, text=True, timeout=300)
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert proc.returncode == 0 and not tags, proc.stdout


def test_every_lintian_override_has_a_written_reason() -> None:
    lines = (DEBIAN / "marketprism.lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"no reason above: {line}"


def test_code_is_a_private_tree_with_the_extensions_and_the_bundled_wheels(debs: Debs) -> None:
    files = _members(debs.base)
    assert not [f for f in files if "/dist-packages/" in f or "/site-packages/" in f]
    for package in ("supervisor", "shm", "orjson", "nats", "picows"):
        assert f"{LIB}/{package}/__init__.py" in files, package
    assert [f for f in files if re.fullmatch(rf"{LIB}/shm/_native\..*so", f)]
    assert [f for f in files if re.fullmatch(rf"{LIB}/supervisor/_kernels\..*so", f)]
    assert [f for f in files if re.fullmatch(rf"{LIB}/supervisor/_levels\..*so", f)]
    assert [f for f in files if re.fullmatch(rf"{LIB}/orjson/orjson\.cpython-3\d+-.*\.so", f)]
    assert [f for f in files if re.fullmatch(rf"{LIB}/picows/picows\.cpython-3\d+-.*\.so", f)]
    # Build leftovers that must not ship.
    assert not [f for f in files if "/tests/" in f or ".hypothesis" in f or ".dist-info" in f]


def test_launchers_put_the_private_tree_first_and_export_it_to_children(debs: Debs) -> None:
    files = _members(debs.base)
    assert sorted(f.rsplit("/", 1)[1] for f in files if f.startswith("/usr/bin/")
                  and not files[f].isdir()) == SCRIPTS
    with open(REPO / "pyproject.toml", "rb") as fh:
        targets = tomllib.load(fh)["project"]["scripts"]
    for name, target in targets.items():
        text = _read_member(debs.base, f"/usr/bin/{name}")
        module, _, func = target.partition(":")
        assert text.startswith("#!/usr/bin/python3\n"), name
        assert f'sys.path.insert(0, "{LIB}")' in text, name
        assert 'os.environ["PYTHONPATH"]' in text, name
        assert f"from {module} import {func}" in text, name
        assert files[f"/usr/bin/{name}"].mode & 0o111, name


def test_units_sysusers_conffile_dashboards_and_a_man_page_per_command(debs: Debs) -> None:
    files = _members(debs.base)
    for unit in UNITS:
        assert _read_member(debs.base, f"/lib/systemd/system/{unit}") == \
            (REPO / "units" / unit).read_text(), f"{unit} differs from units/"
    assert _read_member(debs.base, "/usr/lib/sysusers.d/marketprism.conf") == \
        (REPO / "units" / "marketprism.sysusers").read_text()
    assert _read_member(debs.base, CONFFILE) == CONFFILE_SOURCE.read_text()
    conffiles = subprocess.run(["dpkg-deb", "--info", str(debs.base), "conffiles"],
                               capture_output=True, text=True, check=True).stdout
    assert conffiles.split() == [CONFFILE]
    for command in SCRIPTS:
        assert f"/usr/share/man/man1/{command}.1.gz" in files, command
    if (REPO / "dashboards").is_dir():
        assert "/usr/share/marketprism/grafana/marketprism.json" in files
        assert "/usr/share/marketprism/prometheus/alerts.yml" in files


def test_package_depends_on_debian_runtime_packages(debs: Debs) -> None:
    assert _field(debs.base, "Architecture") != "all"
    depends = [d.strip() for d in _field(debs.base, "Depends").split(",")]
    for dep in RUNTIME_DEPENDS:
        assert dep in depends, dep
    assert [d for d in depends if d.startswith("libc6")], "no ${shlibs:Depends}"
    assert "python3-orjson" not in _field(debs.base, "Depends")


def test_packaged_config_points_the_five_instances_at_the_real_exchanges() -> None:
    cfg = config_mod.load(str(CONFFILE_SOURCE))
    assert sorted(cfg.instances) == sorted(config_mod.MEMORY_DEFAULTS)
    for inst in cfg.instances.values():
        assert inst.ws_url == "" and inst.rest_url == "", inst.name  # the adapters' defaults
        cls = feed_class(inst.exchange, inst.market)
        for url in (cls.ws_endpoints[inst.market], cls.rest_endpoints[inst.market]):
            assert re.match(r"^(wss|https)://", url), url
            assert url.split("/")[2].split(":")[0] in REAL_HOSTS, url


# ----- installed, in a booted systemd -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replay(NamedTuple):
    port: int
    config: str  # a marketprism.toml with okx_spot pointed at this replay exchange


@pytest.fixture(scope="module")
def lab() -> Iterator[SystemdLab]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with SystemdLab(name="mpdeb") as box:
        box.allow_service_actions()
        # Seconds per install saved: no man-db index rebuild after each dpkg run.
        box.run("debconf-set-selections", input="man-db man-db/auto-update boolean false\n")
        yield box


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    """The replay exchange from the checkout, on the host (the container shares its network)."""
    if not (REPO / "supervisor" / "replay" / "main.py").exists():
        pytest.xfail("the replay exchange (supervisor/replay/main.py) is not in the tree yet")
    port = _free_port()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    log = BUILD_DIR / "replay.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor.replay.main", "serve",
                                 "--port", str(port)], cwd=REPO, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"replay exchange did not come up:\n"
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        zmq = [_free_port() for _ in range(3)]
        config = f"""# test_deb: okx_spot against the replay exchange on port {port}
[aggregator]
health_port = {_free_port()}
metrics_port = {_free_port()}

[instances.okx_spot]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT", "ETH-USDT"]
channels = ["books", "trades"]
ws_url = "ws://127.0.0.1:{port}/okx/ws/v5/public"
rest_url = "http://127.0.0.1:{port}/okx"
zmq_pub = "tcp://127.0.0.1:{zmq[0]}"
zmq_snapshot = "tcp://127.0.0.1:{zmq[1]}"
analyzer = {{ zmq_pub = "tcp://127.0.0.1:{zmq[2]}" }}
"""
        yield Replay(port, config)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def clean(lab: SystemdLab) -> SystemdLab:
    """The lab without the package (a previous test's install purged)."""
    status = lab.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", PACKAGE,
                     check=False).stdout
    if status[:2] not in ("", "un", "pn"):
        lab.apt_get("purge", PACKAGE)
    return lab


@pytest.fixture
def installed(lab: SystemdLab, debs: Debs) -> SystemdLab:
    """The lab with the base package installed; reused by the tests that leave it installed."""
    if lab.package_version(PACKAGE) != debs.base_version:
        clean = lab.run("dpkg-query", "-W", PACKAGE, check=False).returncode != 0
        lab.apt_get("install", *([] if clean else ["--allow-downgrades"]), str(debs.base))
    return lab


def _start_collector(lab: SystemdLab, replay: Replay, *units: str) -> None:
    lab.write(CONFFILE, replay.config)
    lab.systemctl("start", *(units or ("collector@okx_spot",)), timeout=150)


def _starts(lab: SystemdLab, unit: str) -> int:
    """How many times ``unit`` became active (Type=notify: systemd logs it on READY=1)."""
    return sum(1 for line in lab.journal(unit).splitlines()
               if line.startswith(f"Started {unit}.service"))


@pytest.mark.systemd
def test_apt_install_pulls_dependencies_creates_the_user_and_starts_nothing(
        clean: SystemdLab, debs: Debs) -> None:
    lab = clean
    # Take two dependencies away first, so installing has to pull them back.
    lab.apt_get("remove", "python3-sdnotify", "python3-prctl")
    assert lab.package_version("python3-sdnotify") == ""
    lab.apt_get("install", str(debs.base))
    assert lab.package_version(PACKAGE) == debs.base_version
    assert lab.package_version("python3-sdnotify") and lab.package_version("python3-prctl")
    assert lab.run("id", "-u", "marketprism").stdout.strip().isdigit()
    # The target and the aggregator are enabled, not started; no instance is enabled.
    for unit in ("marketprism.target", "marketprism-aggregator.service"):
        assert lab.run("systemctl", "is-enabled", unit, check=False).stdout.strip() == "enabled"
        assert lab.prop(unit, "ActiveState") == "inactive", unit
    wants = lab.run("ls", "/etc/systemd/system/marketprism.target.wants").stdout.split()
    assert wants == ["marketprism-aggregator.service"]
    assert "collector@" not in lab.run("systemctl", "list-units", "--all", "--no-legend",
                                       "collector@*", "analyzer@*").stdout
    conffiles = lab.run("dpkg-query", "-W", "-f", "${Conffiles}", PACKAGE).stdout
    assert CONFFILE in conffiles
    assert "okx_spot" in lab.run(f"{BIN}/marketprism", "config", "check").stdout


@pytest.mark.systemd
def test_autopkgtest_tests_pass_on_the_installed_package(installed: SystemdLab) -> None:
    stanzas = [s for s in re.split(r"\n\s*\n", (DEBIAN / "tests" / "control").read_text())
               if re.search(r"^(Tests|Test-Command):", s, re.M)]
    assert stanzas
    for stanza in stanzas:
        fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
        if "Test-Command" in fields:
            cmd = ["/bin/sh", "-c", fields["Test-Command"]]
        else:
            cmd = [str(DEBIAN / "tests" / fields["Tests"])]
        proc = installed.run("env", f"PATH={CLEAN_PATH}", "AUTOPKGTEST_TMP=/tmp", *cmd,
                             check=False)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
        if "allow-stderr" not in fields.get("Restrictions", ""):
            assert proc.stderr == "", f"{cmd}: {proc.stderr}"


@pytest.mark.systemd
def test_installed_units_verify_clean_and_expose_at_most_2(installed: SystemdLab) -> None:
    paths = [f"/lib/systemd/system/{unit}" for unit in UNITS]
    proc = installed.run("systemd-analyze", "verify", *paths, check=False)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    for unit in (u.replace("@.", "@okx_spot.") for u in UNITS if u.endswith(".service")):
        out = installed.run("systemd-analyze", "security", "--no-pager", unit).stdout
        exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        assert exposure <= 2.0, f"{unit}: {exposure}"


@pytest.mark.systemd
def test_launchers_use_the_private_tree_even_with_debian_supervisor_installed(
        installed: SystemdLab) -> None:
    lab = installed
    # What Debian's supervisor package would put in dist-packages, in the way of ours.
    fake = "/usr/lib/python3/dist-packages/supervisor/__init__.py"
    lab.write(fake, "raise ImportError('this is Debian supervisor, not marketprism')\n")
    try:
        assert lab.run("/usr/bin/python3", "-c", "import supervisor",
                       check=False).returncode != 0
        for command in SCRIPTS:
            lab.run(f"{BIN}/{command}", "--help")
        # Children of `marketprism run` are `python3 -m supervisor...`: they inherit the path.
        probe = ("import os, runpy, sys\nsys.argv = ['marketprism', 'config', 'check']\n"
                 "try:\n    runpy.run_path('/usr/bin/marketprism', run_name='__main__')\n"
                 "except SystemExit:\n    pass\nprint(os.environ['PYTHONPATH'])\n")
        out = lab.run("/usr/bin/python3", "-c", probe).stdout
        assert out.splitlines()[-1].split(":")[0] == LIB
    finally:
        lab.run("rm", "-rf", os.path.dirname(fake))


@pytest.mark.systemd
def test_collector_goes_active_against_replay_and_logs_to_the_journal(
        installed: SystemdLab, replay: Replay) -> None:
    lab = installed
    starts = _starts(lab, "collector@okx_spot")  # the lab's journal outlives the tests
    _start_collector(lab, replay)
    state = lab.show("collector@okx_spot", "ActiveState", "SubState", "MainPID", "User")
    assert (state["ActiveState"], state["SubState"], state["User"]) == \
        ("active", "running", "marketprism")
    assert _starts(lab, "collector@okx_spot") == starts + 1
    # The collector's own lines, not only systemd's about it.
    assert lab.journal("collector@okx_spot", f"_PID={state['MainPID']}").strip()
    owner = lab.run("stat", "-c", "%U", "/dev/shm/marketprism.okx_spot").stdout.strip()
    assert owner == "marketprism"
    lab.systemctl("stop", "collector@okx_spot")


@pytest.mark.systemd
def test_marketprism_status_reports_the_running_instance(
        installed: SystemdLab, replay: Replay) -> None:
    lab = installed
    if lab.run(f"{BIN}/marketprism", "status", "--help", check=False).returncode != 0:
        pytest.xfail("`marketprism status` is not implemented yet (supervisor/cli.py)")
    units = ("collector@okx_spot", "analyzer@okx_spot", "marketprism-aggregator")
    _start_collector(lab, replay, *units)
    try:
        # Healthy (exit 0) once the analyzer and the aggregator have published their stats.
        status = lab.wait_for("`marketprism status` to report healthy", lambda: (
            proc := lab.run(f"{BIN}/marketprism", "status", check=False)).returncode == 0
            and proc, timeout=60)
        row = next(line for line in status.stdout.splitlines() if line.startswith("okx_spot"))
        assert "active/running" in row, status.stdout
    finally:
        lab.systemctl("stop", *units)


@pytest.mark.systemd
def test_upgrade_and_reinstall_keep_a_modified_conffile_and_restart_running_instances(
        clean: SystemdLab, debs: Debs, replay: Replay) -> None:
    lab = clean
    lab.apt_get("install", str(debs.base))
    _start_collector(lab, replay, "collector@okx_spot", "analyzer@okx_spot")  # edits conffile
    pid = lab.prop("collector@okx_spot", "MainPID")
    starts = _starts(lab, "collector@okx_spot")  # the lab's journal outlives the tests

    lab.apt_get("install", str(debs.next))  # stdin closed: a conffile prompt would fail it
    assert lab.package_version(PACKAGE) == debs.next_version
    assert lab.run("cat", CONFFILE).stdout == replay.config
    # Restarted once with the new code, not stopped: postinst's try-restart returns after READY.
    assert _starts(lab, "collector@okx_spot") == starts + 1
    assert lab.prop("collector@okx_spot", "MainPID") != pid
    assert lab.prop("analyzer@okx_spot", "ActiveState") == "active"

    lab.apt_get("install", "--reinstall", str(debs.next))
    assert lab.run("cat", CONFFILE).stdout == replay.config
    leftovers = lab.run("sh", "-c", "ls /etc/marketprism/*.dpkg-* 2>/dev/null || true").stdout
    assert leftovers == ""
    lab.systemctl("stop", "collector@okx_spot", "analyzer@okx_spot")


@pytest.mark.systemd
def test_purge_removes_files_links_generated_dropins_state_and_segments(
        clean: SystemdLab, debs: Debs, replay: Replay) -> None:
    lab = clean
    lab.apt_get("install", str(debs.base))
    _start_collector(lab, replay, "collector@okx_spot", "analyzer@okx_spot")
    lab.run(f"{BIN}/marketprism", "units", "sync")  # drop-in + enabled into marketprism.target
    lab.systemctl("add-wants", "multi-user.target", "collector@okx_spot.service")
    admin = "/etc/systemd/system/collector@okx_spot.service.d/admin.conf"
    lab.write(admin, "[Service]\nNice=5\n")  # the admin's own drop-in: not ours to remove
    shipped = lab.run("dpkg-query", "-L", PACKAGE).stdout.split("\n")
    segments = lab.run("sh", "-c", "ls /dev/shm").stdout.split()
    assert {"marketprism.okx_spot", "marketprism-stats.okx_spot"} <= set(segments)
    assert lab.run("test", "-d", "/var/lib/marketprism", check=False).returncode == 0

    lab.apt_get("purge", PACKAGE)

    assert lab.package_version(PACKAGE) == ""
    left = lab.run("sh", "-c", 'for f; do [ -e "$f" ] && [ ! -d "$f" ] && echo "$f"; done; true',
                   "-", *[f for f in shipped if f]).stdout
    assert left == ""
    for path in ("/etc/marketprism", "/var/lib/marketprism", LIB, "/usr/share/marketprism"):
        assert lab.run("test", "-e", path, check=False).returncode != 0, path
    links = lab.run("sh", "-c", "ls -l /etc/systemd/system/*.wants/ "
                    "/etc/systemd/system/*.requires/ 2>/dev/null || true").stdout
    assert not re.search(r"collector@|analyzer@|marketprism", links), links
    dropins = lab.run("sh", "-c", "grep -rl 'marketprism units sync' /etc/systemd/system "
                      "|| true").stdout
    assert dropins == "" and MARKER.startswith("# Generated by")
    assert lab.run("test", "-f", admin, check=False).returncode == 0
    assert not [s for s in lab.run("ls", "/dev/shm").stdout.split()
                if s.startswith("marketprism")]
    active = lab.run("systemctl", "list-units", "--state=active", "--no-legend", "--plain",
                     "collector@*", "analyzer@*", "marketprism*").stdout
    assert active.strip() == ""
    lab.run("rm", "-rf", os.path.dirname(admin))
