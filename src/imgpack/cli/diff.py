"""`imgpack diff`: what changed between two packs, or one pack at two git revisions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from imgpack.cli.common import add_command
from imgpack.errors import InputError

if TYPE_CHECKING:
    from imgpack.read.diff import PackDiff

__all__ = ["add_parser", "run"]

SHOWN_KEYS = 20  # per kind of change; --json lists all

# One side of the comparison: the pack's path, its git revision (None: as it is), its name.
Side = tuple[Path, str | None, str]


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "diff",
        "what changed between two packs, record by record (catalogs only, no image bytes)",
        "imgpack diff --rev HEAD~1    (the pipeline's pack a commit ago vs now)",
    )
    command.add_argument(
        "packs", nargs="*", metavar="PACK", help="OLD NEW, or with --rev the pack path"
    )
    command.add_argument(
        "--rev",
        action="append",
        help="a git revision: once compares it with the workspace, twice compares the two",
    )
    command.add_argument(
        "--json", action="store_true", help="one object: every kind with all its keys"
    )
    command.add_argument(
        "--exit-code", action="store_true", help="exit 1 when there are differences (errors: 2)"
    )
    # 1 means "differences" under --exit-code, so a failure exits 2
    command.set_defaults(func=run, error_code=2)


def run(args: argparse.Namespace) -> int:
    from imgpack.read.diff import diff_packs
    from imgpack.read.pack import Pack

    (old_path, old_rev, old_name), (new_path, new_rev, new_name) = _sides(args.packs, args.rev)
    with Pack(old_path, old_rev) as old, Pack(new_path, new_rev) as new:
        result = diff_packs(old, new, old_name, new_name)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print_changes(result, old_name, new_name)
    return 1 if args.exit_code and result.any else 0


def _sides(packs: list[str], revs: list[str] | None) -> tuple[Side, Side]:
    """The old and new side from the PACK arguments and --rev options."""
    from imgpack.read.revisions import PIPELINE_PACK

    revs = revs or []
    if len(revs) > 2 or (revs and len(packs) > 1) or (not revs and len(packs) != 2):
        raise InputError(
            "diff takes OLD NEW, or --rev REV [PACK] (that revision against the workspace), "
            "or --rev A --rev B [PACK]"
        )
    if revs:
        pack = Path(packs[0]) if packs else Path(PIPELINE_PACK)
        new_rev = revs[1] if len(revs) == 2 else None
        return (pack, revs[0], revs[0]), (pack, new_rev, new_rev or "workspace")
    return (Path(packs[0]), None, str(packs[0])), (Path(packs[1]), None, str(packs[1]))


def _print_changes(result: PackDiff, old_name: str, new_name: str) -> None:
    from imgpack.read.diff import KINDS

    print(f"{old_name} ({result.old['count']} records) -> {new_name} ({result.new['count']})")
    for kind in KINDS:
        keys = result.changes[kind]
        print(f"{kind}: {len(keys)}")
        for key in keys[:SHOWN_KEYS]:
            print(f"  {' -> '.join(key) if isinstance(key, list) else key}")
        if len(keys) > SHOWN_KEYS:
            print(f"  ... and {len(keys) - SHOWN_KEYS} more; --json lists all")
