"""cryptofeed's own Binance USD-M book handling of a recorded stream (the bench's other side).

Run by ``bench/book.py`` with the Python of a venv holding ``cryptofeed<3`` (2.4.x, the last
line that runs on Python 3.11); never imported by the project. Reads a job on stdin (JSON:
depth frames, snapshot bodies), then requests for a number of passes in a mode, each
answered with its result (JSON line).

cryptofeed's real path runs: ``BinanceFutures.message_handler`` (``json.loads`` with
``parse_float=Decimal``, dispatch, ``_book``: ``_check_update_id``, Decimal levels into its C
``order_book``, ``book_callback`` -> an async no-op callback). No network: the symbol table is
filled from a synthetic exchangeInfo, and ``http_conn.read`` returns the recorded snapshot
body, so cryptofeed's ``_snapshot`` (awaited inline on a symbol's first diff, as it does live)
loads the recorded book.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from importlib.metadata import version
from urllib.parse import parse_qs, urlsplit

from cryptofeed.defines import L2_BOOK
from cryptofeed.exchanges import BinanceFutures
from cryptofeed.symbols import Symbols


def make_feed(venue_symbols: list[str], snapshots: dict[str, str], counter: list[int]):
    async def on_book(book, receipt_timestamp):  # the cheapest callback cryptofeed allows
        counter[0] += 1

    feed = BinanceFutures(symbols=[f"{s[:-4]}-USDT-PERP" for s in venue_symbols],
                          channels=[L2_BOOK], callbacks={L2_BOOK: on_book})

    async def read(address, **_kw):  # replaces the REST GET of the depth snapshot
        return snapshots[parse_qs(urlsplit(address).query)["symbol"][0]]

    feed.http_conn.read = read
    return feed


async def one_repeat(job: dict, mode: str, counter: list[int]) -> tuple[int, object]:
    """Handle the recording once with a fresh feed; returns (ns spent, feed)."""
    gc.collect()  # the previous pass's feed, off the clock (as on our side)
    feed = make_feed(job["symbols"], job["snapshots"], counter)
    frames = job["frames"]
    handler = feed.message_handler
    if mode == "deltas":  # snapshots loaded before the clock starts
        for s in job["symbols"]:
            await feed._snapshot(s)
    t0 = time.perf_counter_ns()
    for text in frames:
        await handler(text, None, 0.0)
    return time.perf_counter_ns() - t0, feed


def top5(feed) -> dict:
    tops = {}
    for symbol, book in feed._l2_book.items():
        bids = book.book.bids.to_list()[:5]
        asks = book.book.asks.to_list()[:5]
        tops[symbol.replace("-PERP", "").replace("-", "")] = [
            [[str(p), str(q)] for p, q in bids], [[str(p), str(q)] for p, q in asks]]
    return tops


async def main() -> None:
    """Line protocol: the job (JSON), then ``<mode>\t<passes>\t<warm-up 0|1>`` lines, each
    answered by the result of those passes (JSON line), so the parent can interleave our
    passes with cryptofeed's."""
    job = json.loads(sys.stdin.readline())
    data = {"symbols": [{"symbol": s, "baseAsset": s[:-4], "quoteAsset": "USDT",
                         "contractType": "PERPETUAL", "filters": [{"tickSize": "0.0001"}]}
                        for s in job["symbols"]]}
    Symbols.set(BinanceFutures.id, *BinanceFutures._parse_symbol_data(data))
    print(json.dumps({"version": version("cryptofeed"), "python": sys.version.split()[0]}),
          flush=True)
    for line in sys.stdin:
        mode, passes, warm = line.rstrip("\n").split("\t")
        counter = [0]
        if warm == "1":
            await one_repeat(job, mode, counter)
            counter[0] = 0
        spent = 0
        for _ in range(int(passes)):
            ns, feed = await one_repeat(job, mode, counter)
            spent += ns
        print(json.dumps({"ns": spent, "messages": len(job["frames"]) * int(passes),
                          "callbacks": counter[0], "tops": top5(feed)}), flush=True)

if __name__ == "__main__":
    asyncio.run(main())
