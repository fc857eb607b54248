"""A real systemd 252 booted as PID 1 of a systemd-nspawn container, for end-to-end tests.

The host's PID 1 is not systemd; ``boot-systemd.sh`` (a project copy of
``shared/systemd-lab``) boots the host's own root through a throw-away overlay in ~1 s and
tears it down leaving nothing behind. The container shares the host's network namespace, so
ports it listens on are reachable from the tests on 127.0.0.1.

The checkout is bound at its own path, so the venv and the editable install work inside;
:meth:`SystemdLab.install_checkout` installs our units with a drop-in pointing ``ExecStart=``
at the checkout's console scripts (the .deb installs the same units with /usr/bin paths).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BOOT = HERE / "boot-systemd.sh"
VENV_BIN = REPO / ".venv" / "bin"

DEV_DROPINS = {
    "collector@.service": "marketprism-collector %i",
    "analyzer@.service": "marketprism-analyzer %i",
    "marketprism-aggregator.service": "marketprism-aggregator",
    "marketprism-failure@.service": "marketprism record-failure %i",
}


class LabError(RuntimeError):
    pass


def available() -> str:
    """'' if a lab can boot here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, cgroups, mounts)"
    if not Path("/usr/bin/systemd-nspawn").exists():
        return "systemd-nspawn missing (apt-get install systemd-container)"
    return ""


class SystemdLab:
    """Boot, drive and tear down one container. Use as a context manager."""

    def __init__(self, name: str = "mplab", binds: tuple[str, ...] = ()) -> None:
        self.name = name
        self.env = dict(os.environ, SDLAB_NAME=name,
                        SDLAB_BIND=" ".join((f"{REPO}:{REPO}", *binds)), SDLAB_TIMEOUT="60")

    # ----- lifecycle ----------------------------------------------------------------------
    def _boot(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BOOT), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def up(self) -> None:
        self._boot("down")  # a lab left over by a killed run
        proc = self._boot("up")
        if proc.returncode != 0:
            raise LabError(f"boot failed:\n{proc.stderr[-3000:]}")

    def down(self) -> None:
        self._boot("down")

    def __enter__(self) -> SystemdLab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ----- commands -----------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the container (all its namespaces)."""
        proc = subprocess.run([str(BOOT), "exec", *cmd], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise LabError(f"{shlex.join(cmd)} -> {proc.returncode}\n"
                           f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 60
           ) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120
                  ) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(props)).stdout
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, prop: str) -> str:
        return self.show(unit, prop).get(prop, "")

    def journal(self, unit: str, *args: str) -> str:
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat", *args).stdout

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("/bin/sh", "-c", f"mkdir -p {shlex.quote(os.path.dirname(path))} && "
                 f"cat > {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}", input=text)

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = 30,
                 interval: float = 0.2) -> object:
        """Poll ``predicate`` until truthy; raise with ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise LabError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    # ----- marketprism from the checkout ----------------------------------------------------------
    def install_checkout(self, config_text: str) -> None:
        """Our units + sysusers + a config, ExecStart= pointed at the checkout's venv."""
        for unit in sorted((REPO / "units").iterdir()):
            if unit.suffix in (".service", ".target"):
                self.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
        self.write("/etc/sysusers.d/marketprism.conf",
                   (REPO / "units" / "marketprism.sysusers").read_text())
        for unit, cmd in DEV_DROPINS.items():
            self.write(f"/etc/systemd/system/{unit}.d/50-checkout.conf",
                       f"# Test lab: run from the checkout instead of /usr/bin.\n[Service]\n"
                       f"ExecStart=\nExecStart={VENV_BIN}/{cmd}\n")
        self.write("/etc/marketprism/marketprism.toml", config_text)
        self.run("systemd-sysusers")
        self.run(str(VENV_BIN / "marketprism"), "units", "sync")
        self.systemctl("daemon-reload")

    # ----- the Debian package (tests/test_deb.py) -------------------------------------------
    # Installing in the container writes only to its overlay: the host's dpkg database and
    # files are untouched, and everything is gone after down().
    def apt_get(self, *args: str, check: bool = True, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
        """``apt-get -y ARGS`` inside, non-interactive, with stdin closed (a conffile prompt
        fails instead of waiting). On a timeout the error carries the container's pending
        jobs and process tree (what a maintainer script was waiting for)."""
        try:
            return self.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
                            *args, check=check, timeout=timeout, input="")
        except subprocess.TimeoutExpired as exc:
            state = self.sh("systemctl list-jobs --no-pager; ps -ef --forest | tail -n 60",
                            check=False).stdout
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            raise LabError(f"apt-get {' '.join(args)}: no answer after {timeout}s\n"
                           f"output: {out[-2000:]}\ncontainer:\n{state}") from None

    def package_version(self, package: str) -> str:
        """The installed version of ``package``, '' when it is not installed."""
        proc = self.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", package,
                        check=False)
        return proc.stdout[3:] if proc.stdout.startswith("ii") else ""

    def allow_service_actions(self) -> None:
        """Remove the host image's ``policy-rc.d`` (Docker's "exit 101") inside the container.

        With it, ``deb-systemd-invoke`` in maintainer scripts refuses every start, restart and
        stop; a real machine has none, and the package's scripts are what is under test.
        """
        self.run("rm", "-f", "/usr/sbin/policy-rc.d")
