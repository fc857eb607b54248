"""JSON codec: orjson when it loads, the standard library otherwise.

Debian 12 has no orjson; the .deb bundles its wheel, and this fallback keeps every code path
working where that wheel cannot load. ``BACKEND`` says which one is in use (``/health``
reports it).
"""

from __future__ import annotations

from typing import Any

try:
    import orjson as _orjson

    BACKEND = "orjson"
    JSONDecodeError: type[Exception] = _orjson.JSONDecodeError
    loads = _orjson.loads

    def dumps(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes."""
        return _orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised by the .deb fallback test
    import json as _json

    BACKEND = "json"
    JSONDecodeError = ValueError
    loads = _json.loads
    _encoder = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def dumps(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes."""
        return _encoder.encode(obj).encode()


__all__ = ["BACKEND", "JSONDecodeError", "loads", "dumps"]
