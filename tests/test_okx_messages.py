"""A deterministic OKX ``books`` message builder (the venue side) and its own checks.

There is no OKX recording in ``shared/fixtures``, so the OKX tests generate the venue's
stream: :class:`OkxBookStream` keeps the venue's true book (integer price ticks -> the
``price``/``size`` strings it publishes), random-walks it, and renders OKX v5 push messages
with non-contiguous ``seqId``/``prevSeqId`` and real CRC32 checksums. The checksum here is
a separate implementation from ``supervisor.exchanges.okx_checksum`` (explicit loop, struct
sign conversion), pinned to OKX's documented examples below, so the adapter is checked
against an independent model, never against itself.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

from supervisor import jsonlib
from supervisor.exchanges.base import BOOKS, TRADES, FeedConfig
from supervisor.exchanges.okx import OkxFeed


def reference_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's CRC32, written the long way: interleave top 25, ':'-join, signed int32."""
    fields: list[str] = []
    for i in range(25):
        if i < len(bids):
            fields += [bids[i][0], bids[i][1]]
        if i < len(asks):
            fields += [asks[i][0], asks[i][1]]
    unsigned = zlib.crc32(":".join(fields).encode("ascii"))
    return struct.unpack("<i", struct.pack("<I", unsigned))[0]


class OkxBookStream:
    """The venue's book for one instrument and the OKX messages that describe it.

    Prices are integer ticks rendered with two decimals (``"30000.10"``, trailing zero
    kept) and sizes with three (``"1.500"``), so a checksum computed over re-formatted
    numbers instead of the original strings cannot match.
    """

    def __init__(self, inst_id: str = "BTC-USDT", seed: int = 0, depth: int = 40,
                 checksums: bool = True) -> None:
        self.inst_id = inst_id
        self.rng = random.Random(seed)
        self.checksums = checksums
        self.seq = self.rng.randrange(1_000, 1_000_000)
        self.ts = 1_700_000_000_000 + self.rng.randrange(1_000_000)
        mid = self.rng.randrange(2_000_000, 4_000_000)  # ticks of 0.01
        self.bids: dict[int, str] = {}  # tick -> size string
        self.asks: dict[int, str] = {}
        for i in range(depth):
            self.bids[mid - 1 - i * self.rng.randint(1, 5)] = self._size()
            self.asks[mid + 1 + i * self.rng.randint(1, 5)] = self._size()

    # ----- the venue's truth ------------------------------------------------------------------
    @staticmethod
    def price(tick: int) -> str:
        return f"{tick // 100}.{tick % 100:02d}"

    def _size(self) -> str:
        return f"{self.rng.randint(1, 50_000) / 1000:.3f}"

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """The whole book, best first, as ``[price, size]`` pairs (the reference model)."""
        bids = [[self.price(t), self.bids[t]] for t in sorted(self.bids, reverse=True)]
        asks = [[self.price(t), self.asks[t]] for t in sorted(self.asks)]
        return bids, asks

    def checksum(self) -> int:
        return reference_checksum(*self.levels()) if self.checksums else 0

    # ----- messages ---------------------------------------------------------------------------
    def _push(self, action: str, bids: list[list[str]], asks: list[list[str]], prev: int,
              checksum: int) -> dict[str, Any]:
        self.ts += self.rng.randint(1, 200)
        return {"arg": {"channel": "books", "instId": self.inst_id}, "action": action,
                "data": [{"asks": asks, "bids": bids, "ts": str(self.ts), "checksum": checksum,
                          "prevSeqId": prev, "seqId": self.seq}]}

    def snapshot(self) -> dict[str, Any]:
        """What a (re)subscribe gets: the full book, ``prevSeqId`` -1."""
        bids, asks = self.levels()
        four = [[p, s, "0", str(self.rng.randint(1, 9))] for p, s in bids]
        four_a = [[p, s, "0", str(self.rng.randint(1, 9))] for p, s in asks]
        return self._push("snapshot", four, four_a, -1, self.checksum())

    def update(self, changes: int | None = None) -> dict[str, Any]:
        """Random inserts, size changes and removals on both sides, never crossing."""
        rng = self.rng
        changed_b: dict[int, str] = {}
        changed_a: dict[int, str] = {}
        for _ in range(changes if changes is not None else rng.randint(1, 6)):
            side, other, changed, sign = rng.choice([
                (self.bids, self.asks, changed_b, -1), (self.asks, self.bids, changed_a, 1)])
            roll = rng.random()
            if roll < 0.35 and len(side) > 5:  # remove (often at the top)
                tick = sorted(side, key=lambda t: sign * t)[rng.randrange(min(8, len(side)))]
                del side[tick]
                changed[tick] = "0"
            elif roll < 0.7:  # change a size
                tick = rng.choice(list(side))
                side[tick] = changed[tick] = self._size()
            else:  # insert at a new price on the own side of the spread
                best_other = min(other) if sign < 0 else max(other)
                tick = best_other + sign * rng.randint(1, 60)
                if tick not in side:
                    side[tick] = changed[tick] = self._size()
        prev = self.seq
        self.seq += rng.randint(1, 60)  # OKX ids grow by arbitrary steps
        bids = [[self.price(t), s, "0", "1" if s != "0" else "0"] for t, s in changed_b.items()]
        asks = [[self.price(t), s, "0", "1" if s != "0" else "0"] for t, s in changed_a.items()]
        return self._push("update", bids, asks, prev, self.checksum())

    def heartbeat(self) -> dict[str, Any]:
        """OKX's 'nothing changed' push: no levels, ``seqId == prevSeqId``."""
        return self._push("update", [], [], self.seq, self.checksum())

    def reset_update(self) -> dict[str, Any]:
        """After maintenance: ``seqId`` restarts below ``prevSeqId``."""
        msg = self.update()
        d = msg["data"][0]
        self.seq = d["seqId"] = self.rng.randrange(0, d["prevSeqId"])
        return msg

    def crossed_update(self) -> dict[str, Any]:
        """A (wrong) push putting a bid at the best ask; the venue's truth is not changed."""
        prev = self.seq
        self.seq += self.rng.randint(1, 60)
        ask = min(self.asks)
        return self._push("update", [[self.price(ask + 1), "1.000", "0", "1"]], [], prev, 0)


