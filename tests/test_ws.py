"""The market-data WebSocket client (supervisor/exchanges/ws.py) against a raw server.

The server here speaks RFC 6455 byte by byte (handshake, then frames we write ourselves),
so each test can send what a library server never would on its own: fragmented messages
with a ping in between, continuation frames out of place, a close with an application
code, a peer that never answers our close, an upgrade that never comes. TLS runs against a
throw-away certificate made with ``openssl``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import ssl
import struct
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from supervisor.exchanges import ws as ws_mod

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BACKENDS = ["picows", "aiohttp"] if ws_mod.picows is not None else ["aiohttp"]
needs_picows = pytest.mark.skipif(ws_mod.picows is None, reason="picows not loaded")


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


class Peer:
    """One accepted connection: read the client's frames, write raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(opcode, unmasked payload) of the client's next frame."""
        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            mask = await self.reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = await self.reader.readexactly(n)
            return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return await asyncio.wait_for(read(), timeout)


class RawServer:
    """A WebSocket server whose every byte after the upgrade is the test's."""

    def __init__(self, upgrade: bool = True, status: int = 101,
                 ssl_ctx: ssl.SSLContext | None = None, first: bytes = b"") -> None:
        self.first = first  # frames written with the upgrade answer, in one write
        self.upgrade = upgrade
        self.status = status
        self.ssl_ctx = ssl_ctx
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_ctx)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'wss' if self.ssl_ctx else 'ws'}://localhost:{port}/ws?x=1"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not self.upgrade:
            await asyncio.sleep(30)  # never answer the upgrade
            return
        if self.status != 101:
            writer.write(f"HTTP/1.1 {self.status} Nope\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()
            return
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + self.first)
        await self.peers.put(Peer(reader, writer))

    async def peer(self) -> Peer:
        return await asyncio.wait_for(self.peers.get(), 5)


