"""Recorded venue sessions in cryptofeed's line format (the replay exchange serves them).

Two file kinds, one event a line:

- ``<NAME>.ws.<n>.0``: ``wss://host/path <-> TS`` opens a connection; ``wss://... <- TS: MSG``
  is a frame the client sent; ``TS: MSG`` is a frame received (``MSG`` is the raw JSON text).
- ``<NAME>.http.<n>.0``: ``URL -> TS: BODY`` is one REST response body.

``TS`` is seconds since the epoch (float). Recordings by the cryptofeed project
(XFree86-style license) ship in ``shared/fixtures/cryptofeed-sample/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit


class WsLine(NamedTuple):
    ts: float  # seconds since the epoch
    direction: str  # "open" | "sent" | "recv"
    url: str  # connection URL ("" on recv lines)
    message: str  # raw frame text ("" on open lines)


class HttpLine(NamedTuple):
    ts: float
    url: str
    path: str  # URL path, e.g. "/api/v3/depth"
    params: dict[str, str]  # query parameters (first value of each)
    body: str


def read_ws(path: str | Path) -> Iterator[WsLine]:
    """Yield the lines of a ``*.ws.*`` recording in order."""
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line:
                continue
            if line.startswith(("wss://", "ws://")):
                url, _, rest = line.partition(" ")
                if rest.startswith("<-> "):
                    yield WsLine(float(rest[4:]), "open", url, "")
                elif rest.startswith("<- "):
                    ts, _, msg = rest[3:].partition(": ")
                    yield WsLine(float(ts), "sent", url, msg)
                else:
                    raise ValueError(f"{path}: unrecognised line: {line[:80]!r}")
            else:
                ts, _, msg = line.partition(": ")
                yield WsLine(float(ts), "recv", "", msg)


def read_http(path: str | Path) -> Iterator[HttpLine]:
    """Yield the responses of a ``*.http.*`` recording in order."""
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line:
                continue
            url, sep, rest = line.partition(" -> ")
            if not sep:
                raise ValueError(f"{path}: unrecognised line: {line[:80]!r}")
            ts, _, body = rest.partition(": ")
            parts = urlsplit(url)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            yield HttpLine(float(ts), url, parts.path, params, body)


def received_frames(path: str | Path) -> list[str]:
    """Just the frames received from the venue, in order."""
    return [ln.message for ln in read_ws(path) if ln.direction == "recv"]
