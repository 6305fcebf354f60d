"""`imgpack convert`: rewrite a format-1 pack as format 3."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.cli.common import add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "convert",
        "rewrite a format-1 pack as format 3 (the old one is kept)",
        "imgpack convert old.lmdb new.lmdb",
    )
    command.add_argument("old", type=Path, help="the format-1 pack (read only)")
    command.add_argument("new", type=Path, help="the format-3 pack to write")
    command.add_argument(
        "--shard-mb", type=float, default=64, help="image MB per shard (default 64)"
    )
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.write.convert import convert_pack

    header = convert_pack(args.old, args.new, args.shard_mb)
    print(
        f"converted {header['count']} records and {header['aliases']} aliases into {args.new} "
        f"(format version {header['format_version']}, {len(header['shards'])} shards)"
    )
    return 0
