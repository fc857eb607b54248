"""``marketprism``: the operator's command (config check, foreground run, status, rings)."""

from __future__ import annotations

import argparse
import sys

from supervisor import config as config_mod


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"marketprism: configuration error: {exc}", file=sys.stderr)
        return config_mod.EX_CONFIG
    print(f"{cfg.path}: OK")
    for name, inst in cfg.instances.items():
        state = "enabled" if inst.enabled else "disabled"
        print(f"  {name:<22} {inst.exchange:<8} {inst.market:<12} {state:<8} "
              f"{len(inst.symbols)} symbols  memory {inst.memory_soft_mb}/"
              f"{inst.memory_hard_mb} MB  ring {inst.ring}")
    return 0


def cmd_ring(args: argparse.Namespace) -> int:
    from shm.cli import main as ring_main

    return ring_main(args.ring_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketprism", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate the whole configuration file")
    check.add_argument("--config", help="config file")
    check.set_defaults(func=cmd_config_check)
    ring = sub.add_parser("ring", help="list, inspect or remove shared-memory rings")
    ring.add_argument("ring_args", nargs=argparse.REMAINDER)
    ring.set_defaults(func=cmd_ring)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