def frame(msg: Any) -> bytes:
    return jsonlib.dumps(msg)


def make_feed(market: str = "spot", symbols: tuple[str, ...] = ("BTC-USDT",),
              channels: frozenset[str] = frozenset({BOOKS, TRADES}),
              **cfg: Any) -> tuple[OkxFeed, list[Any]]:
    """An OkxFeed whose sink appends to the returned list (no connection)."""
    events: list[Any] = []
    feed = OkxFeed(FeedConfig(f"okx_{market}", "okx", market, symbols, channels, **cfg),
                   events.append)
    return feed, events


def book_levels(feed: OkxFeed, symbol: str) -> tuple[list[list[str]], list[list[str]]]:
    """The feed's whole book as ``[price, size]`` pairs, best first."""
    bids, asks = feed.books[symbol].snapshot_levels()
    return [list(lv[:2]) for lv in bids], [list(lv[:2]) for lv in asks]


# ----- the builder's own guarantees -----------------------------------------------------------
def test_reference_checksum_matches_okx_documented_examples():
    # OKX depth-channel docs: bids/asks aligned, and a short bid side.
    assert reference_checksum([["3366.1", "7"], ["3366", "6"]],
                              [["3366.8", "9"], ["3368", "8"]]) == -1881014294
    assert reference_checksum([["3366.1", "7"]],
                              [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]) == 831078360


def test_builder_sequence_ids_chain_but_are_not_contiguous():
    stream = OkxBookStream(seed=7)
    last = stream.snapshot()["data"][0]["seqId"]
    steps = []
    for _ in range(50):
        d = stream.update()["data"][0]
        assert d["prevSeqId"] == last
        steps.append(d["seqId"] - last)
        last = d["seqId"]
    assert min(steps) >= 1 and max(steps) > 1


def test_builder_book_never_crosses_and_keeps_original_strings():
    stream = OkxBookStream(seed=3)
    for _ in range(300):
        stream.update()
        assert max(stream.bids) < min(stream.asks)
    bids, _ = stream.levels()
    assert all(len(p.split(".")[1]) == 2 and len(s.split(".")[1]) == 3 for p, s in bids)
