"""Serving recorded sessions (cryptofeed line format, :mod:`supervisor.replay.recording`).

A :class:`Recording` indexes a venue's ``*.ws.*`` file (the frames the venue sent, in
order, each filed under the subscription it belongs to) and its ``*.http.*`` file (REST
bodies by path and symbol). :func:`play` replays the frames to one connection once it has
subscribed: only frames of streams it subscribed to, in recorded order, as fast as the
client reads (``speed`` 0) or at ``speed`` times the recorded pace. Every connection gets
the whole recording from the start, so a reconnecting client resyncs against the same
data. The recorded subscribe acks are not replayed; the venue module answers requests.

Frames are filed by venue: Binance by ``stream``; Deribit by channel without its interval
(``book.X.raw`` serves a ``book.X.100ms`` subscription, renamed on the way out); OKX by
``channel:instId`` (or ``channel:instType``).
"""

from __future__ import annotations

import asyncio
import glob
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from supervisor import jsonlib
from supervisor.replay.recording import read_http, read_ws
from supervisor.replay.session import BOOK_UPDATE, BURST, DATA, HIGH_WATER

if TYPE_CHECKING:
    from supervisor.replay.session import Session

log = logging.getLogger("marketprism.replay")

BINANCE_KINDS = {"depth": "book", "trade": "trade", "aggTrade": "aggtrade",
                 "markPrice": "funding", "forceOrder": "liquidation", "bookTicker": "ticker"}
DERIBIT_KINDS = {"book": "book", "trades": "trade", "ticker": "ticker",
                 "deribit_volatility_index": "volidx"}
OKX_KINDS = {"books": "book", "trades": "trade", "funding-rate": "funding",
             "open-interest": "oi", "liquidation-orders": "liquidation"}


class Frame(NamedTuple):
    ts: float  # recorded receive time, s
    key: str  # the subscription it belongs to (see module docstring)
    payload: bytes  # exactly as recorded
    flags: int  # DATA, plus BOOK_UPDATE for book deltas


def classify(venue: str, msg: Any) -> tuple[str, str, int, str] | None:
    """(key, kind, flags, full channel name) of a recorded push; None for anything else."""
    if not isinstance(msg, dict):
        return None
    if venue.startswith("binance"):
        stream = msg.get("stream")
        if not isinstance(stream, str):
            return None
        typ = stream.split("@")[1] if "@" in stream else ""
        kind = BINANCE_KINDS.get(typ, "kline" if typ.startswith("kline") else typ)
        return stream, kind, DATA | (BOOK_UPDATE if kind == "book" else 0), stream
    if venue == "deribit":
        params = msg.get("params")
        if msg.get("method") != "subscription" or not isinstance(params, dict):
            return None
        channel = params.get("channel", "")
        head, _, tail = channel.rpartition(".")
        key = head if tail in ("100ms", "agg2", "raw") else channel
        data = params.get("data")
        change = isinstance(data, dict) and data.get("type") == "change"
        return key, DERIBIT_KINDS.get(channel.split(".")[0], "other"), \
            DATA | (BOOK_UPDATE if change else 0), channel
    if venue == "okx":
        arg = msg.get("arg")
        if not isinstance(arg, dict) or "data" not in msg:
            return None
        channel = arg.get("channel", "")
        key = f"{channel}:{arg.get('instId') or arg.get('instType')}"
        update = msg.get("action") == "update"
        return key, OKX_KINDS.get(channel, "other"), DATA | (BOOK_UPDATE if update else 0), key
    return None


def resolve(path: str) -> tuple[Path, Path | None]:
    """A ``*.ws.*`` file, or a name prefix (``.../BINANCE_FUTURES``) -> (ws file, http file)."""
    p = Path(path)
    if ".ws." in p.name and p.is_file():
        ws = p
        prefix = str(p)[: str(p).rindex(".ws.")]
    else:
        prefix = str(p)
        found = sorted(glob.glob(glob.escape(prefix) + ".ws.*"))
        if not found:
            raise FileNotFoundError(f"no recording {prefix}.ws.*")
        ws = Path(found[0])
    http = sorted(glob.glob(glob.escape(prefix) + ".http.*"))
    return ws, (Path(http[0]) if http else None)


class Recording:
    """One venue's recorded session, indexed for serving (see module docstring)."""

    def __init__(self, venue: str, path: str) -> None:
        self.venue = venue
        self.ws_path, self.http_path = resolve(path)
        self.frames: list[Frame] = []
        self.keys: dict[str, str] = {}  # key -> kind, for every key that has frames
        self.channels: dict[str, str] = {}  # key -> channel name as recorded
        for line in read_ws(self.ws_path):
            if line.direction != "recv":
                continue
            try:
                msg = jsonlib.loads(line.message)
            except jsonlib.JSONDecodeError:
                continue
            info = classify(venue, msg)
            if info is None:
                continue
            key, kind, flags, channel = info
            self.keys.setdefault(key, kind)
            self.channels.setdefault(key, channel)
            self.frames.append(Frame(line.ts, key, line.message.encode(), flags))
        self.rest: dict[tuple[str, str], str] = {}
        if self.http_path is not None:
            for resp in read_http(self.http_path):
                symbol = (resp.params.get("symbol") or resp.params.get("instId")
                          or resp.params.get("instrument_name") or "")
                self.rest.setdefault((resp.path, symbol), resp.body)

    def rest_body(self, path: str, symbol: str) -> str | None:
        """The recorded body for ``path`` (e.g. ``/fapi/v1/depth``) and ``symbol``."""
        return self.rest.get((path, symbol))

    def __len__(self) -> int:
        return len(self.frames)

    async def play(self, session: Session) -> None:
        """Replay this recording to ``session`` (runs as its pump)."""
        await play(session, self)


async def play(session: Session, rec: Recording) -> None:
    """Replay ``rec`` to ``session`` (runs as the session's pump)."""
    await session.subscribed.wait()
    cfg = session.cfg
    if cfg.playback_delay > 0:  # let a client that subscribes in several requests finish
        await asyncio.sleep(cfg.playback_delay)
    loop = session.loop
    frames = rec.frames
    speed = cfg.speed
    start_rec = frames[0].ts if frames else 0.0
    start = loop.time()
    i, n = 0, len(frames)
    while i < n and not session.closed:
        now = loop.time()
        if session.stalled_until:
            if now < session.stalled_until:
                await asyncio.sleep(session.stalled_until - now)
                start += loop.time() - now  # a stall shifts the recorded timeline
                continue
            session.stalled_until = 0.0
        index = {session.record_key(s): s for s in session.streams.values()}
        sent = 0
        due = 0.0
        while i < n and sent < BURST:
            frame = frames[i]
            if speed > 0:
                due = start + (frame.ts - start_rec) / speed
                if due > now:
                    break
            i += 1
            st = index.get(frame.key)
            if st is None:
                continue
            payload = frame.payload
            if st.rename is not None:
                payload = payload.replace(st.rename[0], st.rename[1], 1)
            session.deliver(st, payload, frame.flags)
            sent += 1
            if session.closed or session.stalled_until:
                break
        session.flush()
        transport = session.transport
        if transport is not None and transport.get_write_buffer_size() > HIGH_WATER:
            await session.drain()
        elif speed > 0 and i < n and due > now:
            await asyncio.sleep(min(due - now, 0.05))
        else:
            await asyncio.sleep(0)
    if not session.closed:
        log.info("%s conn#%d recording finished (%d frames)", session.venue, session.id, n)
