"""Fault injection: what can go wrong on command, and the counters that prove it happened.

A :class:`Fault` is armed for one venue (optionally one symbol) and fires ``count`` times;
every firing is counted per venue and kind in :class:`FaultBook.applied`, so a test can
assert an adapter's resync counters against exactly what the server did.

Where each kind fires (the "next N messages" are the next N eligible ones):

=============== ============================================================================
kind            effect
=============== ============================================================================
disconnect      the next outgoing message instead aborts the TCP connection (no close frame)
drop            the next book *update* is not sent to that connection: a sequence gap
bad_checksum    OKX: the next book update carries a wrong, non-zero CRC32
reset           OKX: the next book update has ``seqId`` < ``prevSeqId`` (the market resets)
malformed       an invalid frame is sent before the next data message (``mode``: ``json``
                = not JSON, ``fields`` = JSON missing the required fields); nothing is lost
stall           the connection sends nothing for ``seconds`` (socket kept open), then
                resumes with everything queued meanwhile: no data lost
slow_snapshot   the next REST book snapshot is answered ``seconds`` late (taken on arrival)
fail_snapshot   the next REST book snapshot answers HTTP 500
rate_limit      the next REST request answers HTTP 429 with ``Retry-After: seconds``
huge_book      the next snapshot (REST, or WS on subscribe) has ``levels`` extra levels a side
=============== ============================================================================

Venues are the server's endpoints: ``binance_spot``, ``binance_derivatives``, ``okx``,
``deribit``; ``binance`` arms both Binance endpoints and instance names (``okx_spot``,
``deribit_derivatives``) are accepted. Symbols may be given normalized (``BTC-USDT-PERP``)
or as the venue's id (``BTCUSDT``). Not thread safe: the server's event loop owns it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

VENUES = ("binance_spot", "binance_derivatives", "okx", "deribit")
KINDS = ("disconnect", "drop", "bad_checksum", "reset", "malformed", "stall", "slow_snapshot",
         "fail_snapshot", "rate_limit", "huge_book")
OKX_ONLY = ("bad_checksum", "reset")
# Defaults of the numeric parameters, by kind.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "stall": {"seconds": 5.0},
    "slow_snapshot": {"seconds": 5.0},
    "rate_limit": {"seconds": 1.0},
    "huge_book": {"levels": 100_000},
    "malformed": {"mode": "json"},
}


def canonical_venue(venue: str) -> str:
    """``okx_spot`` -> ``okx``, ``deribit_derivatives`` -> ``deribit``; checks the name."""
    v = venue.lower()
    if v.startswith("okx"):
        return "okx"
    if v.startswith("deribit"):
        return "deribit"
    if v in ("binance", "binance_spot", "binance_derivatives"):
        return v
    raise ValueError(f"unknown venue {venue!r}: one of {', '.join(VENUES)} or binance")


def venue_symbol(venue: str, symbol: str) -> str:
    """A normalized symbol (or a venue id, returned as is) as ``venue`` spells it."""
    s = symbol.strip()
    if venue.startswith("binance"):
        if s.endswith("-PERP"):
            s = s[:-5]
        return s.replace("-", "").upper()
    if venue == "okx":
        return s[:-5] + "-SWAP" if s.endswith("-PERP") else s
    if venue == "deribit" and s.endswith("-PERP"):
        base, quote = s[:-5].split("-", 1)
        return f"{base}-PERPETUAL" if quote == "USD" else f"{base}_{quote}-PERPETUAL"
    return s


@dataclass
class Fault:
    """One armed fault; ``remaining`` counts down to 0, then it is discarded."""

    id: int
    venue: str  # canonical venue, or "binance" for both Binance endpoints
    kind: str
    symbol: str | None  # venue id (venue_symbol), None = any symbol
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)

    def for_venue(self, venue: str) -> bool:
        return self.venue == venue or (self.venue == "binance" and venue.startswith("binance"))

    def matches(self, venue: str, symbol: str | None) -> bool:
        if not self.for_venue(venue):
            return False
        if self.symbol is None:
            return True
        if symbol is None:
            return False
        return self.symbol == symbol or self.symbol == venue_symbol(venue, symbol)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """Armed faults plus the applied-fault counters (per venue, per kind).

    Usage::

        book = FaultBook()
        book.inject("okx", "drop", symbol="BTC-USDT", count=2)
        if "okx" in book.armed:               # cheap hot-path test
            fault = book.take("okx", "drop", "BTC-USDT")   # counts the firing
    """

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.armed: set[str] = set()  # venues with at least one armed fault
        self.applied: dict[str, dict[str, int]] = {v: {} for v in VENUES}
        self._ids = itertools.count(1)

    def inject(self, venue: str, kind: str, symbol: str | None = None, count: int = 1,
               **params: Any) -> Fault:
        """Arm a fault; raises ValueError on an unknown venue/kind or a bad count."""
        v = canonical_venue(venue)
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(KINDS)}")
        if kind in OKX_ONLY and v != "okx":
            raise ValueError(f"{kind} is an OKX fault (books checksum / seqId)")
        if int(count) < 1:
            raise ValueError("count must be >= 1")
        merged = {**DEFAULT_PARAMS.get(kind, {}), **{k: p for k, p in params.items()
                                                      if p is not None}}
        for key in ("seconds", "levels"):
            if key in merged:
                merged[key] = float(merged[key]) if key == "seconds" else int(merged[key])
                if merged[key] < 0:
                    raise ValueError(f"{key} must be >= 0")
        if kind == "malformed" and merged["mode"] not in ("json", "fields"):
            raise ValueError("malformed mode must be 'json' or 'fields'")
        sym = None if symbol in (None, "") else venue_symbol(v, symbol)
        fault = Fault(next(self._ids), v, kind, sym, int(count), merged)
        self.faults.append(fault)
        self._rearm()
        return fault

    def take(self, venue: str, kind: str, symbol: str | None) -> Fault | None:
        """Fire the first armed ``kind`` fault matching; count it. None if there is none."""
        for fault in self.faults:
            if fault.kind == kind and fault.matches(venue, symbol):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
                    self._rearm()
                counts = self.applied.setdefault(venue, {})
                counts[kind] = counts.get(kind, 0) + 1
                return fault
        return None

    def clear(self) -> int:
        """Disarm everything; returns how many faults were armed."""
        n = len(self.faults)
        self.faults.clear()
        self._rearm()
        return n

    def _rearm(self) -> None:
        self.armed = {v for f in self.faults for v in VENUES if f.for_venue(v)}
