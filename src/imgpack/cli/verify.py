"""`imgpack verify`: re-hash every record of a pack against its stored hash."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.cli.common import add_command, add_rev_option, at_rev
from imgpack.util.text import counted

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "verify",
        "re-hash every record against its stored hash",
        "imgpack verify data/packed/images.lmdb",
    )
    command.add_argument("pack", type=Path)
    command.add_argument(
        "--scheduler", metavar="ADDRESS", help="check the shards on the Dask cluster at ADDRESS"
    )
    add_rev_option(command)
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.check.verify import verify_pack

    result = verify_pack(at_rev(args.pack, args.rev), scheduler=args.scheduler)
    shards = counted(result.shards, "shard")
    print(f"ok: {result.records} records in {shards} match their stored hashes")
    return 0
