"""Where every ring sequence went: the soak's loss accounting, from the plug-in's journals.

Per instance, the ring's writer numbered its records 1..``last_seq`` (across collector
restarts: the sequence continues). At the end every one of them must be either

- delivered to the analyzer's plug-in exactly once (``R`` lines of the journal, see
  :mod:`soak.plugin`), or
- inside a lap the analyzer announced (its ``lost N records (ring seq a..b)`` log line) and
  counted in the ring's durable ``lost`` counter of its reader.

Anything else is loss outside announced gaps. Book chains are checked in the same pass:
every venue sequence break must show as a Gap event (``B`` lines are silent breaks), and
every sequence-breaking fault the soak injected must be followed by a Gap on that symbol
(:func:`match_faults`). Pure functions over text and numbers, so tests can feed them
hand-written journals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

LAP_LINE = re.compile(r"lost (\d+) records \(ring seq (\d+)\.\.(\d+)\)")


class Mark(NamedTuple):
    """A timed journal line: a Gap (``reason`` set) or a book snapshot (``reason`` "")."""

    seq: int  # ring seq
    symbol: str
    ts_recv: int  # ns, collector receive time
    reason: str = ""


class Break(NamedTuple):
    seq: int  # ring seq of the delta
    symbol: str
    prev_seq: int  # the delta's prev_seq
    head: int  # the book's last seq (-1: a Gap came last)


@dataclass
class Journal:
    ranges: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[Mark] = field(default_factory=list)
    snapshots: list[Mark] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    bad_lines: int = 0  # lines that do not parse (must stay 0)


def parse_journal(text: str) -> Journal:
    """Parse a plug-in journal (a last line without its newline is ignored, as on_start does)."""
    j = Journal()
    lines = text.split("\n")[:-1]
    for line in lines:
        p = line.split(" ")
        try:
            tag = p[0]
            if tag == "R" and len(p) == 3:
                j.ranges.append((int(p[1]), int(p[2])))
            elif tag == "G" and len(p) == 5:
                j.gaps.append(Mark(int(p[1]), p[2], int(p[4]), p[3]))
            elif tag == "S" and len(p) == 4:
                j.snapshots.append(Mark(int(p[1]), p[2], int(p[3])))
            elif tag == "B" and len(p) == 5:
                j.breaks.append(Break(int(p[1]), p[2], int(p[3]), int(p[4])))
            else:
                j.bad_lines += 1
        except ValueError:
            j.bad_lines += 1
    return j


def merge(ranges: Iterable[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """Union of inclusive ranges, and how many sequences were covered more than once."""
    out: list[tuple[int, int]] = []
    overlap = 0
    for a, b in sorted(ranges):
        if b < a:
            continue
        if out and a <= out[-1][1] + 1:
            la, lb = out[-1]
            if a <= lb:
                overlap += min(b, lb) - a + 1
            out[-1] = (la, max(lb, b))
        else:
            out.append((a, b))
    return out, overlap


def subtract(ranges: Sequence[tuple[int, int]], holes: Sequence[tuple[int, int]]
             ) -> list[tuple[int, int]]:
    """``ranges`` minus ``holes`` (both merged, sorted, inclusive)."""
    out: list[tuple[int, int]] = []
    i = 0
    for a, b in ranges:
        while i < len(holes) and holes[i][1] < a:
            i += 1
        j = i
        cur = a
        while j < len(holes) and holes[j][0] <= b:
            ha, hb = holes[j]
            if ha > cur:
                out.append((cur, ha - 1))
            cur = max(cur, hb + 1)
            j += 1
        if cur <= b:
            out.append((cur, b))
    return out


def size(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def parse_laps(log_text: str) -> list[tuple[int, int]]:
    """The ring-seq ranges the analyzer announced as lost (every restart's lines)."""
    return [(int(m.group(2)), int(m.group(3))) for m in LAP_LINE.finditer(log_text)]


@dataclass
class Account:
    """One instance's ledger. ``ok`` is the invariant: nothing lost outside announced gaps."""

    instance: str
    produced: int  # ring records written (last ring seq)
    consumed: int  # distinct seqs delivered to the analyzer's plug-in
    duplicates: int  # seqs delivered more than once after rollbacks (exactly-once broken)
    lapped: int  # seqs inside announced laps and not delivered
    reader_lost: int  # the ring's durable lost counter of the analyzer's reader
    lost_outside_gaps: int  # neither delivered nor inside an announced lap
    unexplained: list[tuple[int, int]]  # those seqs, as ranges (first few)
    breaks: list[Break]  # the silent breaks (first few)
    beyond_end: int  # delivered seqs above the ring's last seq (impossible)
    silent_breaks: int  # deltas that broke the book chain without a Gap
    gaps_by_reason: dict[str, int]
    snapshots: int
    bad_lines: int

    @property
    def ok(self) -> bool:
        return (self.lost_outside_gaps == 0 and self.duplicates == 0 and self.beyond_end == 0
                and self.silent_breaks == 0 and self.bad_lines == 0
                and self.lapped == self.reader_lost)

    def problems(self) -> list[str]:
        out = []
        if self.lost_outside_gaps:
            out.append(f"{self.lost_outside_gaps} ring seqs lost outside announced gaps "
                       f"(e.g. {self.unexplained[:3]})")
        if self.duplicates:
            out.append(f"{self.duplicates} ring seqs delivered more than once")
        if self.beyond_end:
            out.append(f"{self.beyond_end} seqs delivered beyond the ring's last seq")
        if self.silent_breaks:
            b = self.breaks[0]
            out.append(f"{self.silent_breaks} book deltas broke the chain without a Gap (first: "
                       f"ring seq {b.seq} {b.symbol} prev_seq {b.prev_seq}, book at {b.head})")
        if self.bad_lines:
            out.append(f"{self.bad_lines} unparsable journal lines")
        if self.lapped != self.reader_lost:
            out.append(f"announced laps hold {self.lapped} undelivered seqs but the ring's "
                       f"reader counted {self.reader_lost} lost")
        return [f"{self.instance}: {p}" for p in out]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("unexplained", "breaks")}
        d["unexplained"] = [list(r) for r in self.unexplained[:10]]
        d["breaks"] = [b._asdict() for b in self.breaks[:10]]
        d["ok"] = self.ok
        return d


