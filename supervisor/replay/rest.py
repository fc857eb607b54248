"""What the venues' REST handlers share: JSON answers and the REST faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from supervisor import jsonlib

if TYPE_CHECKING:
    from supervisor.replay.server import ReplayExchange


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=jsonlib.dumps(obj), status=status, headers=headers,
                        content_type="application/json")


async def rest_faults(rx: ReplayExchange, venue: str, symbol: str | None, snapshot: bool,
                      error: Callable[[int, float], web.Response]) -> web.Response | float:
    """Count a REST request and apply REST faults.

    Returns the error response to send (429 / 500), or the delay in seconds the caller
    must wait *after* taking its snapshot (``slow_snapshot``; 0.0 normally).
    ``error(status, retry_after)`` renders the venue's error body.
    """
    rx.venue_stats[venue].rest_requests += 1
    faults = rx.faults
    if venue not in faults.armed:
        return 0.0
    fault = faults.take(venue, "rate_limit", symbol)
    if fault is not None:
        return error(429, fault.params["seconds"])
    if snapshot:
        if faults.take(venue, "fail_snapshot", symbol) is not None:
            return error(500, 0.0)
        fault = faults.take(venue, "slow_snapshot", symbol)
        if fault is not None:
            return fault.params["seconds"]
    return 0.0
