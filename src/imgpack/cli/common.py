"""What several verbs share: the subcommand with an example, --rev, and --on-error parsing."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpack.errors import InputError

__all__ = ["add_command", "add_rev_option", "at_rev", "parse_on_error"]


def add_command(subparsers, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example line."""
    return subparsers.add_parser(
        name,
        help=summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example: {example}",
    )


def add_rev_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--rev", help="the pack as of this git revision (fetched through DVC)")


def at_rev(pack: Path, rev: str | None) -> Path:
    """`pack` itself, or its copy as of git revision `rev`."""
    if rev is None:
        return pack
    from imgpack.read.revisions import fetch_pack

    return fetch_pack(pack, rev)


def parse_on_error(values: list[str]) -> dict[str, str]:
    """['corrupt=skip', ...] from repeated --on-error options as {'corrupt': 'skip', ...}."""
    policy = {}
    for item in values:
        kind, sep, action = item.partition("=")
        if not sep:
            raise InputError(f"--on-error {item!r}: expected KIND=skip or KIND=fail")
        policy[kind] = action
    return policy
