"""`imgpack info`: a pack's header and counts, as lines or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from imgpack.cli.common import add_command, add_rev_option

__all__ = ["add_parser", "run"]

SHOWN_NAMES = 20  # of a list value (classes, shard files, columns) in the plain listing


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "info",
        "header and counts of a pack",
        "imgpack info data/packed/images.lmdb --json",
    )
    command.add_argument("pack", type=Path)
    command.add_argument("--json", action="store_true")
    add_rev_option(command)
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.read.pack import Pack

    with Pack(args.pack, args.rev) as pack:
        info = dict(pack.header)
        info["shard_files"] = [s["name"] for s in info["shards"] if s["name"]]
        info["shards"] = len(info["shards"])
        info["layout"] = "folder" if info["shard_files"] else "file"
        stored = sum(s["count"] for s in pack.header["shards"])
        info["unreferenced_images"] = stored - pack.header["count"]  # left by deletions
        info["file_bytes"] = pack.file_bytes
        info["path"] = str(pack.path)
        info["columns"] = pack.catalog.columns
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print_lines(info)
    return 0


def _print_lines(info: dict[str, Any]) -> None:
    for key in sorted(info):
        value = info[key]
        if key in ("classes", "shard_files", "columns"):
            shown = ", ".join(value[:SHOWN_NAMES])
            value = f"{len(value)}: {shown}{' ...' if len(value) > SHOWN_NAMES else ''}"
        print(f"{key}: {value}")
