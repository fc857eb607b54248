"""The replay exchange server: every venue plus the control API on one aiohttp port.

URL layout (``HOST:PORT`` defaults to 127.0.0.1:8090)::

    ws   /binance/spot/stream            rest /binance/spot/api/v3/depth
    ws   /binance/derivatives/stream     rest /binance/derivatives/fapi/v1/...,
                                              /binance/derivatives/futures/data/...
    ws   /okx/ws/v5/public               rest /okx/api/v5/...
    ws   /deribit/ws/api/v2              rest /deribit/api/v2/public/get_order_book
    POST /_control/fault   {"venue", "kind", "symbol"?, "count"?, "seconds"?, ...}
    DELETE /_control/fault                     disarm everything
    GET  /_control/faults                      armed faults
    GET  /_control/stats                       per-venue counters (see VenueStats)

Usage::

    async with ReplayExchange(port=0, rate=1000, seed=7) as rx:
        ws_url, rest_url = rx.endpoints("binance_derivatives")
        rx.inject("binance_derivatives", "drop", symbol="BTC-USDT-PERP")
        ...
        assert rx.stats()["venues"]["binance_derivatives"]["faults_applied"]["drop"] == 1

It binds a loopback address unless ``allow_remote`` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from supervisor import jsonlib
from supervisor.replay import binance_rest, deribit, okx
from supervisor.replay.faults import VENUES, Fault, FaultBook, canonical_venue
from supervisor.replay.market import Markets
from supervisor.replay.playback import Recording
from supervisor.replay.rest import json_response
from supervisor.replay.session import Session

log = logging.getLogger("marketprism.replay")

# instance / venue name -> (ws path, rest prefix)
ENDPOINTS = {
    "binance_spot": ("/binance/spot/stream", "/binance/spot"),
    "binance_derivatives": ("/binance/derivatives/stream", "/binance/derivatives"),
    "okx": ("/okx/ws/v5/public", "/okx"),
    "deribit": ("/deribit/ws/api/v2", "/deribit"),
}


@dataclass
class ReplayConfig:
    """Everything the server can be told; ``ReplayExchange(**fields)`` overrides these."""

    host: str = "127.0.0.1"
    port: int = 8090  # 0: an ephemeral port (tests), see ReplayExchange.port
    rate: float = 200.0  # synthetic messages/s per connection; <= 0: as fast as it reads
    seed: int = 1  # every synthetic market derives from it
    okx_checksum: bool = False  # real CRC32 in OKX books (else 0, as OKX sends since 2026)
    recordings: dict[str, str] = field(default_factory=dict)  # venue -> ws file or prefix
    speed: float = 0.0  # recordings: 0 = as fast as possible, else x recorded pace
    playback_delay: float = 0.05  # s after the first subscription before playback starts
    ping_interval: float = 5.0  # Binance server pings, s (<= 0: none)
    pong_timeout: float = 60.0  # Binance: no pong for this long drops the connection
    heartbeat_min: float = 10.0  # Deribit: smallest interval public/set_heartbeat accepts
    heartbeat_interval: float | None = None  # Deribit: overrides the requested interval
    tick: float = 0.005  # pump period, s
    allow_remote: bool = False  # permit binding a non-loopback address


@dataclass
class VenueStats:
    """Counters of one venue endpoint (``GET /_control/stats``)."""

    connections: int = 0  # accepted since start
    connections_open: int = 0
    subscriptions: int = 0  # subscribe operations accepted since start
    subscriptions_active: int = 0
    messages_sent: int = 0  # text frames written (pushes, acks, errors, heartbeats)
    bytes_sent: int = 0
    rest_requests: int = 0
    heartbeat_timeouts: int = 0  # connections dropped for a missing pong / public/test


def endpoint_name(name: str) -> str:
    """The endpoint of a venue or instance name (``okx_spot`` -> ``okx``); ValueError if
    there is none (or two: ``binance``)."""
    venue = canonical_venue(name)
    if venue not in ENDPOINTS:
        raise ValueError(f"{name!r} names two endpoints: binance_spot or binance_derivatives")
    return venue


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReplayExchange:
    """The server (see the module docstring). Start with ``async with`` or :meth:`start`."""

    def __init__(self, cfg: ReplayConfig | None = None, **overrides: Any) -> None:
        self.cfg = cfg = dataclasses.replace(cfg or ReplayConfig(), **overrides)
        if not cfg.allow_remote and not is_loopback(cfg.host):
            raise ValueError(f"refusing to bind non-loopback {cfg.host!r} without allow_remote")
        self.faults = FaultBook()
        self.markets = Markets(cfg.seed)
        self.venue_stats = {v: VenueStats() for v in VENUES}
        self.recordings = {endpoint_name(v): Recording(endpoint_name(v), p)
                           for v, p in cfg.recordings.items()}
        self.sessions: set[Session] = set()
        self._runner: web.AppRunner | None = None
        self._port = cfg.port
        self.app = web.Application()
        self.app.add_routes(binance_rest.routes(self) + okx.routes(self) + deribit.routes(self) + [
            web.post("/_control/fault", self._post_fault),
            web.delete("/_control/fault", self._delete_faults),
            web.get("/_control/faults", self._get_faults),
            web.get("/_control/stats", self._get_stats)])

    # ----- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> ReplayExchange:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, shutdown_timeout=1.0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        log.info("replay exchange listening on %s (rate %g/s, seed %d%s)", self.url(),
                 self.cfg.rate, self.cfg.seed,
                 ", recordings: " + ", ".join(self.recordings) if self.recordings else "")
        return self

    async def stop(self) -> None:
        """Close every connection (close frame, then abort after 1 s) and the listener."""
        async def close(s: Session) -> None:
            try:
                await asyncio.wait_for(s.close(1001, b"server shutdown"), 1.0)
            except (TimeoutError, ConnectionError):
                s.abort()

        await asyncio.gather(*(close(s) for s in list(self.sessions)), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReplayExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def ws_handler(self, cls: type[Session]) -> Callable[[web.Request], Awaitable[Any]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(autoping=False, compress=False,
                                       max_msg_size=16 * 1024 * 1024)
            await ws.prepare(request)
            await cls(self, request, ws).run()
            return ws
        return handler

    # ----- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "") -> str:
        return f"http://{self.cfg.host}:{self._port}{path}"

    def ws_url(self, venue: str) -> str:
        """``ws://HOST:PORT/okx/ws/v5/public`` for ``okx`` / ``okx_spot`` / ..."""
        return f"ws://{self.cfg.host}:{self._port}{ENDPOINTS[endpoint_name(venue)][0]}"

    def rest_url(self, venue: str) -> str:
        """The REST base an adapter appends the venue's real paths to."""
        return self.url(ENDPOINTS[endpoint_name(venue)][1])

    def endpoints(self, instance: str) -> tuple[str, str]:
        """(ws_url, rest_url) for a FeedConfig of ``instance`` (``okx_spot``, ...)."""
        return self.ws_url(instance), self.rest_url(instance)

    # ----- faults and stats ------------------------------------------------------------------
    def inject(self, venue: str, kind: str, symbol: str | None = None, count: int = 1,
               **params: Any) -> Fault:
        """Arm a fault (see :mod:`supervisor.replay.faults`); ValueError if invalid."""
        fault = self.faults.inject(venue, kind, symbol, count, **params)
        log.info("fault armed: %s", fault.as_dict())
        return fault

    def clear_faults(self) -> int:
        return self.faults.clear()

    def faults_applied(self, venue: str, kind: str) -> int:
        """Firings of ``kind`` on ``venue`` so far (``binance``: both endpoints)."""
        v = canonical_venue(venue)
        return sum(self.faults.applied.get(name, {}).get(kind, 0) for name in VENUES
                   if name == v or (v == "binance" and name.startswith("binance")))

    def stats(self) -> dict[str, Any]:
        venues = {}
        for venue, st in self.venue_stats.items():
            row = dataclasses.asdict(st)
            row["faults_applied"] = dict(self.faults.applied.get(venue, {}))
            venues[venue] = row
        return {"venues": venues, "faults_armed": [f.as_dict() for f in self.faults.faults],
                "markets": len(self.markets), "rate": self.cfg.rate, "seed": self.cfg.seed}

    async def _post_fault(self, request: web.Request) -> web.Response:
        try:
            body = jsonlib.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            args = dict(body)
            venue, kind = args.pop("venue"), args.pop("kind")
            fault = self.inject(venue, kind, args.pop("symbol", None),
                                int(args.pop("count", 1)), **args)
        except (KeyError, TypeError, ValueError, jsonlib.JSONDecodeError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)
        return json_response({"fault": fault.as_dict()})

    async def _delete_faults(self, request: web.Request) -> web.Response:
        return json_response({"cleared": self.clear_faults()})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return json_response({"faults": [f.as_dict() for f in self.faults.faults]})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return json_response(self.stats())
