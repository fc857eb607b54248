"""A fixed-bucket latency histogram cheap enough for the per-event hot path."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Upper bounds in ns (5 µs .. 1 s), Prometheus-style cumulative on export.
DEFAULT_BOUNDS_NS = (
    5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000, 50_000_000, 100_000_000, 1_000_000_000,
)


class Histogram:
    """Counts per bucket plus sum and count; ``observe`` is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[int, ...] = DEFAULT_BOUNDS_NS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last bucket: +Inf
        self.sum = 0
        self.count = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound (ns) of the bucket holding quantile ``q``; inf if in the last one."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            seen += n
            if seen >= rank:
                return float(bound)
        return float("inf")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the stats block: bounds in seconds, non-cumulative counts."""
        return {"bounds": [b / 1e9 for b in self.bounds], "counts": list(self.counts),
                "sum": self.sum / 1e9, "count": self.count}