def account(instance: str, journal: Journal, last_seq: int, reader_lost: int,
            laps: Iterable[tuple[int, int]]) -> Account:
    """Balance one instance's ring against the journal and the announced laps."""
    delivered, duplicates = merge(journal.ranges)
    consumed = size(delivered)
    inside = subtract(delivered, [(last_seq + 1, 1 << 62)])
    beyond = consumed - size(inside)
    missing = subtract([(1, last_seq)], inside) if last_seq > 0 else []
    announced, _ = merge(laps)
    unexplained = subtract(missing, announced)
    lost_outside = size(unexplained)
    return Account(
        instance=instance, produced=last_seq, consumed=consumed - beyond,
        duplicates=duplicates, lapped=size(missing) - lost_outside, reader_lost=reader_lost,
        lost_outside_gaps=lost_outside, unexplained=unexplained, breaks=journal.breaks[:10],
        beyond_end=beyond,
        silent_breaks=len(journal.breaks),
        gaps_by_reason=dict(Counter(g.reason for g in journal.gaps)),
        snapshots=len(journal.snapshots), bad_lines=journal.bad_lines)


# ----- injected faults -> Gap events ----------------------------------------------------------
BREAKING = ("drop", "bad_checksum", "reset", "disconnect")  # faults that must cause a Gap


class Applied(NamedTuple):
    """One sequence-breaking fault the replay exchange applied."""

    instance: str
    symbol: str
    kind: str
    armed_ns: int  # when the soak armed it
    applied_ns: int  # when the soak saw it fired (polled, so a little late)


def match_faults(faults: Iterable[Applied], gaps: dict[str, list[Mark]],
                 restarts: dict[str, list[int]], before_ns: int = 15 * 10**9,
                 after_ns: int = 60 * 10**9) -> dict[str, Any]:
    """Classify each fault: ``announced`` (a Gap on its symbol follows it), ``absorbed``
    (the collector restarted meanwhile: the new process starts from a snapshot) or
    ``unannounced`` (the invariant: must be 0).

    A Gap up to ``before_ns`` before arming counts too: a fault that hits a book still
    resyncing after a Gap is already covered by it (the collector emits one Gap per break).
    ``restarts`` maps an instance to the start times (ns) of its collector processes.
    """
    counts: Counter[str] = Counter()
    unannounced: list[dict[str, Any]] = []
    for f in faults:
        lo, hi = f.armed_ns - before_ns, f.applied_ns + after_ns
        if any(g.symbol == f.symbol and lo <= g.ts_recv <= hi for g in gaps.get(f.instance, ())):
            counts["announced"] += 1
        elif any(lo <= t <= hi for t in restarts.get(f.instance, ())):
            counts["absorbed"] += 1
        else:
            counts["unannounced"] += 1
            unannounced.append(f._asdict())
    return {"announced": counts["announced"], "absorbed": counts["absorbed"],
            "unannounced": counts["unannounced"], "unannounced_faults": unannounced[:20]}


__all__ = ["Account", "Applied", "Break", "Journal", "Mark", "account", "match_faults",
           "merge", "parse_journal", "parse_laps", "subtract", "size", "BREAKING"]
