"""The analyzer's hot path: records in, state + analysis + quality updated, plugin batch out.

Two entry points feed the same per-symbol state:

- :meth:`Engine.process_batch`: ring records (type id, payload) with consecutive ring
  sequences. Books go through :class:`~supervisor.codec.BookRecord` (an int64 view, no level
  strings); trades through :func:`~supervisor.analyzer.state.read_trade`. Events are decoded
  to NamedTuples only when a plug-in asked for their kind.
- :meth:`Engine.process_docs`: the collector's ZeroMQ JSON documents (decimal strings).

Books that lose their chain (a lapped ring, a dropped ZeroMQ message, an upstream
:class:`~supervisor.events.Gap`) are invalidated and re-seeded through ``request_seed``
(the collector's snapshot service) when one is configured; deltas of a symbol whose seed is
in flight are buffered and replayed on top of the snapshot, so a reply that races the
stream never causes a second gap.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from supervisor._levels import ffi as _ffi
from supervisor._levels import lib as _levels
from supervisor.analyzer.analysis import SymbolAnalytics, window_labels
from supervisor.analyzer.quality import QualityMonitor, SymbolQuality
from supervisor.analyzer.settings import Settings
from supervisor.analyzer.source import RecordBatch
from supervisor.analyzer.state import (
    APPLY,
    GAP,
    NO_BOOK,
    TOP,
    checked,
    delta_verdict,
    read_scalar,
    read_trade,
)
from supervisor.codec import BookRecord, CodecError, decode
from supervisor.events import Event, Kind
from supervisor.histogram import Histogram

_apply_levels = _levels.mp_levels_apply
_top = _levels.mp_levels_top
BOOK_SNAPSHOT = int(Kind.BOOK_SNAPSHOT)
BOOK_DELTA = int(Kind.BOOK_DELTA)
TRADE = int(Kind.TRADE)
FUNDING = int(Kind.FUNDING)
OPEN_INTEREST = int(Kind.OPEN_INTEREST)
LIQUIDATION = int(Kind.LIQUIDATION)
LONG_SHORT_RATIO = int(Kind.LONG_SHORT_RATIO)
VOLATILITY_INDEX = int(Kind.VOLATILITY_INDEX)
GAP_KIND = int(Kind.GAP)
KIND_BY_NAME = {k.name.lower(): int(k) for k in Kind}
# Kinds whose ts_exchange is the time of the event itself (clock skew / misalignment).
TIMED = frozenset({BOOK_DELTA, TRADE, FUNDING, LIQUIDATION, VOLATILITY_INDEX})
# What a record or document that does not decode raises (codec, struct, our readers).
MALFORMED = (CodecError, ValueError, struct.error, UnicodeDecodeError, KeyError, IndexError,
             TypeError)
MAX_SEED_BUFFER = 20_000  # deltas held per symbol while its snapshot is in flight


class SymbolSlot(SymbolAnalytics):
    """Analytics plus quality state plus seeding state of one symbol."""

    __slots__ = ("q", "last_mid", "seeding", "pending")

    def __init__(self, symbol: str, settings: Settings, q: SymbolQuality) -> None:
        super().__init__(symbol, settings)
        self.q = q
        self.last_mid = 0.0
        self.seeding = False  # a snapshot request is in flight
        self.pending: list[tuple[Any, ...]] = []  # deltas held until the seed arrives


class Engine:
    """Per-instance state and counters; not thread safe (the daemon's loop owns it)."""

    def __init__(self, instance: str, settings: Settings, log: logging.Logger,
                 request_seed: Callable[[str], bool] | None = None,
                 plugin_kinds: frozenset[int] | None = None) -> None:
        self.instance = instance
        self.settings = settings
        self.log = log
        self.quality = QualityMonitor(instance, settings, log)
        self.symbols: dict[str, SymbolSlot] = {}
        self.request_seed = request_seed  # returns False when no snapshot service exists
        self.plugin_kinds = plugin_kinds or frozenset()  # kinds decoded for the plug-in
        self.labels = window_labels(settings.windows)
        self.events = 0
        self.by_kind: dict[int, int] = dict.fromkeys((int(k) for k in Kind), 0)
        self.ring_seq = 0  # last ring sequence processed
        self.lost = 0  # records lost upstream of us (ring laps, ZeroMQ drops)
        self.overruns = 0  # loss episodes
        self.sequence_gaps = 0  # book chains broken inside the analyzer's view
        self.upstream_gaps: dict[str, int] = {}  # Gap events from the collector, by reason
        self.no_book = 0  # deltas dropped while their book waited for a snapshot
        self.seeds = 0  # books seeded from the snapshot service
        self.stale_seeds = 0  # replies that arrived after the stream re-synced the book
        self.malformed = 0  # records or documents that did not decode (skipped)
        self._malformed_logged = -1e9
        self.latency = Histogram()  # collector receive -> analyzer, ns, one per batch
        self.ts_max = 0  # newest ts_recv seen (the data clock)
        self.plugin_events: list[Event] = []
        self.plugin_seqs: list[int] = []

    # ----- symbols --------------------------------------------------------------------------
    def slot(self, symbol: str) -> SymbolSlot:
        a = self.symbols.get(symbol)
        if a is None:
            a = self.symbols[symbol] = SymbolSlot(symbol, self.settings,
                                                  self.quality.symbol(symbol))
        return a

    def note_lost(self, lost: int, first_seq: int) -> None:
        """Records ``first_seq - lost .. first_seq - 1`` never reached us: count and log."""
        self.lost += lost
        self.overruns += 1
        self.log.error("lost %d records (ring seq %d..%d) before seq %d: books re-checked by "
                       "their sequence chain", lost, first_seq - lost, first_seq - 1, first_seq)

    # ----- ring records ---------------------------------------------------------------------
    def process_batch(self, batch: RecordBatch) -> int:
        """Apply one batch of ring records (``shm.Batch``); returns the record count.

        Record ``i`` is ring sequence ``first_seq + i``. Decoded events for the plug-in
        accumulate in ``plugin_events``/``plugin_seqs`` (see :meth:`take_plugin_batch`).
        """
        if batch.lost:
            self.note_lost(batch.lost, batch.first_seq)
        first_seq = batch.first_seq
        count = batch.count
        types, offsets, lengths, data = batch.types, batch.offsets, batch.lengths, batch.data
        seq = first_seq - 1
        slot = self.symbols.get
        new = self.slot
        kinds = self.plugin_kinds
        by_kind = self.by_kind
        verdict = delta_verdict
        after = self._after_book
        apply = _apply_levels
        # levels go to the kernel in place (records and their levels are 8-byte aligned)
        base = _ffi.from_buffer("int64_t[]", data) if count else None
        oldest_mono = -1
        ts_max = self.ts_max
        for i in range(count):
            kind = types[i]
            off = offsets[i]
            payload = data[off:off + lengths[i]]
            seq += 1
            try:
                by_kind[kind] += 1
                if kind == BOOK_DELTA or kind == BOOK_SNAPSHOT:
                    rec = BookRecord(kind, payload)
                    a = slot(rec.symbol) or new(rec.symbol)
                    ts = rec.ts_recv
                    mono = rec.ts_recv_mono
                    a.q.event(ts, rec.ts_exchange, kind == BOOK_DELTA)
                    book = a.book
                    if (kind == BOOK_DELTA and not a.seeding
                            and verdict(book.valid, book.seq, rec.prev_seq, rec.seq) == APPLY):
                        # the common case, inline: apply, then the checks on the new top
                        bad = apply(book.c, base + ((off + rec.levels_at) >> 3), rec.n_bids,
                                    rec.n_asks, rec.price_exp, rec.size_exp, 0)
                        if bad:  # < 0: a bad record raises here; the chain breaks next
                            a.q.sizes(checked(bad), False)
                        book.seq = rec.seq
                        after(a, ts)
                    else:
                        self._book_record(a, kind, rec, ts)
                elif kind == TRADE:
                    sym, _, ts_ex, ts, mono, is_buy, price, size = read_trade(payload)
                    a = slot(sym) or new(sym)
                    a.q.event(ts, ts_ex, True)
                    a.trades.add(ts, price, size, is_buy)
                    a.last_trade = price
                    a.q.trade(price)
                else:
                    sym, _, ts_ex, ts, mono, values = read_scalar(kind, payload)
                    a = slot(sym) or new(sym)
                    a.q.event(ts, ts_ex, kind in TIMED)
                    self._scalar(a, kind, ts, values)
                a.ring_seq = seq
                a.ts = ts
                a.dirty = True
                if ts > ts_max:
                    ts_max = ts
                if oldest_mono < 0:
                    oldest_mono = mono
                if kind in kinds:
                    self.plugin_events.append(decode(kind, payload))
                    self.plugin_seqs.append(seq)
            except MALFORMED as exc:
                self._malformed(seq, kind, exc)
        n = seq - first_seq + 1
        if oldest_mono >= 0:
            # One observation per batch, of its oldest record: an upper bound for each
            # record's collector-receive -> analyzer latency at a fraction of the cost.
            self.latency.observe(time.monotonic_ns() - oldest_mono)
        self.events += n
        self.ts_max = self.quality.clock = ts_max
        if n > 0:
            self.ring_seq = seq
        return n

    def _malformed(self, seq: int, kind: int, exc: Exception) -> None:
        """A record that does not decode: counted, logged (rate-limited), skipped.

        The collector writes only what the codec encoded, so this is a bug or a foreign
        writer; skipping keeps one bad record from crash-looping the analyzer on restart.
        """
        self.malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged >= self.settings.log_interval:
            self._malformed_logged = now
            self.log.error("malformed record at ring seq %d (type %d) skipped: %s: %s "
                           "(%d so far)", seq, kind, type(exc).__name__, exc, self.malformed)

    def _book_record(self, a: SymbolSlot, kind: int, rec: BookRecord, ts: int) -> None:
        book = a.book
        if kind == BOOK_SNAPSHOT:
            if not book.valid:
                a.vol.reset()
                a.q.mid_jumps.reset()
            bad = book.load_record(rec.levels, rec.n_bids, rec.price_exp, rec.size_exp,
                                   rec.seq)
            a.seeding = False
            a.pending.clear()
            if bad:
                a.q.sizes(bad, True)
        else:
            if a.seeding:
                a.pending.append((rec.seq, rec.prev_seq, rec.levels.tolist(), rec.n_bids,
                                  rec.price_exp, rec.size_exp))
                self._check_pending(a)
                return
            verdict = delta_verdict(book.valid, book.seq, rec.prev_seq, rec.seq)
            if verdict != APPLY:
                self._not_applied(a, verdict, rec.seq, rec.prev_seq,
                                  (rec.seq, rec.prev_seq, rec.levels.tolist(), rec.n_bids,
                                   rec.price_exp, rec.size_exp))
                return
            bad = book.apply_record(rec.levels, rec.n_bids, rec.price_exp, rec.size_exp,
                                    rec.seq)
            if bad:
                a.q.sizes(bad, False)
        self._after_book(a, ts)

    def _after_book(self, a: SymbolSlot, ts: int) -> None:
        """Crossed/locked, price jump and realized-vol sampling after a book change."""
        state = _top(a.book.c, TOP)
        if not state:
            return
        bid = TOP[0]
        ask = TOP[2]
        q = a.q
        if state != 1:  # 2 locked, 3 crossed
            q.book(2 if state == 3 else 1, bid, ask)
            return
        if q.crossed or q.locked:
            q.book(0, bid, ask)
        mid = (bid + ask) * 0.5
        if mid != a.last_mid:
            a.last_mid = mid
            q.mid(mid)
        if ts >= a.vol.next_ts:
            a.vol.sample_mid(ts, mid)

    def _not_applied(self, a: SymbolSlot, verdict: int, seq: int, prev_seq: int,
                     delta: tuple[Any, ...]) -> None:
        if verdict == GAP:
            self.sequence_gaps += 1
            self.log.warning("symbol=%s book chain broken: delta prev_seq=%d seq=%d, book at "
                             "seq=%d; invalid until re-seeded", a.symbol, prev_seq, seq,
                             a.book.seq)
            self._invalidate(a)
        elif verdict == NO_BOOK:
            self.no_book += 1
        else:
            return  # STALE: already in the snapshot the book was seeded from
        if self._seed(a):
            a.pending.append(delta)

    def _invalidate(self, a: SymbolSlot) -> None:
        a.book.invalidate()
        a.vol.reset()
        a.q.mid_jumps.reset()
        a.last_mid = 0.0

    def _seed(self, a: SymbolSlot) -> bool:
        """Ask for a snapshot of ``a``'s book; True when one is (now) in flight."""
        if a.seeding:
            return True
        if self.request_seed is None or not self.request_seed(a.symbol):
            return False
        a.seeding = True
        return True

    def _check_pending(self, a: SymbolSlot) -> None:
        if len(a.pending) > MAX_SEED_BUFFER:
            self.log.warning("symbol=%s: %d deltas buffered while waiting for a snapshot; "
                             "dropping them and asking again", a.symbol, len(a.pending))
            a.pending.clear()
            a.seeding = False
            self._seed(a)

    def seed(self, symbol: str, seq: int, bids: Sequence[Sequence[str]],
             asks: Sequence[Sequence[str]]) -> None:
        """A snapshot-service reply: load it, then replay the deltas held meanwhile."""
        a = self.slot(symbol)
        if not a.seeding:
            self.stale_seeds += 1  # the stream's own snapshot (or a Gap) overtook the reply
            return
        if not a.book.valid:
            a.vol.reset()
            a.q.mid_jumps.reset()
        bad = a.book.load_text(bids, asks, seq)
        if bad:
            a.q.sizes(bad, True)
        self.seeds += 1
        pending, a.pending = a.pending, []
        a.seeding = False
        book = a.book
        for i, item in enumerate(pending):
            verdict = delta_verdict(book.valid, book.seq, item[1], item[0])
            if verdict == APPLY:
                if len(item) == 6:
                    bad = book.apply_record(item[2], item[3], item[4], item[5], item[0])
                else:
                    bad = book.apply_text(item[2], item[3], item[0])
                if bad:
                    a.q.sizes(bad, False)
            elif verdict == GAP:
                self._not_applied(a, verdict, item[0], item[1], item)
                a.pending.extend(pending[i + 1:])
                return
        self._after_book(a, a.ts)
        a.dirty = True

    def seed_failed(self, symbol: str) -> None:
        """The snapshot service cannot answer for ``symbol``: stop holding its deltas."""
        a = self.slot(symbol)
        a.seeding = False
        a.pending.clear()

    def _scalar(self, a: SymbolSlot, kind: int, ts: int, values: list[Any]) -> None:
        if kind == FUNDING:
            if values[0] is not None:
                a.funding.add(ts, values[0])
            a.mark_price = values[2]
        elif kind == OPEN_INTEREST:
            if values[0] is not None:
                a.oi.add(ts, values[0])
            a.oi_value = values[1]
        elif kind == LIQUIDATION:
            if values[1] is not None and values[2] is not None:
                if a.liq.add(ts, values[1], values[2]):
                    self.log.warning("symbol=%s liquidation burst: %d liquidations within "
                                     "%gs", a.symbol, len(a.liq.items),
                                     self.settings.liquidation_window)
        elif kind == LONG_SHORT_RATIO:
            a.long_short = values[0]
        elif kind == VOLATILITY_INDEX:
            a.vol_index = values[0]
        elif kind == GAP_KIND:
            reason = values[0]
            self.upstream_gaps[reason] = self.upstream_gaps.get(reason, 0) + 1
            self._invalidate(a)
            a.seeding = False
            a.pending.clear()

    # ----- ZeroMQ documents -----------------------------------------------------------------
    def process_docs(self, docs: Sequence[dict[str, Any]]) -> int:
        """Apply the collector's JSON documents (see :mod:`supervisor.analyzer.docs`)."""
        from supervisor.analyzer.docs import process_docs

        return process_docs(self, docs)

    # ----- results ----------------------------------------------------------------------
    def take_plugin_batch(self) -> tuple[list[Event], list[int]]:
        events, seqs = self.plugin_events, self.plugin_seqs
        self.plugin_events, self.plugin_seqs = [], []
        return events, seqs

    def result(self, a: SymbolAnalytics, now: int | None = None) -> dict[str, Any]:
        doc = a.result(self.ts_max if now is None else now, self.settings.depth_levels,
                       self.labels)
        doc["instance"] = self.instance
        doc["type"] = "analysis"
        return doc


__all__ = ["Engine", "SymbolSlot", "TIMED"]
