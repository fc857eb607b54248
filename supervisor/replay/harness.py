"""Running the replay exchange beside synchronous code: in a thread or in a subprocess.

Usage::

    with ReplayThread(rate=500, seed=3) as rx:      # own event loop in a daemon thread
        ws_url, rest_url = rx.endpoints("okx_spot")
        rx.inject("okx", "drop", symbol="BTC-USDT")
        rx.stats()["venues"]["okx"]["faults_applied"]

    with ReplayProcess(["--rate", "20000"]) as rx:  # ``marketprism-replay serve`` child
        rx.url, rx.port; rx.inject(...); rx.stats()  # through the HTTP control API

Both expose the same small API (``port``, ``url``, ``ws_url``, ``rest_url``,
``endpoints``, ``inject``, ``clear_faults``, ``stats``). The thread variant forwards calls
onto the server's loop, so it is safe to use from the test's thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from supervisor import jsonlib
from supervisor.replay import timers
from supervisor.replay.server import ENDPOINTS, ReplayExchange, endpoint_name

LISTEN_RE = re.compile(r"listening on (http://[^\s]+:(\d+))")


def control(url: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    """One control-API call (``url`` is the full URL); returns the decoded JSON answer.

    HTTP errors raise ValueError with the server's message.
    """
    data = None if body is None else jsonlib.dumps(body)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return jsonlib.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise ValueError(f"HTTP {exc.code}: {detail}") from None


class _Addresses:
    """Address helpers shared by the thread and process variants."""

    host = "127.0.0.1"
    port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, venue: str) -> str:
        return f"ws://{self.host}:{self.port}{ENDPOINTS[endpoint_name(venue)][0]}"

    def rest_url(self, venue: str) -> str:
        return f"{self.url}{ENDPOINTS[endpoint_name(venue)][1]}"

    def endpoints(self, instance: str) -> tuple[str, str]:
        return self.ws_url(instance), self.rest_url(instance)

    def inject(self, venue: str, kind: str, symbol: str | None = None, count: int = 1,
               **params: Any) -> dict[str, Any]:
        body = {"venue": venue, "kind": kind, "symbol": symbol, "count": count, **params}
        return control(self.url + "/_control/fault", "POST", body)["fault"]

    def clear_faults(self) -> int:
        return control(self.url + "/_control/fault", "DELETE")["cleared"]

    def stats(self) -> dict[str, Any]:
        return control(self.url + "/_control/stats")


class ReplayThread(_Addresses):
    """A :class:`ReplayExchange` on its own event loop in a daemon thread."""

    def __init__(self, **overrides: Any) -> None:
        overrides.setdefault("port", 0)
        self.overrides = overrides
        self.rx: ReplayExchange | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="replay-exchange", daemon=True)

    def _main(self) -> None:
        loop = self.loop = timers.new_event_loop()
        try:
            self.rx = ReplayExchange(**self.overrides)
            loop.run_until_complete(self.rx.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.host, self.port = self.rx.cfg.host, self.rx.port
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.rx.stop())
        loop.close()

    def start(self, timeout: float = 10.0) -> ReplayThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("replay exchange did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the server's loop and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10.0)

    def inject(self, venue: str, kind: str, symbol: str | None = None, count: int = 1,
               **params: Any) -> dict[str, Any]:
        assert self.rx is not None
        return self.call(self.rx.inject, venue, kind, symbol, count, **params).as_dict()

    def clear_faults(self) -> int:
        assert self.rx is not None
        return self.call(self.rx.clear_faults)

    def stats(self) -> dict[str, Any]:
        assert self.rx is not None
        return self.call(self.rx.stats)

    def __enter__(self) -> ReplayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReplayProcess(_Addresses):
    """``python -m supervisor.replay.main serve --port 0 ARGS`` as a child process.

    The port is read from the server's "listening on" line; ``stop()`` sends SIGTERM and
    expects exit status 0.
    """

    def __init__(self, args: list[str] | None = None, python: str = sys.executable) -> None:
        self.args = list(args or [])
        self.python = python
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []  # stdout lines read so far

    def start(self, timeout: float = 20.0) -> ReplayProcess:
        cmd = [self.python, "-m", "supervisor.replay.main", "serve", "--port", "0", *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        found = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = LISTEN_RE.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()
            found.set()

        threading.Thread(target=reader, name="replay-stdout", daemon=True).start()
        if not found.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError("replay process did not start: " + "\n".join(self.lines[-20:]))
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the child; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> ReplayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