class Frames:
    """The client's ``on_frame``: what arrived, with its stamps."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.event = asyncio.Event()

    def __call__(self, data: bytes | str, ts_recv: int, ts_mono: int) -> None:
        assert abs(ts_recv - time.time_ns()) < 5e9 and ts_mono <= time.monotonic_ns()
        self.got.append(data.encode() if isinstance(data, str) else bytes(data))
        self.event.set()

    async def wait(self, n: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            self.event.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(self.got)} frames of {n}: {self.got}"
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except TimeoutError:
                pass
        return self.got


async def open_client(server: RawServer, backend: str, frames: Frames, **kw: object):
    session = aiohttp.ClientSession() if backend == "aiohttp" else None
    try:
        ws = await ws_mod.connect(server.url, frames, session=session, backend=backend,
                                  **kw)  # type: ignore[arg-type]
    except BaseException:
        if session is not None:
            await session.close()
        raise
    return ws, session


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_binary_and_sends(backend):
    async def main():
        async with RawServer() as srv:
            frames = Frames()
            ws, session = await open_client(srv, backend, frames)
            peer = await srv.peer()
            peer.send(frame(1, b'{"a":1}') + frame(2, b"\x00\x01") + frame(1, b"x" * 70_000))
            assert await frames.wait(3) == [b'{"a":1}', b"\x00\x01", b"x" * 70_000]
            await ws.send_str('{"op":"subscribe"}')
            assert await peer.recv() == (1, b'{"op":"subscribe"}')
            await ws.send_bytes(b"\x05")
            assert await peer.recv() == (2, b"\x05")
            assert not ws.closed
            peer.send(frame(8, struct.pack("!H", 1000)))
            assert await peer.recv() == (8, struct.pack("!H", 1000))
            await asyncio.wait_for(ws.wait_closed(), 5)
            if session is not None:
                await session.close()
    run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fragmented_message_with_a_ping_in_between_is_reassembled(backend):
    async def main():
        async with RawServer() as srv:
            frames = Frames()
            ws, session = await open_client(srv, backend, frames)
            peer = await srv.peer()
            peer.send(frame(1, b'{"part":', fin=False) + frame(9, b"hb")
                      + frame(0, b'"one",', fin=False))
            assert await peer.recv() == (10, b"hb")  # the ping answered mid-message
            peer.send(frame(0, b'"end":1}') + frame(1, b"next"))
            assert await frames.wait(2) == [b'{"part":"one","end":1}', b"next"]
            await ws.close()
            assert (await peer.recv())[0] == 8
            peer.writer.close()
            await asyncio.wait_for(ws.wait_closed(), 5)
            if session is not None:
                await session.close()
    run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_peer_close_code_is_echoed_and_reported(backend):
    async def main():
        async with RawServer() as srv:
            ws, session = await open_client(srv, backend, Frames())
            peer = await srv.peer()
            peer.send(frame(8, struct.pack("!H", 4001) + b"maintenance"))
            op, payload = await peer.recv()
            assert op == 8
            if backend == "picows":  # aiohttp answers 1000 whatever the peer's code
                assert payload[:2] == struct.pack("!H", 4001)
            peer.writer.close()
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.closed and ws.close_code == 4001
            with pytest.raises(ConnectionError):
                await ws.send_str("too late")
            if session is not None:
                await session.close()
    run(main())


@needs_picows
def test_frames_and_a_close_in_the_upgrade_packet():
    async def main():
        early = frame(1, b'{"early":1}') + frame(8, struct.pack("!H", 1001))
        async with RawServer(first=early) as srv:
            frames = Frames()
            ws, _ = await open_client(srv, "picows", frames)
            peer = await srv.peer()
            assert await peer.recv() == (8, struct.pack("!H", 1001))  # answered
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert frames.got == [b'{"early":1}'] and ws.close_code == 1001
    run(main())


@needs_picows
def test_dropped_connection_is_1006():
    async def main():
        async with RawServer() as srv:
            ws, _ = await open_client(srv, "picows", Frames())
            peer = await srv.peer()
            peer.writer.transport.abort()  # no close frame
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.closed and ws.close_code == 1006
    run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_does_not_wait_for_a_stalled_peer(backend, monkeypatch):
    monkeypatch.setattr(ws_mod, "CLOSE_TIMEOUT", 0.3)

    async def main():
        async with RawServer() as srv:
            ws, session = await open_client(srv, backend, Frames())
            peer = await srv.peer()  # reads our close, never answers it
            t0 = time.monotonic()
            await ws.close()
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert time.monotonic() - t0 < 3
            assert (await peer.recv())[0] == 8
            if session is not None:
                await session.close()
    run(main())


@needs_picows
@pytest.mark.parametrize("bad, code", [
    (frame(0, b"orphan"), 1002),  # continuation with nothing to continue
    (frame(1, b"a", fin=False) + frame(1, b"b"), 1002),  # new message inside a fragmented one
])
def test_protocol_errors_close_the_connection(bad, code):
    async def main():
        async with RawServer() as srv:
            frames = Frames()
            ws, _ = await open_client(srv, "picows", frames)
            peer = await srv.peer()
            peer.send(bad)
            op, payload = await peer.recv()
            assert op == 8 and payload[:2] == struct.pack("!H", code)
            peer.writer.close()
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == code and isinstance(ws.exception(), ConnectionError)
            assert frames.got == []
    run(main())


@needs_picows
def test_message_larger_than_the_limit_is_refused_with_1009():
    async def main():
        async with RawServer() as srv:
            frames = Frames()
            ws, _ = await open_client(srv, "picows", frames, max_msg_size=1000)
            peer = await srv.peer()
            peer.send(frame(1, b"x" * 600, fin=False) + frame(0, b"y" * 600))
            op, payload = await peer.recv()
            assert op == 8 and payload[:2] == struct.pack("!H", 1009)
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert frames.got == []
    run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_connect_times_out_when_the_upgrade_never_comes(backend):
    async def main():
        async with RawServer(upgrade=False) as srv:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await open_client(srv, backend, Frames(), timeout=0.5)
            assert time.monotonic() - t0 < 3
    run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_upgrade_is_a_connection_error(backend):
    async def main():
        async with RawServer(status=404) as srv:
            with pytest.raises(ConnectionError):
                await open_client(srv, backend, Frames())
    run(main())


@needs_picows
def test_nobody_listening_is_an_oserror():
    async def main():
        srv = RawServer()
        async with srv:
            url = srv.url
        with pytest.raises(OSError):
            await ws_mod.connect(url, Frames(), session=None, timeout=2)
    run(main())


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("backend", BACKENDS)
def test_wss_verifies_the_certificate_and_then_carries_frames(backend, cert):
    crt, key = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)

    async def main():
        async with RawServer(ssl_ctx=server_ctx) as srv:
            # the default context (system CAs) refuses the self-signed certificate
            with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
                await open_client(srv, backend, Frames())
            trusted = ssl.create_default_context(cafile=str(crt))
            frames = Frames()
            ws, session = await open_client(srv, backend, frames, ssl_context=trusted)
            peer = await srv.peer()
            peer.send(frame(1, b"over tls"))
            assert await frames.wait(1) == [b"over tls"]
            await ws.send_str("hi")
            assert await peer.recv() == (1, b"hi")
            peer.send(frame(8, struct.pack("!H", 1000)))
            await asyncio.wait_for(ws.wait_closed(), 5)
            if session is not None:
                await session.close()
    run(main())



@needs_picows
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_a_burst_larger_than_one_read_arrives_whole_in_bounded_reads(tls, cert):
    """asyncio's 256 KiB reads cost an mmap/munmap each; ours stay at READ_SIZE (64 KiB)."""
    crt, key = cert
    server_ctx = client_ctx = None
    if tls:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(crt, key)
        client_ctx = ssl.create_default_context(cafile=str(crt))
    payloads = [bytes([i % 251]) * 1000 for i in range(600)]  # ~600 KB in one write

    async def main():
        async with RawServer(ssl_ctx=server_ctx) as srv:
            frames = Frames()
            ws, _ = await open_client(srv, "picows", frames, ssl_context=client_ctx)
            raw = ws.transport.underlying_transport
            if type(raw).__module__.startswith("asyncio."):  # picows < 1.10 (the .deb's)
                # TLS: the SSL layer's read() is bounded (the socket under it reads into a
                # buffer it keeps); plain: the socket transport's recv()
                reader = raw._ssl_protocol if tls else raw
                assert reader.max_size == ws_mod.READ_SIZE
            peer = await srv.peer()
            peer.send(b"".join(frame(2, p) for p in payloads))
            assert await frames.wait(len(payloads)) == payloads
            await ws.close()
    run(main())


