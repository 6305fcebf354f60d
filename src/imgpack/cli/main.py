"""The `imgpack` command: the top-level parser over the verb modules; main() makes exit codes."""

from __future__ import annotations

import argparse

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack import __version__
from imgpack.cli import build, cache, compact, convert, diff, export, info, init, verify

__all__ = ["main"]

VERBS = (init, build, info, export, verify, convert, compact, diff, cache)  # as --help lists them


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="imgpack",
        description="Pack many small images into one validated LMDB pack.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: imgpack build data/raw/images data/packed/images.lmdb "
        "&& imgpack verify data/packed/images.lmdb",
    )
    top.add_argument("--version", action="version", version=f"imgpack {__version__}")
    subparsers = top.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(subparsers)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_stage(lambda: args.func(args), getattr(args, "error_code", 1))


if __name__ == "__main__":
    raise SystemExit(main())
