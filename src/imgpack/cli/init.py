"""`imgpack init`: add imgpack's four stages to this git + DVC project (dvc.yaml, params.yaml, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.cli.common import add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "init",
        "add the ingest, pack, validate and summarize stages to this git + DVC project",
        "imgpack init --folder data/raw/images && dvc repro",
    )
    command.add_argument(
        "--folder", help="the raw image folder (default: data/raw/images, or what params.yaml has)"
    )
    command.add_argument(
        "--labels",
        metavar="TABLE",
        help='the labels table (CSV/TSV, JSONL, Parquet); "" (the default): parent folder names',
    )
    command.add_argument(
        "--out",
        metavar="PATH",
        help="the pack (default: data/packed/images.lmdb, or data/packed/PREFIX.lmdb)",
    )
    command.add_argument(
        "--prefix",
        help="name the stages PREFIX_ingest, ... and the params block imgpack_PREFIX: "
        "a second pack beside the first",
    )
    command.add_argument(
        "--force", action="store_true", help="replace stages of the same names that differ"
    )
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgpack.project.init import init_project

    changes = init_project(Path.cwd(), args.folder, args.labels, args.out, args.prefix, args.force)
    for change in changes:
        print(change)
    if not changes:
        print("nothing to change: this project already has these stages and params")
    print("next: dvc repro")
    return 0
