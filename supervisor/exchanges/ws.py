"""The market-data WebSocket: frames go straight from the socket to the adapter.

aiohttp's client parses frames in Python and hands each message through a queue and a
future to a reader coroutine: at tens of thousands of frames a second that machinery alone
took ~40 % of a collector's core. :mod:`picows` parses frames in C and calls us
synchronously from the protocol's ``data_received``, so :meth:`Feed.handle_frame
<supervisor.exchanges.base.Feed.handle_frame>` runs directly for every frame, with no
per-message task switch. aiohttp stays for REST, and remains the WebSocket fallback where
picows cannot load (``BACKEND`` says which is in use; ``MARKETPRISM_WS=aiohttp`` forces it).

:class:`WebSocket` is what venue hooks see as ``ws`` (``on_open(ws)``, ``keepalive(ws)``):
``closed``, ``close_code``, ``send_str``, ``send_bytes``, ``close()``, plus
``wait_closed()`` for the connection loop. What picows leaves to its user is done here:

- text and binary frames reach ``on_frame(data, ts_recv, ts_mono)`` as ``bytes`` (every
  adapter parses ``str | bytes``), stamped when the frame was parsed;
- fragmented messages (a data frame without FIN, then CONTINUATION frames; control frames
  may come in between) are reassembled, up to ``max_msg_size`` (else close 1009); a
  CONTINUATION without a started message, or a new data frame inside one, is a protocol
  error (close 1002);
- PING is answered by picows (``enable_auto_pong``); PONG is ignored;
- a peer's CLOSE is answered with the same code, then the TCP connection is closed;
  ``close_code`` is the peer's code, 1006 when the connection dropped without one;
- :meth:`WebSocket.close` sends CLOSE and waits up to :data:`CLOSE_TIMEOUT` for the peer's
  answer before dropping the connection (a stalled peer does not hold a reconnect);
- connecting (TCP, TLS for ``wss://`` with the system's CA store and the host name
  checked, the HTTP upgrade) is bounded by ``timeout``;
- each read from the socket (or the TLS layer) takes at most :data:`READ_SIZE` bytes (see
  :func:`bound_reads`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp

try:
    if os.environ.get("MARKETPRISM_WS", "") == "aiohttp":
        raise ImportError("MARKETPRISM_WS=aiohttp")
    import picows

    BACKEND = "picows"
    # picows logs every connect and disconnect at INFO without our instance name; our own
    # connection loop logs those. Its warnings and errors still come through.
    logging.getLogger("picows").setLevel(logging.WARNING)
except ImportError:  # pragma: no cover - exercised with MARKETPRISM_WS=aiohttp
    picows = None  # type: ignore[assignment]
    BACKEND = "aiohttp"

FrameHandler = Callable[[Any, int, int], None]  # (data, ts_recv ns, ts_mono ns)

CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's CLOSE after ours
MAX_MSG_SIZE = 64 * 1024 * 1024
ABNORMAL_CLOSURE = 1006  # RFC 6455: closed without a close frame
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
USER_AGENT = "marketprism"
# Below glibc's 128 KiB mmap threshold: asyncio's default, 256 KiB, made every recv()
# mmap a fresh buffer, mremap it to the bytes read and munmap it (~18 us per read here).
READ_SIZE = 64 * 1024


def bound_reads(transport: Any) -> None:
    """Read at most :data:`READ_SIZE` bytes per call on an asyncio stream transport.

    asyncio allocates a ``bytes`` of the transport's ``max_size`` (256 KiB) for every
    ``recv()`` and for every TLS ``read()``, then shrinks it to what arrived. Above glibc's
    mmap threshold, that is an mmap, an mremap and an munmap per read, with page faults,
    on the path of every burst of frames. 64 KiB reads stay in the heap; a socket holding
    more is drained by the next loop iterations.
    """
    # max_size is a class attribute of asyncio's socket transports and of its SSLProtocol
    # (the TLS layer behind ``_ssl_protocol``); an instance attribute overrides it
    for obj in (transport, getattr(transport, "_ssl_protocol", None)):
        if obj is not None and hasattr(obj, "max_size"):
            obj.max_size = READ_SIZE


class WebSocket:
    """One client connection, as venue hooks and the connection loop use it."""

    close_code: int | None = None

    @property
    def closed(self) -> bool:
        """True once a close was sent or received, or the connection is gone."""
        raise NotImplementedError

    async def send_str(self, data: str) -> None:
        """Send one text frame; ``ConnectionError`` once closing."""
        raise NotImplementedError

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary frame; ``ConnectionError`` once closing."""
        raise NotImplementedError

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Close handshake (bounded by :data:`CLOSE_TIMEOUT`), then the TCP connection."""
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """Return once the connection is gone (peer close, our close, drop, error)."""
        raise NotImplementedError

    def exception(self) -> BaseException | None:
        """What broke the connection, if anything did (a protocol error, a dropped socket)."""
        return None


# ----- picows ----------------------------------------------------------------------------------
if picows is not None:
    _TEXT = picows.WSMsgType.TEXT
    _BINARY = picows.WSMsgType.BINARY
    _CONT = picows.WSMsgType.CONTINUATION
    _CLOSE = picows.WSMsgType.CLOSE

    class _Listener(picows.WSListener):  # type: ignore[misc]
        """picows' callbacks: the hot path is the first branch of :meth:`on_ws_frame`."""

        def __init__(self, ws: PicoWebSocket) -> None:
            self.ws = ws
            self.on_frame = ws.on_frame
            self.parts: bytearray | None = None  # a fragmented message being reassembled
            self.time_ns = time.time_ns
            self.mono_ns = time.monotonic_ns

        def on_ws_connected(self, transport: Any) -> None:
            # before any frame: frames in the upgrade answer's packet may need to reply
            self.ws.transport = transport
            bound_reads(transport.underlying_transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            mtype = frame.msg_type
            if (mtype is _TEXT or mtype is _BINARY) and frame.fin and self.parts is None:
                self.on_frame(frame.get_payload_as_bytes(), self.time_ns(), self.mono_ns())
                return
            self._other_frame(mtype, frame)

        def _other_frame(self, mtype: Any, frame: Any) -> None:
            ws = self.ws
            if mtype is _CLOSE:
                payload = frame.get_payload_as_bytes()
                ws.peer_closed(int.from_bytes(payload[:2], "big") if len(payload) >= 2
                               else 1005, payload[2:])
                return
            if mtype is _CONT:
                if self.parts is None:
                    ws.fail(PROTOCOL_ERROR, "continuation frame without a message to continue")
                    return
                self.parts += frame.get_payload_as_memoryview()
            elif mtype is _TEXT or mtype is _BINARY:
                if self.parts is not None:
                    ws.fail(PROTOCOL_ERROR, "new data frame inside a fragmented message")
                    return
                self.parts = bytearray(frame.get_payload_as_memoryview())
            else:
                return  # PONG (PING is answered by picows before it reaches us)
            if len(self.parts) > ws.max_msg_size:
                self.parts = None
                ws.fail(MESSAGE_TOO_BIG, f"message larger than {ws.max_msg_size} bytes")
                return
            if frame.fin:
                data, self.parts = bytes(self.parts), None
                self.on_frame(data, self.time_ns(), self.mono_ns())

        def on_ws_disconnected(self, transport: Any) -> None:
            self.ws.disconnected()

    class PicoWebSocket(WebSocket):
        """A picows client connection (see the module docstring)."""

        def __init__(self, on_frame: FrameHandler, max_msg_size: int) -> None:
            self.on_frame = on_frame
            self.max_msg_size = max_msg_size
            self.transport: Any = None
            self._closing = False  # a CLOSE was sent or received
            self._gone = asyncio.get_running_loop().create_future()
            self._exception: BaseException | None = None

        @property
        def closed(self) -> bool:
            return self._closing or self._gone.done()

        def exception(self) -> BaseException | None:
            return self._exception

        def _send(self, mtype: Any, data: bytes) -> None:
            if self.closed or self.transport is None:
                raise ConnectionResetError("websocket is closing")
            self.transport.send(mtype, data)

        async def send_str(self, data: str) -> None:
            self._send(_TEXT, data.encode())

        async def send_bytes(self, data: bytes) -> None:
            self._send(_BINARY, data)

        def _send_close(self, code: int, message: bytes = b"") -> None:
            # raw CLOSE frame: picows' send_close takes only its enum's codes
            self.transport.send(_CLOSE, code.to_bytes(2, "big") + message)

        def peer_closed(self, code: int, message: bytes) -> None:
            """The peer's CLOSE: answer it (unless it answers ours), then hang up."""
            if self.close_code is None:
                self.close_code = code
            if not self._closing:
                self._closing = True
                if code in (1005, 1006, 1015):  # reserved: never sent in a frame
                    code = 1000
                self._send_close(code)
            self.transport.disconnect()

        def fail(self, code: int, reason: str) -> None:
            """A protocol violation by the peer: close with ``code`` and hang up."""
            self._exception = ConnectionError(f"websocket protocol error: {reason}")
            if self.close_code is None:
                self.close_code = code
            if not self._closing:
                self._closing = True
                self._send_close(code, reason.encode()[:120])
            self.transport.disconnect()

        def disconnected(self) -> None:
            if self.close_code is None:
                self.close_code = ABNORMAL_CLOSURE
            if not self._gone.done():
                self._gone.set_result(None)

        async def close(self, code: int = 1000, message: bytes = b"") -> None:
            if self.transport is None:
                return
            if not self.closed:
                self._closing = True
                self._send_close(code, message)
            try:
                await asyncio.wait_for(asyncio.shield(self._gone), CLOSE_TIMEOUT)
            except TimeoutError:
                self.transport.disconnect(graceful=False)
                await asyncio.shield(self._gone)

        async def wait_closed(self) -> None:
            await asyncio.shield(self._gone)

    async def _connect_picows(url: str, on_frame: FrameHandler, timeout: float,
                              max_msg_size: int, ssl_context: ssl.SSLContext | None
                              ) -> WebSocket:
        ws = PicoWebSocket(on_frame, max_msg_size)
        try:
            transport, _ = await asyncio.wait_for(picows.ws_connect(
                lambda: _Listener(ws), url, ssl_context=ssl_context,
                websocket_handshake_timeout=timeout,
                enable_auto_pong=True, max_frame_size=max_msg_size,
                extra_headers={"User-Agent": USER_AGENT}), timeout)
        except picows.WSError as exc:  # a refused upgrade (HTTP 4xx/5xx, bad accept key)
            raise ConnectionError(str(exc)) from exc
        ws.transport = transport
        if transport.underlying_transport.is_closing() and not ws._gone.done():
            # the peer hung up during the upgrade: picows returns, but never reports it
            raise ConnectionResetError("connection closed during the websocket upgrade")
        return ws


# ----- aiohttp (fallback) -------------------------------------------------------------------------
class AiohttpWebSocket(WebSocket):
    """aiohttp's client WebSocket behind the same interface, its messages pumped by a task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, on_frame: FrameHandler) -> None:
        self._ws = ws
        self.on_frame = on_frame
        self._reader = asyncio.ensure_future(self._read())
        self._exception: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property  # type: ignore[override]
    def close_code(self) -> int | None:
        return self._ws.close_code

    def exception(self) -> BaseException | None:
        return self._exception or self._ws.exception()

    async def send_str(self, data: str) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket is closing")
        await self._ws.send_str(data)

    async def send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket is closing")
        await self._ws.send_bytes(data)

    async def _read(self) -> None:
        handle, time_ns, mono_ns = self.on_frame, time.time_ns, time.monotonic_ns
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        try:
            async for msg in self._ws:
                if msg.type is text or msg.type is binary:
                    handle(msg.data, time_ns(), mono_ns())
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    self._exception = self._ws.exception()
                    break
        finally:
            if not self._ws.closed:
                await self._ws.close()

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        await self._ws.close(code=code, message=message)  # bounded by ws_connect's timeout

    async def wait_closed(self) -> None:
        await asyncio.shield(self._reader)


async def _connect_aiohttp(url: str, on_frame: FrameHandler, session: aiohttp.ClientSession,
                           max_msg_size: int, ssl_context: ssl.SSLContext | None) -> WebSocket:
    ws = await session.ws_connect(url, autoping=True, heartbeat=None, max_msg_size=max_msg_size,
                                  timeout=CLOSE_TIMEOUT, headers={"User-Agent": USER_AGENT},
                                  ssl=ssl_context if ssl_context is not None else None)
    return AiohttpWebSocket(ws, on_frame)


async def connect(url: str, on_frame: FrameHandler, *, session: aiohttp.ClientSession | None,
                  timeout: float = 10.0, max_msg_size: int = MAX_MSG_SIZE,
                  ssl_context: ssl.SSLContext | None = None, backend: str = "") -> WebSocket:
    """Open ``url`` (``ws://`` or ``wss://``); every text/binary message goes to ``on_frame``.

    Connection failures raise ``OSError`` (``ConnectionError``, TLS errors such as an
    unverifiable certificate) or ``TimeoutError``; ``session`` is used by the aiohttp
    fallback only. ``ssl_context`` replaces the default (system CAs, host name checked).
    """
    backend = backend or BACKEND
    if backend == "picows" and picows is not None:
        return await _connect_picows(url, on_frame, timeout, max_msg_size, ssl_context)
    if session is None:
        raise ValueError("the aiohttp WebSocket backend needs a ClientSession")
    try:
        return await asyncio.wait_for(
            _connect_aiohttp(url, on_frame, session, max_msg_size, ssl_context), timeout)
    except aiohttp.ClientError as exc:
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc


__all__ = ["BACKEND", "WebSocket", "connect", "CLOSE_TIMEOUT", "MAX_MSG_SIZE"]
