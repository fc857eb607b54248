"""Helpers for the replay-exchange tests: plain aiohttp clients, deadlines, reference books.

Every wait here has a deadline; nothing sleeps and hopes. The venue rules are written out
again from the venues' documentation (not imported from the server) so the tests check the
server against the rule, not against itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp

from supervisor import jsonlib
from supervisor.replay import ReplayExchange

DEADLINE = 10.0


def run(fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run an async test body with an overall deadline."""
    return asyncio.run(asyncio.wait_for(fn(), timeout))


class Client:
    """One WebSocket client (autoping off, so tests see the server's pings)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(cls, url: str) -> Client:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url, autoping=False, max_msg_size=0)
        return cls(session, ws)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else jsonlib.dumps(obj).decode())

    async def receive(self, timeout: float = DEADLINE) -> aiohttp.WSMessage:
        return await self.ws.receive(timeout=timeout)

    async def recv(self, timeout: float = DEADLINE) -> Any:
        """The next text frame, decoded; fails on anything else."""
        msg = await self.ws.receive(timeout=timeout)
        while msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return jsonlib.loads(msg.data)

    async def recv_until(self, pred: Callable[[Any], bool], timeout: float = DEADLINE,
                         keep: list[Any] | None = None) -> Any:
        """Frames until one satisfies ``pred``, which is returned; every frame read (that one
        too) is appended to ``keep`` first."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0, "deadline passed waiting for a frame"
            obj = await self.recv(left)
            if keep is not None:
                keep.append(obj)
            if pred(obj):
                return obj

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def get_json(url: str, params: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, body, headers) of one GET."""
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as resp:
        return resp.status, jsonlib.loads(await resp.read()), resp.headers


async def wait_for(cond: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll a condition on the event loop until it holds (or fail at the deadline)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.005)


class RefBook:
    """A reference book: price text -> size text per side, Decimal-keyed for ordering."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, str] = {}
        self.asks: dict[Decimal, str] = {}

    def load(self, bids: list[list[Any]], asks: list[list[Any]]) -> None:
        self.bids = {Decimal(str(p)): str(q) for p, q, *_ in bids}
        self.asks = {Decimal(str(p)): str(q) for p, q, *_ in asks}

    def apply(self, bids: list[list[Any]], asks: list[list[Any]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q, *_ in levels:
                if Decimal(str(q)) == 0:
                    side.pop(Decimal(str(p)), None)
                else:
                    side[Decimal(str(p))] = str(q)

    def top(self, n: int) -> tuple[list[tuple[Decimal, str]], list[tuple[Decimal, str]]]:
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return bids, asks

    def crossed(self) -> bool:
        return bool(self.bids) and bool(self.asks) and max(self.bids) >= min(self.asks)


def server_book(rx: ReplayExchange, venue: str, symbol: str) -> RefBook:
    """The server's current book for ``symbol`` as a RefBook (for checkpoints)."""
    m = rx.markets.find(venue, symbol)
    assert m is not None, f"no market {venue} {symbol}"
    bids, asks = m.top(100_000)
    ref = RefBook()
    ref.load([[m.price_text(t), m.size_text(n)] for t, n in bids],
             [[m.price_text(t), m.size_text(n)] for t, n in asks])
    return ref


def same_book(a: RefBook, b: RefBook) -> bool:
    """Equal books: same prices, same sizes as numbers."""
    def norm(side: dict[Decimal, str]) -> dict[Decimal, Decimal]:
        return {p: Decimal(q) for p, q in side.items()}
    return norm(a.bids) == norm(b.bids) and norm(a.asks) == norm(b.asks)


def crc32(data: bytes) -> int:
    """Bitwise CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def okx_checksum(book: RefBook) -> int:
    """OKX's documented book checksum: the top 25 bids and asks interleaved as
    ``bidPx:bidSz:askPx:askSz:...`` (a shorter side just ends), CRC-32 as signed int32."""
    bids, asks = book.top(25)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += [str(bids[i][0]), bids[i][1]]
        if i < len(asks):
            parts += [str(asks[i][0]), asks[i][1]]
    value = crc32(":".join(parts).encode())
    return value - (1 << 32) if value & 0x80000000 else value
