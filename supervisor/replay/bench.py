"""Throughput of the replay exchange: messages/s it pushes to one connection.

Runs ``marketprism-replay serve --rate R`` in a child process (its own core) and reads one
connection with a minimal WebSocket client that only counts frames, so the number measures
the server, not a client parser. Reports messages/s, MB/s and the server's CPU use (from
``/proc``), per venue::

    python -m supervisor.replay.bench [--rate 0] [--seconds 5] [--symbols 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time

from supervisor import jsonlib
from supervisor.replay.harness import ReplayProcess

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "LTC", "DOT", "LINK", "AVAX", "TRX", "BNB"]


def subscribe_request(venue: str, n: int) -> tuple[str, bytes]:
    """(ws path, the subscribe message) for ``n`` symbols' books and trades."""
    bases = [SYMBOLS[i % len(SYMBOLS)] + ("" if i < len(SYMBOLS) else str(i)) for i in range(n)]
    if venue.startswith("binance"):
        market = venue.split("_")[1]
        params = [f"{b.lower()}usdt@{s}" for b in bases for s in ("depth@100ms", "aggTrade")]
        return f"/binance/{market}/stream", jsonlib.dumps(
            {"method": "SUBSCRIBE", "params": params, "id": 1})
    if venue == "okx":
        args = [{"channel": c, "instId": f"{b}-USDT-SWAP"} for b in bases
                for c in ("books", "trades")]
        return "/okx/ws/v5/public", jsonlib.dumps({"op": "subscribe", "args": args})
    channels = [f"{c}.{b}-PERPETUAL.100ms" for b in bases for c in ("book", "trades")]
    return "/deribit/ws/api/v2", jsonlib.dumps({"jsonrpc": "2.0", "id": 1,
                                                "method": "public/subscribe",
                                                "params": {"channels": channels}})


def masked_text_frame(payload: bytes) -> bytes:
    """A client frame (clients must mask; the mask here is zero, which is allowed)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def count_frames(port: int, path: str, request: bytes, seconds: float
                       ) -> tuple[int, int, float]:
    """(frames, bytes, elapsed) read from one connection after a 1 s warm-up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.write(masked_text_frame(request))
    buf = b""
    frames = total = 0
    start = time.monotonic()
    measure_from = start + 1.0
    counting = False
    t0 = start
    while True:
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        now = time.monotonic()
        if not counting and now >= measure_from:
            counting, frames, total, t0 = True, 0, 0, now
        if counting and now - t0 >= seconds:
            break
        buf += chunk
        pos, end = 0, len(buf)
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if end - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if end - pos < head + n:
                break
            pos += head + n
            frames += 1
        total += pos
        buf = buf[pos:]
    writer.close()
    return frames, total, time.monotonic() - t0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.0, help="server --rate (0: unlimited)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--venues", default="binance_derivatives,binance_spot,okx,deribit")
    args = p.parse_args(argv)
    print(f"{'venue':22} {'msgs/s':>10} {'MB/s':>7} {'server CPU':>10}")
    for venue in args.venues.split(","):
        with ReplayProcess(["--rate", str(args.rate), "--ping-interval", "0"]) as rx:
            assert rx.proc is not None
            path, request = subscribe_request(venue, args.symbols)
            cpu0, t0 = cpu_seconds(rx.proc.pid), time.monotonic()
            frames, size, elapsed = asyncio.run(count_frames(rx.port, path, request,
                                                             args.seconds))
            cpu = (cpu_seconds(rx.proc.pid) - cpu0) / (time.monotonic() - t0)
        print(f"{venue:22} {frames / elapsed:10.0f} {size / elapsed / 1e6:7.1f} {cpu:9.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
