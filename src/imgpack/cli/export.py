"""`imgpack export`: write every image of a pack back to a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.cli.common import add_command, add_rev_option, at_rev

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "export",
        "write every image back to DIR/<key>",
        "imgpack export data/packed/images.lmdb restored/",
    )
    command.add_argument("pack", type=Path)
    command.add_argument("dir", type=Path)
    add_rev_option(command)
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.read.export import export_pack

    written = export_pack(at_rev(args.pack, args.rev), args.dir)
    print(f"exported {written} files to {args.dir}")
    return 0
