"""``marketprism``: the operator's command (config check, foreground run, status, rings)."""

from __future__ import annotations

import argparse
import sys

from supervisor import config as config_mod
from supervisor.aggregator import status


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = config_mod.load_or_report(args.config)
    if cfg is None:
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


def cmd_units_sync(args: argparse.Namespace) -> int:
    from supervisor import units

    cfg = config_mod.load_or_report(args.config)
    if cfg is None:
        return config_mod.EX_CONFIG
    return units.sync(cfg, root=args.root)


def cmd_record_failure(args: argparse.Namespace) -> int:
    from supervisor import units

    return units.record_failure(args.unit, state_dir=args.state_dir,
                                textfile_dir=args.textfile_dir)


def cmd_run(args: argparse.Namespace) -> int:
    from supervisor.foreground import Foreground, children_for
    from supervisor.service import setup_logging

    setup_logging("run")
    cfg = config_mod.load_or_report(args.config)
    if cfg is None:
        return config_mod.EX_CONFIG
    return Foreground(children_for(cfg)).run()


def cmd_status(args: argparse.Namespace) -> int:
    return status.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketprism", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate the whole configuration file")
    check.add_argument("--config", help="config file")
    check.set_defaults(func=cmd_config_check)
    run = sub.add_parser("run", help="run every enabled instance in the foreground (no systemd)")
    run.add_argument("--config", help="config file")
    run.set_defaults(func=cmd_run)
    status_p = sub.add_parser("status", help="health of every instance as a table")
    status.add_arguments(status_p)
    status_p.set_defaults(func=cmd_status)
    units_p = sub.add_parser("units", help="systemd unit commands")
    units_sub = units_p.add_subparsers(dest="units_command", required=True)
    sync = units_sub.add_parser("sync", help="write memory drop-ins, enable configured instances")
    sync.add_argument("--config", help="config file")
    sync.add_argument("--root", default="/", help="operate on another root (packaging, tests)")
    sync.set_defaults(func=cmd_units_sync)
    fail = sub.add_parser("record-failure", help="OnFailure= hook: log and count a failed unit")
    fail.add_argument("unit")
    fail.add_argument("--state-dir", default="/var/lib/marketprism")
    fail.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter")
    fail.set_defaults(func=cmd_record_failure)
    ring = sub.add_parser("ring", help="list, inspect or remove shared-memory rings")
    ring.add_argument("ring_args", nargs=argparse.REMAINDER)
    ring.set_defaults(func=cmd_ring)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
