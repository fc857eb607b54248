"""Building blocks of the ``/metrics`` families: naming, fixed label sets, histograms.

:class:`Families` collects prometheus-client metric families in first-use order and keeps
each family's kind and label names fixed; :func:`cumulative_buckets` turns the stats
blocks' non-cumulative histograms into Prometheus buckets.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.utils import floatToGoString

PREFIX = "marketprism_"
BASE = ("instance", "exchange", "market")  # on every per-instance series
NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


class Families:
    """Metric families built on demand, in first-use order, with fixed label names.

    A family's kind and label names are fixed by its first use; a later use that disagrees
    (a generic analyzer field colliding with a known family) is dropped, never mixed in.
    """

    _CLASSES: dict[str, type[Metric]] = {
        "counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily, "unknown": UnknownMetricFamily,
    }

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[Metric, str, tuple[str, ...]]] = {}

    def add(self, kind: str, name: str, doc: str, labels: Sequence[str],
            values: Sequence[str], value: float) -> None:
        fam = self._family(kind, name, doc, labels)
        if fam is not None:
            fam.add_metric(list(values), value)  # type: ignore[attr-defined]

    def histogram(self, name: str, doc: str, labels: Sequence[str], values: Sequence[str],
                  buckets: list[tuple[str, float]], sum_value: float) -> None:
        fam = self._family("histogram", name, doc, labels)
        if fam is not None:
            fam.add_metric(list(values), buckets, sum_value)  # type: ignore[attr-defined]

    def _family(self, kind: str, name: str, doc: str, labels: Sequence[str]) -> Metric | None:
        entry = self._by_name.get(name)
        if entry is None:
            fam = self._CLASSES[kind](PREFIX + name, doc, labels=list(labels))
            self._by_name[name] = (fam, kind, tuple(labels))
            return fam
        fam, known_kind, known_labels = entry
        return fam if (known_kind, known_labels) == (kind, tuple(labels)) else None

    def __iter__(self) -> Iterator[Metric]:
        return iter(fam for fam, _, _ in self._by_name.values())


def cumulative_buckets(hist: Any) -> tuple[list[tuple[str, float]], float] | None:
    """``{bounds, counts, sum, count}`` (non-cumulative) -> Prometheus buckets and sum.

    Returns None for anything that is not a well-formed histogram: ``len(counts)`` must be
    ``len(bounds) + 1`` (the last count is the +Inf bucket), bounds strictly increasing.
    """
    if not isinstance(hist, dict):
        return None
    bounds, counts, total = hist.get("bounds"), hist.get("counts"), hist.get("sum")
    if not (isinstance(bounds, list) and isinstance(counts, list)
            and len(counts) == len(bounds) + 1 and isinstance(total, int | float)):
        return None
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds) or \
            not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    if any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
        return None
    buckets = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        buckets.append((floatToGoString(bound), float(running)))
    buckets.append(("+Inf", float(running + counts[-1])))
    return buckets, float(total)


def metric_name(key: str) -> str:
    """A stats-document key as a legal, lower-case metric name part."""
    return NAME_BAD.sub("_", key).lower()


def add_fields(f: Families, base: tuple[str, ...], doc: Mapping[str, Any], prefix: str,
               known: Mapping[str, tuple[str, str, str]], skip: Container[str],
               what: str) -> None:
    """A stats document's numeric fields as families ``<prefix><name>`` (label set BASE).

    ``known`` maps a field to (name, kind, help). Every other real number is exported too,
    as ``<prefix><field>``: a counter when the field ends in ``_total``, otherwise untyped,
    so a new field shows up without an aggregator change. Fields in ``skip`` and anything
    that is not a number (bools, NaN, tables, text) are left out.
    """
    for key, value in doc.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float) \
                or value != value:
            continue
        if key in known:
            name, kind, help_ = known[key]
        else:
            name = metric_name(key)
            kind = "counter" if name.endswith("_total") else "unknown"
            name, help_ = name.removesuffix("_total"), f"{what} stats field {key!r}."
        f.add(kind, prefix + name, help_, BASE, base, value)


__all__ = ["Families", "add_fields", "cumulative_buckets", "metric_name", "BASE", "PREFIX",
           "NAME_BAD"]
