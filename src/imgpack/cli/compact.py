"""`imgpack compact`: rewrite a pack grown version by version into a fresh build's layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.cli.common import add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "compact",
        "rewrite a pack grown version by version into a fresh build's layout (dead images go)",
        "imgpack compact data/packed/images.lmdb",
    )
    command.add_argument("pack", type=Path)
    command.add_argument("out", type=Path, nargs="?", help="where to write it (default: in place)")
    command.add_argument(
        "--shard-mb", type=float, help="image MB per shard (default: the pack's own)"
    )
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.write.compact import compact_pack

    out = args.out or args.pack
    header = compact_pack(args.pack, out, args.shard_mb)
    print(
        f"compacted {header['count']} records and {header['aliases']} aliases into {out} "
        f"({len(header['shards'])} shards, {header['total_bytes']} image bytes)"
    )
    return 0
