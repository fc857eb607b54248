"""One client connection of the replay exchange: subscriptions, the pump, the write path.

A venue module subclasses :class:`Session` (the protocol: parse requests, acks, render
pushes) and the base class owns what every venue shares:

- **The write path.** Frames are built here, not by aiohttp: a server frame is just
  ``0x81 | length | payload`` (servers never mask), so pushes are appended to a list and
  written with one ``transport.write`` per pump tick. That avoids an ``await`` and a
  syscall per message, which is what makes tens of thousands of messages a second per
  connection possible on one core. aiohttp's own writer is only used for the close
  handshake; its frames never interleave with ours because both write whole frames from
  the one event-loop thread. Backpressure: when the transport buffer passes
  :data:`HIGH_WATER` the pump waits for the protocol to drain.
- **The pump.** Every ``tick`` seconds it produces ``rate * elapsed`` messages, cycling a
  weighted schedule of the connection's subscriptions (books weigh more than funding).
  A produced market event goes to *every* connection subscribed to that market (the
  market is shared, so all of them see one consistent id chain).
- **Faults.** :meth:`Session.deliver` is the one door every push goes through; when the
  fault book has anything armed for this venue it applies disconnect / stall / malformed /
  drop / bad_checksum there (see :mod:`supervisor.replay.faults`).
- **Recordings.** With a recording configured for the venue the pump replays its frames
  instead of the synthetic market (:mod:`supervisor.replay.playback`).

Everything runs on the server's event loop; nothing here is thread safe.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import WSMsgType, web

from supervisor import jsonlib

if TYPE_CHECKING:
    from supervisor.replay.market import Market
    from supervisor.replay.playback import Recording
    from supervisor.replay.server import ReplayExchange

log = logging.getLogger("marketprism.replay")

DATA = 1  # a market-data push (eligible for disconnect/stall/malformed)
BOOK_UPDATE = 2  # a book delta (eligible for drop/bad_checksum)
HIGH_WATER = 1 << 20  # transport bytes buffered before the pump waits for the client
MAX_QUEUED = 1 << 20  # frames queued for a client that does not read: dropped as too slow
BURST = 2000  # messages per tick when the rate is unlimited
MIN_SLEEP = 1e-4  # s: the pump's shortest sleep between ticks of a paced rate

_HDR16 = struct.Struct("!BBH").pack
_HDR64 = struct.Struct("!BBQ").pack
# Headers of FIN + text frames below 4 KiB (every push but snapshots), built once: a push
# then costs one list index instead of a struct call (7-bit lengths, then 16-bit ones).
_TEXT_HEADERS = [bytes((0x81, n)) for n in range(126)] + [_HDR16(0x81, 126, n)
                                                          for n in range(126, 4096)]
_N_TEXT_HEADERS = len(_TEXT_HEADERS)
PING_FRAME = b"\x89\x00"
_ids = itertools.count(1)


def frame_header(n: int, opcode: int = 0x1) -> bytes:
    """Header of an unmasked final frame carrying ``n`` payload bytes."""
    if opcode == 0x1 and n < _N_TEXT_HEADERS:
        return _TEXT_HEADERS[n]
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return _HDR16(0x80 | opcode, 126, n)
    return _HDR64(0x80 | opcode, 127, n)


class Stream:
    """One subscription of one connection (a Binance stream, an OKX arg, a Deribit channel)."""

    __slots__ = ("session", "key", "kind", "market", "symbol", "weight", "extra", "rename")

    def __init__(self, session: Session, key: str, kind: str, market: Market | None,
                 weight: int, extra: Any = None, symbol: str | None = None) -> None:
        self.session = session
        self.key = key  # the venue's name for it, as the client subscribed
        self.kind = kind  # book | trade | aggtrade | funding | oi | liquidation | ticker | volidx
        self.market = market  # None for venue-wide streams and recordings
        # venue symbol id (fault matching); None for venue-wide streams
        self.symbol = symbol if symbol is not None else market.symbol if market else None
        self.weight = weight  # share of the connection's message rate
        self.extra = extra  # venue detail (e.g. the OKX arg)
        self.rename: tuple[bytes, bytes] | None = None  # playback: recorded -> subscribed name


def broadcast(market: Market, kind: str, render: Callable[[Stream, Any], bytes], ev: Any,
              flags: int) -> None:
    """Render ``ev`` once per distinct stream key and deliver it to every subscriber."""
    subs = market.streams.get(kind)
    if not subs:
        return
    if len(subs) == 1:
        st = subs[0]
        st.session.deliver(st, render(st, ev), flags, ev)
        return
    cache: dict[str, bytes] = {}
    for st in list(subs):
        payload = cache.get(st.key)
        if payload is None:
            payload = cache[st.key] = render(st, ev)
        st.session.deliver(st, payload, flags, ev)


class Session:
    """Base class of a venue connection; see the module docstring.

    Subclasses set the class attributes and implement :meth:`on_text` (client requests)
    and the producers named in ``producers`` (``kind -> method(stream)``).
    """

    venue: ClassVar[str] = ""
    weights: ClassVar[dict[str, int]] = {}  # kind -> share of the rate

    def __init__(self, rx: ReplayExchange, request: web.Request, ws: web.WebSocketResponse):
        self.rx = rx
        self.cfg = rx.cfg
        self.faults = rx.faults
        self.stats = rx.venue_stats[self.venue]
        self.ws = ws
        self.transport = request.transport
        self.protocol = request.protocol
        self.id = next(_ids)
        self.peer = request.remote or "?"
        self.query: dict[str, str] = dict(request.query)  # connect-time URL parameters
        self.loop = asyncio.get_running_loop()
        self.streams: dict[str, Stream] = {}
        self.schedule: list[Stream] = []
        self.producers: dict[str, Callable[[Stream], None]] = {}
        self.recording: Recording | None = rx.recordings.get(self.venue)
        self.out: list[bytes] = []
        self.n_out = 0  # frames queued since the last flush (stats)
        self.closed = False
        self.stalled_until = 0.0
        self.last_pong = self.loop.time()
        self.subscribed = asyncio.Event()  # set on the first subscription (playback start)
        self._rr = 0

    # ----- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the connection until the client leaves or the socket is aborted."""
        self.stats.connections += 1
        self.stats.connections_open += 1
        self.rx.sessions.add(self)
        log.info("%s conn#%d open from %s", self.venue, self.id, self.peer)
        pump = asyncio.ensure_future(self._pump() if self.recording is None
                                     else self.recording.play(self))
        keep = asyncio.ensure_future(self.keepalive())
        pump.add_done_callback(self._pump_done)
        try:
            await self.on_open()
            await self._read_loop()
        finally:
            self.closed = True
            for task in (pump, keep):
                task.cancel()
            await asyncio.gather(pump, keep, return_exceptions=True)
            for key in list(self.streams):
                self.remove_stream(key, quiet=True)
            self.stats.connections_open -= 1
            self.rx.sessions.discard(self)
            log.info("%s conn#%d closed", self.venue, self.id)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        """A pump that died is a server bug: say so loudly and drop the connection."""
        if not task.cancelled() and task.exception() is not None:
            log.error("%s conn#%d pump failed", self.venue, self.id,
                      exc_info=task.exception())
            self.abort()

    async def on_open(self) -> None:
        """Venue hook: the connection is up (Binance subscribes ``?streams=`` here)."""

    async def keepalive(self) -> None:
        """Venue hook: server pings / heartbeats for the life of the connection."""

    async def _read_loop(self) -> None:
        ws = self.ws
        while not self.closed:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                text = msg.data if kind is WSMsgType.TEXT else msg.data.decode("utf-8", "replace")
                try:
                    self.on_text(text)
                except Exception:  # noqa: BLE001 - a request we failed on must not end the server
                    log.exception("%s conn#%d request failed: %.200r", self.venue, self.id, text)
                self.flush()
            elif kind is WSMsgType.PING:
                self.send_control(0xA, msg.data)
            elif kind is WSMsgType.PONG:
                self.last_pong = self.loop.time()
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                break

    def on_text(self, text: str) -> None:
        """Venue hook: one client text frame."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the ``disconnect`` fault)."""
        self.closed = True
        self.out = []
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000, reason: bytes = b"") -> None:
        """Close handshake; nothing more is queued or written after the close frame."""
        self.closed = True
        self.out = []
        await self.ws.close(code=code, message=reason)

    # ----- subscriptions ---------------------------------------------------------------------
    def add_stream(self, key: str, kind: str, market: Market | None, extra: Any = None,
                   symbol: str | None = None) -> Stream:
        st = self.streams.get(key)
        if st is not None:
            return st
        st = Stream(self, key, kind, market, self.weights.get(kind, 1), extra, symbol)
        self.streams[key] = st
        if market is not None:
            market.streams.setdefault(kind, []).append(st)
        self.stats.subscriptions += 1
        self.stats.subscriptions_active += 1
        self._reschedule()
        self.subscribed.set()
        log.info("%s conn#%d subscribe %s", self.venue, self.id, key)
        return st

    def remove_stream(self, key: str, quiet: bool = False) -> bool:
        st = self.streams.pop(key, None)
        if st is None:
            return False
        if st.market is not None:
            subs = st.market.streams.get(st.kind)
            if subs and st in subs:
                subs.remove(st)
        self.stats.subscriptions_active -= 1
        self._reschedule()
        if not quiet:
            log.info("%s conn#%d unsubscribe %s", self.venue, self.id, key)
        return True

    def record_key(self, stream: Stream) -> str:
        """Venue hook: the key a recording files this stream's frames under."""
        return stream.key

    def _reschedule(self) -> None:
        """Weighted round robin: a stream of weight w appears w times per cycle, spread."""
        streams = list(self.streams.values())
        top = max((s.weight for s in streams), default=0)
        self.schedule = [s for r in range(top) for s in streams if s.weight > r]

    # ----- writing ---------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        """Queue one text frame that is not market data (acks, errors, heartbeats)."""
        if self.closed:
            return
        self.out.append(frame_header(len(payload)))
        self.out.append(payload)
        self.n_out += 1

    def send_json(self, obj: Any) -> None:
        self.send(jsonlib.dumps(obj))

    def send_control(self, opcode: int, payload: bytes = b"") -> None:
        """Queue a ping (0x9) / pong (0xA) and flush it."""
        if not self.closed:
            self.out.append(frame_header(len(payload), opcode) + payload)
            self.flush()

    def deliver(self, stream: Stream, payload: bytes, flags: int, ev: Any = None) -> None:
        """Queue one market-data push; the only path pushes take (faults apply here)."""
        if self.closed:
            return
        if self.venue in self.faults.armed:
            payload = self._apply_faults(stream, payload, flags, ev)
            if payload is None:
                return
        n = len(payload)
        out = self.out
        out.append(_TEXT_HEADERS[n] if n < _N_TEXT_HEADERS else frame_header(n))
        out.append(payload)
        self.n_out += 1

    def flush(self) -> None:
        """Write everything queued in one ``transport.write`` (unless stalled)."""
        if not self.out or self.closed:
            return
        if self.stalled_until and self.loop.time() < self.stalled_until:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.closed = True
            return
        data = b"".join(self.out)
        self.out = []
        transport.write(data)
        stats = self.stats
        stats.messages_sent += self.n_out
        stats.bytes_sent += len(data)
        self.n_out = 0

    async def drain(self) -> None:
        """Wait until the client has read enough of what we wrote.

        Meanwhile other connections' pumps may keep queueing shared-market pushes here; a
        client that falls :data:`MAX_QUEUED` frames behind is dropped, as venues drop slow
        consumers, rather than growing the server without bound.
        """
        transport = self.transport
        while (not self.closed and transport is not None and not transport.is_closing()
               and transport.get_write_buffer_size() > HIGH_WATER):
            if len(self.out) > 2 * MAX_QUEUED:  # two list items per frame
                log.warning("%s conn#%d too slow: dropped", self.venue, self.id)
                self.abort()
                return
            drain = getattr(self.protocol, "_drain_helper", None)  # aiohttp's BaseProtocol
            try:
                if drain is None:
                    await asyncio.sleep(0.001)
                else:
                    await asyncio.wait_for(drain(), 1.0)
            except TimeoutError:
                continue
            except ConnectionError:
                self.closed = True
                return

    # ----- faults ---------------------------------------------------------------------------
    def _apply_faults(self, stream: Stream, payload: bytes, flags: int, ev: Any
                      ) -> bytes | None:
        faults = self.faults
        venue = self.venue
        symbol = stream.symbol
        if faults.take(venue, "disconnect", symbol) is not None:
            log.info("%s conn#%d fault: disconnect", venue, self.id)
            self.abort()
            return None
        fault = faults.take(venue, "stall", symbol)
        if fault is not None:
            log.info("%s conn#%d fault: stall %.1fs", venue, self.id, fault.params["seconds"])
            self.stalled_until = self.loop.time() + fault.params["seconds"]
        fault = faults.take(venue, "malformed", symbol)
        if fault is not None:
            self.send(self.malformed_frame(stream, fault.params["mode"]))
        if flags & BOOK_UPDATE:
            if faults.take(venue, "drop", symbol) is not None:
                return None
            if venue == "okx" and ev is not None:
                if faults.take(venue, "bad_checksum", symbol) is not None:
                    return self.bad_checksum(stream, ev)
        return payload

    def malformed_frame(self, stream: Stream, mode: str) -> bytes:
        """Venue hook: an invalid frame; ``json``: not JSON, ``fields``: fields missing."""
        if mode == "fields":
            return b"{}"
        return b'{"replay":"malformed",'

    def bad_checksum(self, stream: Stream, ev: Any) -> bytes:
        """Venue hook (OKX): ``ev`` rendered with a wrong non-zero checksum."""
        raise NotImplementedError

    # ----- the synthetic pump ----------------------------------------------------------------
    async def _pump(self) -> None:
        loop = self.loop
        rate = self.cfg.rate
        tick = self.cfg.tick
        budget = 0.0
        last = next_at = loop.time()
        producers = self.producers
        while not self.closed:
            now = loop.time()
            if self.stalled_until:
                if now < self.stalled_until:
                    await asyncio.sleep(self.stalled_until - now)
                    continue
                self.stalled_until = 0.0
                last = next_at = now
            schedule = self.schedule
            if schedule:
                if rate > 0:  # never more than a quarter second of backlog in one burst
                    budget = min(budget + (now - last) * rate, rate * 0.25 + 1)
                    n = int(budget)
                    budget -= n
                else:
                    n = BURST
                i = self._rr % len(schedule)
                size = len(schedule)
                for _ in range(n):
                    st = schedule[i]
                    producers[st.kind](st)
                    i += 1
                    if i == size:
                        i = 0
                    if self.closed or self.stalled_until:
                        break
                self._rr = i
            last = now
            self.flush()
            transport = self.transport
            if transport is not None and transport.get_write_buffer_size() > HIGH_WATER:
                await self.drain()
            elif rate > 0 or not schedule:
                # Tick on a fixed grid, not `tick` after the work: sleeping a full tick after
                # producing made the period tick + work, and the bursts that much larger.
                # Always sleep though: behind schedule, a pump at SCHED_FIFO must not keep
                # its core to itself. (On asyncio's default epoll loop any sleep lasts a
                # whole millisecond or more; replay.timers' loop keeps the grid.)
                next_at = max(next_at + tick, loop.time() - tick)
                await asyncio.sleep(max(MIN_SLEEP, next_at - loop.time()))
            else:
                await asyncio.sleep(0)
