"""OKX order-book CRC32 checksum (``books``, ``books-l2-tbt``, ``books50-l2-tbt``).

OKX's rule (docs-v5, "Order book channel" -> "Checksum"): take the top 25 bids and the top
25 asks of the local book, write each level as ``price:size`` using the venue's ORIGINAL
strings (``"0.5000"`` stays ``"0.5000"``), interleave them ``bid1:ask1:bid2:ask2:...``
(when one side has fewer levels, the other side's remaining levels follow on their own),
join with ``:`` and take the CRC32 of that text; the venue sends it as a *signed* 32-bit
integer.  Documented example::

    bids [["3366.1", "7"], ["3366", "6"]]   asks [["3366.8", "9"], ["3368", "8"]]
    -> "3366.1:7:3366.8:9:3366:6:3368:8" -> -1881014294

Since OKX's 2026 deprecation the field is always 0 in live data (older recordings and the
replay exchange still carry real values): callers verify only a non-zero checksum.

Cost: one ``str.join`` over the 100 original strings (gathered by C iterators, no
per-level Python code), one ``zlib.crc32`` over < 1 KB; no Decimal, no number formatting.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter

from supervisor.events import Level

CHECKSUM_DEPTH = 25  # levels per side that enter the checksum

_PX_SZ = itemgetter(0, 1)  # (price, size) of a [price, size, liq, orders] level
_flatten = chain.from_iterable


def checksum_string(bids: Sequence[Level], asks: Sequence[Level],
                    depth: int = CHECKSUM_DEPTH) -> str:
    """The text OKX checksums: ``bid:ask`` pairs interleaved, best first, original strings."""
    bids = bids[:depth]
    asks = asks[:depth]
    paired = min(len(bids), len(asks))
    # (px, sz) of bid i then ask i, flattened: iterated in C, no per-level Python frame
    head = _flatten(_flatten(zip(map(_PX_SZ, bids), map(_PX_SZ, asks), strict=False)))
    # at most one side has levels left over; they follow in order
    tail = _flatten(map(_PX_SZ, bids[paired:] or asks[paired:]))
    return ":".join(chain(head, tail))


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level],
                 depth: int = CHECKSUM_DEPTH) -> int:
    """CRC32 of :func:`checksum_string` as OKX sends it: a signed 32-bit integer.

    Parameters
    ----------
    bids, asks:
        Levels best first (``[price, size, ...]`` string lists); only the first ``depth``
        of each side are read.

    Returns
    -------
    int
        In ``[-2**31, 2**31)``, directly comparable with the venue's ``checksum`` field.
    """
    crc = zlib.crc32(checksum_string(bids, asks, depth).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


__all__ = ["CHECKSUM_DEPTH", "checksum_string", "okx_checksum"]