# ----- the connection loop (Feed) on top of it ---------------------------------------------------
class EchoFeed:
    """A minimal venue: subscribes on open, counts frames, raises on non-JSON."""

    @staticmethod
    def make(url: str):
        from supervisor import jsonlib
        from supervisor.exchanges.base import Feed, FeedConfig

        class _Feed(Feed):
            exchange = "test"

            def __init__(self) -> None:
                super().__init__(FeedConfig(instance="t", exchange="test", market="spot",
                                            symbols=("BTC-USDT",), channels=frozenset(),
                                            ws_url=url, silence_timeout=0.6,
                                            backoff_initial=0.05, backoff_max=0.1),
                                 sink=lambda ev: None)
                self.frames: list[object] = []
                self.opens = 0

            def on_message(self, data, ts_recv, ts_mono):
                self.frames.append(jsonlib.loads(data))

            async def on_open(self, ws):
                self.opens += 1
                await self.send_json({"op": "subscribe", "n": self.opens})

        return _Feed()


@pytest.mark.parametrize("backend", BACKENDS)
def test_feed_survives_malformed_frames_silence_and_peer_close(backend, monkeypatch):
    monkeypatch.setattr(ws_mod, "BACKEND", backend)
    monkeypatch.setattr(ws_mod, "CLOSE_TIMEOUT", 0.3)

    async def main():
        async with RawServer() as srv:
            feed = EchoFeed.make(srv.url)
            task = asyncio.ensure_future(feed.run())
            # 1st connection: a good frame, a malformed one (counted), then silence
            peer = await srv.peer()
            assert await peer.recv() == (1, b'{"op":"subscribe","n":1}')
            peer.send(frame(1, b'{"a":1}') + frame(1, b"not json") + frame(1, b'{"a":2}'))
            # the silence watchdog closes with a close frame and reconnects
            op, _ = await peer.recv(timeout=5)
            assert op == 8
            peer.writer.close()
            peer = await srv.peer()
            assert await peer.recv() == (1, b'{"op":"subscribe","n":2}')
            assert feed.frames == [{"a": 1}, {"a": 2}] and feed.stats.malformed == 1
            # 2nd connection: the peer closes (code 1012): reconnect again
            peer.send(frame(8, struct.pack("!H", 1012)))
            peer = await srv.peer()
            assert await peer.recv() == (1, b'{"op":"subscribe","n":3}')
            # 3rd: the TCP connection drops without a close frame
            peer.writer.transport.abort()
            peer = await srv.peer()
            assert await peer.recv() == (1, b'{"op":"subscribe","n":4}')
            assert feed.stats.reconnects == 3 and feed.stats.connected
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert feed.ws is None and not feed.stats.connected
    run(main())
