"""Shared helpers of the NATS tests (no tests here).

- :class:`NatsServer`: a real ``nats-server -js`` on a free loopback port with its own store
  directory, which tests stop, freeze (SIGSTOP), and restart on the same port and store;
- :func:`synthetic_events` / :func:`fill_ring`: encoded events written to a ring;
- :func:`read_stream`: every message of a stream, in stream order;
- :func:`write_config`: a marketprism.toml with one instance and its ``nats`` table;
- :func:`wait_until`: poll a condition with a deadline (no sleep-and-hope).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor import codec
from supervisor.events import BookDelta, BookSnapshot, Event, Trade
from supervisor.nats_bridge.wire import MSG_ID, parse_msg_id

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
needs_nats = pytest.mark.skipif(not os.path.exists(NATS_SERVER),
                                reason="nats-server not installed (make deps: APT_TEST)")
T0 = 1_700_000_000 * 1_000_000_000


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.01) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A JetStream-enabled nats-server owned by one test."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store.parent / f"nats-{self.port}.log"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             str(self.store)], stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))  # noqa: SIM115 - the child owns it
        wait_until(self._accepting, 10, "nats-server to accept connections")
        return self

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def nats_server(tmp_path: Path) -> Any:
    pytest.importorskip("nats")
    if not os.path.exists(NATS_SERVER):
        pytest.skip("nats-server not installed (make deps: APT_TEST)")
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def instance() -> str:
    """An instance name no other test uses (its stats block is per instance)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    for suffix in ("", ".nats", ".analyzer"):
        try:
            os.unlink(f"/dev/shm/marketprism-stats.{name}{suffix}")
        except FileNotFoundError:
            pass


SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")


def synthetic_events(n: int, start: int = 1) -> list[Event]:
    """Trades, a snapshot per symbol, then chained deltas: ``n`` events, ring order."""
    out: list[Event] = []
    book_seq = dict.fromkeys(SYMBOLS, 1000)
    for i in range(start, start + n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        ts = T0 + i * 1000
        mono = time.monotonic_ns()
        if i % 4 == 0:
            out.append(Trade(sym, i, ts, ts, mono, str(i), "buy" if i % 8 else "sell",
                             f"{100 + i % 50}.5", "0.25"))
        elif i <= len(SYMBOLS) or book_seq[sym] == 1000:
            book_seq[sym] += 1
            out.append(BookSnapshot(sym, book_seq[sym], ts, ts, mono,
                                    [["99.5", "1"], ["99", "2"]], [["100.5", "1"], ["101", "3"]]))
        else:
            prev = book_seq[sym]
            book_seq[sym] += 1
            out.append(BookDelta(sym, book_seq[sym], ts, ts, mono, prev,
                                 [["99.5", str(1 + i % 7)]], [["100.5", str(1 + i % 5)]]))
    return out


def fill_ring(writer: Any, events: list[Event]) -> list[tuple[int, int, bytes]]:
    """Write ``events``; returns (seq, type id, payload) of each record."""
    enc = codec.Encoder()
    out = []
    for ev in events:
        kind, view = enc.encode(ev)
        payload = bytes(view)
        out.append((writer.write(payload, kind), kind, payload))
    return out


async def _read_stream(url: str, stream: str, subject: str, expect: int | None,
                       timeout: float) -> list[tuple[int, str, str, bytes]]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages if expect is None else expect
        sub = await js.pull_subscribe(subject, stream=stream)
        out: list[tuple[int, str, str, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(out) < total and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except TimeoutError:  # nats' and asyncio's
                continue
            for m in msgs:
                source, seq = parse_msg_id(m.headers[MSG_ID])
                out.append((seq, m.subject, source, m.data))
                await m.ack()
        return out
    finally:
        await nc.close()


def read_stream(url: str, stream: str, subject: str = ">", expect: int | None = None,
                timeout: float = 20.0) -> list[tuple[int, str, str, bytes]]:
    """(ring seq, subject, id source, payload) of every message, in stream order."""
    return asyncio.run(_read_stream(url, stream, subject, expect, timeout))


async def _stream_state(url: str, stream: str) -> Any:
    import nats

    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state
    finally:
        await nc.close()


def stream_state(url: str, stream: str) -> Any:
    return asyncio.run(_stream_state(url, stream))


def write_config(path: Path, instance: str, ring: str, url: str, ring_capacity: int = 1 << 22,
                 **nats: Any) -> Path:
    """One okx spot instance on ``ring`` with a ``nats`` table (extra keys from ``nats``)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    table = {"servers": [url], **nats}
    body = "\n".join(f"{k} = {value(v)}" for k, v in table.items())
    path.write_text(f"""[service]
state_dir = "{path.parent}"

[instances.{instance}]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
ring = "{ring}"
ring_capacity = {ring_capacity}

[instances.{instance}.nats]
{body}
""")
    return path


class BridgeThread:
    """A :class:`~supervisor.nats_bridge.bridge.Bridge` on its own event loop in a thread,
    so a synchronous test can write the ring and break the server meanwhile."""

    def __init__(self, instance: str, ring: str, cfg: Any) -> None:
        import logging
        import threading

        from supervisor.nats_bridge.bridge import Bridge

        self.bridge = Bridge(instance, ring, cfg, logging.getLogger(f"test.bridge.{instance}"))
        self.bridge.attach()
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.bridge.run())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    @property
    def stats(self) -> Any:
        return self.bridge.stats

    def doc(self) -> dict[str, Any]:
        """The stats document (read on the bridge's loop: it maps the ring)."""
        fut = asyncio.run_coroutine_threadsafe(self._doc(), self.loop)
        return fut.result(5)

    async def _doc(self) -> dict[str, Any]:
        return self.bridge.stats_doc()

    def wait_acked(self, seq: int, timeout: float = 20.0) -> None:
        wait_until(lambda: self.bridge.acked_seq >= seq, timeout,
                   f"the bridge to have ring seq {seq} acked (at {self.bridge.acked_seq}, "
                   f"state {self.bridge.state}, last error {self.stats.last_error!r})")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.bridge.request_stop)
        self.thread.join(20)
        assert not self.thread.is_alive(), "the bridge did not stop"
        self.bridge.close()
        self.loop.close()
        if self.error is not None:
            raise self.error
