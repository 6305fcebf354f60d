"""`imgpack cache info|clear`: show or empty this machine's cache of shards streamed from DVC."""

from __future__ import annotations

import argparse
import json

from imgpack.cli.common import add_command
from imgpack.util.text import counted

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "cache",
        "show or empty the local cache of shards streamed from a DVC remote",
        "imgpack cache info --json",
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="{info,clear}")
    info = add_command(
        actions,
        "info",
        "where the cache is, its shards and bytes, the ones in use, the limit",
        "IMGPACK_CACHE=/scratch/imgpack imgpack cache info",
    )
    info.add_argument("--json", action="store_true")
    add_command(
        actions,
        "clear",
        "remove every cached shard no running reader holds",
        "imgpack cache clear",
    )
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.read.shardcache import ShardCache

    cache = ShardCache()  # $IMGPACK_CACHE/stream, else the user's cache folder
    if args.action == "clear":
        before = cache.info()
        removed = cache.clear()
        after = cache.info()
        freed = before["bytes"] - after["bytes"]
        line = f"removed {counted(removed, 'shard')} ({_size(freed)}) from {cache.root}"
        if after["entries"]:
            verb = "stays" if after["entries"] == 1 else "stay"
            line += f"; {counted(after['entries'], 'shard')} in use by running readers {verb}"
        print(line)
        return 0
    info = cache.info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"cache: {info['root']}")
    print(f"shards: {info['entries']} ({_size(info['bytes'])})")
    print(f"in use: {info['pinned']} ({_size(info['pinned_bytes'])}) held by running readers")
    print(f"downloading: {info['downloads']} ({_size(info['download_bytes'])} reserved)")
    origin = "the default" if info["limit_from"] == "default" else "the last one a reader set"
    print(f"limit: {_size(info['limit'])} ({origin})")
    return 0


def _size(n: int) -> str:
    from imgpack.read.sizes import format_size

    return format_size(n)
