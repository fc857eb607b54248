"""``marketprism-replay``: run the replay exchange, or arm a fault on a running one.

Usage::

    marketprism-replay serve [--host 127.0.0.1] [--port 8090] [--rate 200] [--seed 1]
                             [--recording VENUE=PATH ...] [--speed 0] [--okx-checksum]
    marketprism-replay fault VENUE KIND [--symbol S] [--count N] [--seconds S]
                             [--levels N] [--mode json|fields] [--url http://127.0.0.1:8090]
    marketprism-replay faults --clear | marketprism-replay stats   [--url ...]

``serve`` logs one line per connection and subscription to stdout and exits 0 on SIGTERM or
SIGINT. ``VENUE`` is ``binance_spot``, ``binance_derivatives``, ``binance`` (both), ``okx``
or ``deribit``; ``KIND`` one of ``supervisor.replay.faults.KINDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from supervisor import jsonlib
from supervisor.replay import timers
from supervisor.replay.faults import KINDS
from supervisor.replay.harness import control
from supervisor.replay.server import ReplayExchange

DEFAULT_URL = "http://127.0.0.1:8090"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marketprism-replay",
                                description="Local replay exchange (Binance, OKX, Deribit).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090)
    s.add_argument("--rate", type=float, default=200.0,
                   help="synthetic messages/s per connection (<= 0: as fast as it reads)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--recording", action="append", default=[], metavar="VENUE=PATH",
                   help="serve a recording (ws file or name prefix) for VENUE")
    s.add_argument("--speed", type=float, default=0.0,
                   help="recordings: 0 = as fast as possible, else x recorded pace")
    s.add_argument("--okx-checksum", action="store_true",
                   help="send OKX's real CRC32 instead of 0")
    s.add_argument("--ping-interval", type=float, default=5.0)
    s.add_argument("--heartbeat-interval", type=float, default=None,
                   help="Deribit: send test_request this often whatever the client asked")
    s.add_argument("--allow-remote", action="store_true",
                   help="permit a non-loopback --host")

    f = sub.add_parser("fault", help="arm a fault on a running server")
    f.add_argument("venue")
    f.add_argument("kind", choices=KINDS)
    f.add_argument("--symbol")
    f.add_argument("--count", type=int, default=1)
    f.add_argument("--seconds", type=float)
    f.add_argument("--levels", type=int)
    f.add_argument("--mode", choices=("json", "fields"))
    f.add_argument("--url", default=DEFAULT_URL)

    c = sub.add_parser("faults", help="list (or --clear) the armed faults")
    c.add_argument("--clear", action="store_true")
    c.add_argument("--url", default=DEFAULT_URL)

    t = sub.add_parser("stats", help="print the per-venue counters")
    t.add_argument("--url", default=DEFAULT_URL)
    return p


async def serve(args: argparse.Namespace) -> int:
    recordings = {}
    for item in args.recording:
        venue, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--recording wants VENUE=PATH, got {item!r}")
        recordings[venue] = path
    rx = ReplayExchange(host=args.host, port=args.port, rate=args.rate, seed=args.seed,
                        recordings=recordings, speed=args.speed,
                        okx_checksum=args.okx_checksum, ping_interval=args.ping_interval,
                        heartbeat_interval=args.heartbeat_interval,
                        allow_remote=args.allow_remote)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await rx.start()
    await stop.wait()
    logging.getLogger("marketprism.replay").info("shutting down")
    await rx.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s")
        try:
            return timers.run(serve(args))
        except (OSError, ValueError) as exc:
            print(f"marketprism-replay: {exc}", file=sys.stderr)
            return 1
    url = args.url.rstrip("/")
    try:
        if args.command == "fault":
            body = {"venue": args.venue, "kind": args.kind, "symbol": args.symbol,
                    "count": args.count}
            for key in ("seconds", "levels", "mode"):
                if getattr(args, key) is not None:
                    body[key] = getattr(args, key)
            answer = control(url + "/_control/fault", "POST", body)
        elif args.command == "faults":
            answer = control(url + "/_control/fault" if args.clear else url + "/_control/faults",
                             "DELETE" if args.clear else "GET")
        else:
            answer = control(url + "/_control/stats")
    except (OSError, ValueError) as exc:
        print(f"marketprism-replay: {exc}", file=sys.stderr)
        return 1
    print(jsonlib.dumps(answer).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
