"""The ZeroMQ path of the engine: the collector's JSON documents instead of ring records.

Documents carry the NamedTuple fields with decimals as the venue's strings, plus ``type`` and
``ring_seq`` (:mod:`supervisor.collector.publisher`). They update the same per-symbol state
as ring records (:meth:`Engine.process_batch`), parsing decimals with ``float()`` (the same
correctly rounded double as the ring path's ``mantissa / 10**-exp``), so both paths give the
same figures (tests/test_analyzer_engine.py checks it on the real recordings).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from supervisor.analyzer.engine import (
    BOOK_DELTA,
    BOOK_SNAPSHOT,
    KIND_BY_NAME,
    MALFORMED,
    TIMED,
    TRADE,
    Engine,
    SymbolSlot,
)
from supervisor.analyzer.state import APPLY, delta_verdict
from supervisor.events import TYPE_OF, Kind


def process_docs(engine: Engine, docs: Sequence[dict[str, Any]]) -> int:
    """Apply the collector's JSON documents (each with ``type`` and ``ring_seq``)."""
    kinds = engine.plugin_kinds
    n = 0
    oldest = -1
    for doc in docs:
        kind = -1
        a = None
        try:
            kind = KIND_BY_NAME[doc["type"]]
            engine.by_kind[kind] += 1
            a = engine.slot(doc["symbol"])
            ts = doc["ts_recv"]
            a.q.event(ts, doc["ts_exchange"], kind in TIMED)
            if kind == BOOK_DELTA or kind == BOOK_SNAPSHOT:
                _book_doc(engine, a, kind, doc, ts)
            elif kind == TRADE:
                price = float(doc["price"])
                a.trades.add(ts, price, float(doc["size"]), doc["side"] == "buy")
                a.last_trade = price
                a.q.trade(price)
            else:
                engine._scalar(a, kind, ts, _doc_values(kind, doc))
            seq = doc.get("ring_seq", 0)
            if kind in kinds:
                cls = TYPE_OF[Kind(kind)]
                engine.plugin_events.append(cls(*(doc[f] for f in cls._fields)))
                engine.plugin_seqs.append(seq)
        except MALFORMED as exc:
            if a is not None and (kind == BOOK_DELTA or kind == BOOK_SNAPSHOT):
                # levels may be half applied: that book cannot be trusted any more
                engine._invalidate(a)
                engine._seed(a)
            engine._malformed(doc.get("ring_seq", 0) if isinstance(doc, dict) else 0, kind, exc)
            continue
        n += 1
        a.ring_seq = seq
        a.ts = ts
        a.dirty = True
        if ts > engine.ts_max:
            engine.ts_max = engine.quality.clock = ts
        if seq > engine.ring_seq:
            engine.ring_seq = seq
        if oldest < 0:
            oldest = ts
    if oldest >= 0:  # wall clocks: includes the offset between the two hosts' clocks
        engine.latency.observe(time.time_ns() - oldest)
    engine.events += n
    return n


def _book_doc(engine: Engine, a: SymbolSlot, kind: int, doc: dict[str, Any], ts: int) -> None:
    book = a.book
    seq = doc["seq"]
    if kind == BOOK_SNAPSHOT:
        if not book.valid:
            a.vol.reset()
            a.q.mid_jumps.reset()
        bad = book.load_text(doc["bids"], doc["asks"], seq)
        a.seeding = False
        a.pending.clear()
        if bad:
            a.q.sizes(bad, True)
    else:
        prev = doc["prev_seq"]
        item = (seq, prev, doc["bids"], doc["asks"])
        if a.seeding:
            a.pending.append(item)
            engine._check_pending(a)
            return
        verdict = delta_verdict(book.valid, book.seq, prev, seq)
        if verdict != APPLY:
            engine._not_applied(a, verdict, seq, prev, item)
            return
        bad = book.apply_text(doc["bids"], doc["asks"], seq)
        if bad:
            a.q.sizes(bad, False)
    engine._after_book(a, ts)


def _doc_values(kind: int, doc: dict[str, Any]) -> list[Any]:
    """A ZeroMQ document's body fields in ring order, decimals as floats (None if empty)."""
    fields = TYPE_OF[Kind(kind)]._fields[5:]
    out: list[Any] = []
    for f in fields:
        v = doc[f]
        if isinstance(v, str) and f not in ("reason", "detail", "period", "side", "trade_id"):
            out.append(float(v) if v else None)
        else:
            out.append(v)
    return out


__all__ = ["process_docs"]
