"""The soak's analyzer plug-in: journals every ring sequence it is given, exactly once.

Each analyzer of a soak run loads this file (``plugin = "<checkout>/soak/plugin.py"``); it
is the independent witness :mod:`soak.ledger` reads at the end. It receives every event
kind, and for each batch appends to ``<state_dir>/soak/<instance>.journal``:

============================================ ==============================================
line                                         meaning
============================================ ==============================================
``R <first> <last>``                         ring seqs first..last were delivered
``G <seq> <symbol> <reason> <ts_recv>``      a Gap event (an announced break)
``S <seq> <symbol> <ts_recv>``               a book snapshot (the book's chain restarts)
``B <seq> <symbol> <prev_seq> <head>``       a delta that does not chain onto the book's
                                             last seq ``head`` with no Gap or snapshot in
                                             between (``head`` -1: after a Gap): a silent
                                             break, which must never happen
============================================ ==============================================

All numbers are ring seqs except ``prev_seq``/``head`` (the venue's book sequence) and
``ts_recv`` (ns). Lines of one batch go out in one ``write`` before ``analyze`` returns, so
before the analyzer commits; ``on_start(last_committed_seq)`` cuts the file back to that
commit (and drops a line a kill cut short), as the plug-in contract asks. Hence a sequence
appears in ``R`` lines exactly once, or the exactly-once promise is broken.

The chain check (:class:`Chains`) restarts with each process and after every hole in the
ring seqs (a lap): a symbol's first delta after either is taken as its head. Not thread
safe; one analyzer owns one journal.
"""

from __future__ import annotations

import os
from typing import Any

KINDS = {"book_snapshot", "book_delta", "trade", "funding", "open_interest", "liquidation",
         "long_short_ratio", "volatility_index", "gap"}
AFTER_GAP = -1  # head of a book whose last event was a Gap: only a snapshot may follow

_state: dict[str, Any] = {"fd": -1, "path": ""}


def journal_path(state_dir: str, instance: str) -> str:
    return os.path.join(state_dir, "soak", f"{instance}.journal")


def setup(ctx: Any) -> None:
    path = ctx.options.get("journal") or journal_path(ctx.state_dir, ctx.instance)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _state["path"] = path
    _state["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)


def on_start(last_committed_seq: int | None) -> None:
    """Drop what was journaled after the commit: the analyzer delivers it again."""
    _chains.reset((last_committed_seq or 0) + 1)
    rollback(_state["path"], last_committed_seq or 0)


def rollback(path: str, last: int) -> int:
    """Cut ``path`` back to ring seq ``last``; returns how many lines were dropped or cut."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")[:-1]  # the last piece is b"" or a line a kill cut short
    keep: list[bytes] = []
    changed = 0
    for line in lines:
        parts = line.split(b" ")
        if parts[0] == b"R":
            first, end = int(parts[1]), int(parts[2])
            if end > last:
                changed += 1
                if first > last:
                    continue
                line = b"R %d %d" % (first, last)
        elif int(parts[1]) > last:
            changed += 1
            continue
        keep.append(line)
    if changed or len(data) != sum(len(x) + 1 for x in lines):
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"".join(x + b"\n" for x in keep))
        os.replace(tmp, path)
        # The descriptor from setup() still points at the replaced file: reopen it.
        if _state["fd"] >= 0 and _state["path"] == path:
            os.close(_state["fd"])
            _state["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND)
    return changed


class Chains:
    """Each book's chain as the plug-in saw it: symbol -> last book seq (:data:`AFTER_GAP`
    after a Gap).

    Only deliveries of consecutive ring seqs can be checked against each other: at a hole
    (a lap the analyzer announced, or a record it could not decode) every chain is forgotten,
    and each symbol's next delta starts it again, as after a start.
    """

    def __init__(self) -> None:
        self.heads: dict[str, int] = {}
        self.next_seq = 0  # the ring seq expected next (0: unknown)

    def reset(self, next_seq: int = 0) -> None:
        self.heads = {}
        self.next_seq = next_seq

    def lines(self, events: Any, seqs: Any) -> list[str]:
        """The journal lines of one batch (``events[i]`` is ring seq ``seqs[i]``)."""
        heads = self.heads
        out: list[str] = []
        start = prev = -2
        for ev, seq in zip(events, seqs, strict=True):
            if seq != prev + 1:
                if start >= 0:
                    out.append(f"R {start} {prev}")
                start = seq
            if seq != self.next_seq and self.next_seq:
                heads.clear()  # records in between never reached us
            self.next_seq = seq + 1
            prev = seq
            name = type(ev).__name__
            if name == "BookDelta":
                head = heads.get(ev.symbol)
                if head is not None and ev.prev_seq != head:
                    out.append(f"B {seq} {ev.symbol} {ev.prev_seq} {head}")
                heads[ev.symbol] = ev.seq
            elif name == "BookSnapshot":
                heads[ev.symbol] = ev.seq
                out.append(f"S {seq} {ev.symbol} {ev.ts_recv}")
            elif name == "Gap":
                heads[ev.symbol] = AFTER_GAP
                out.append(f"G {seq} {ev.symbol} {ev.reason} {ev.ts_recv}")
        if start >= 0:
            out.append(f"R {start} {prev}")
        return out


_chains = Chains()


def analyze(batch: Any) -> None:
    lines = _chains.lines(batch.events, batch.seqs)
    os.write(_state["fd"], "".join(line + "\n" for line in lines).encode())


def close() -> None:
    if _state["fd"] >= 0:
        os.close(_state["fd"])
        _state["fd"] = -1
