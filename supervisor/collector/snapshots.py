"""ZeroMQ book snapshot service (ROUTER): "current book for symbol S" for late joiners.

A late joiner subscribes to the PUB socket first, then asks here. The reply carries the book
and the venue ``seq`` it is at (plus the ring sequence of the last record published), so the
joiner applies only deltas whose ``prev_seq`` is at or after that ``seq``. The service runs on
the collector's event loop, so a reply is always a state that was published.

Request (REQ or DEALER): ``{"symbol": "BTC-USDT"}`` (or the bare symbol as text).
Reply: ``{"instance", "symbol", "seq", "ring_seq", "bids", "asks"}`` with levels as
``[price, size]`` decimal strings, best first, or ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from supervisor import jsonlib
from supervisor.book import OrderBook

log = logging.getLogger("marketprism.snapshots")


def snapshot_reply(instance: str, books: dict[str, OrderBook], request: bytes,
                   ring_seq: int) -> dict[str, Any]:
    """Answer one request (pure function: tested without sockets)."""
    try:
        text = request.decode()
        symbol = jsonlib.loads(text)["symbol"] if text.startswith("{") else text.strip()
    except (UnicodeDecodeError, jsonlib.JSONDecodeError, KeyError, TypeError):
        return {"error": "bad request: expected {\"symbol\": \"...\"}"}
    book = books.get(symbol)
    if book is None:
        return {"error": f"unknown symbol {symbol!r}", "symbols": sorted(books)}
    if not book.synced:
        return {"error": f"book {symbol} is resyncing; retry", "symbol": symbol}
    bids, asks = book.snapshot_levels()
    return {"instance": instance, "symbol": symbol, "seq": book.seq, "ring_seq": ring_seq,
            "bids": [lv[:2] for lv in bids], "asks": [lv[:2] for lv in asks]}


async def serve_snapshots(sock: zmq.asyncio.Socket, instance: str,
                          books: Callable[[], dict[str, OrderBook]],
                          ring_seq: Callable[[], int]) -> None:
    """Answer requests on a bound ROUTER socket until cancelled."""
    while True:
        frames = await sock.recv_multipart()
        if len(frames) < 2:
            continue
        ident, body = frames[0], frames[-1]
        reply = snapshot_reply(instance, books(), body, ring_seq())
        # REQ peers put an empty delimiter frame between identity and body.
        envelope = [ident, b""] if len(frames) >= 3 and frames[1] == b"" else [ident]
        try:
            await sock.send_multipart(envelope + [jsonlib.dumps(reply)], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("snapshot reply to a slow peer dropped")
