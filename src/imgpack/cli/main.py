"""The `imgpack` command: build, info, export, verify; main() is where errors become exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imgpack.util.entry import counted, run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack import __version__
from imgpack.errors import InputError
from imgpack.params import ERROR_KINDS

__all__ = ["main"]


def _on_error(values: list[str]) -> dict[str, str]:
    policy = {}
    for item in values:
        kind, sep, action = item.partition("=")
        if not sep:
            raise InputError(f"--on-error {item!r}: expected KIND=skip or KIND=fail")
        policy[kind] = action
    return policy


def cmd_build(args: argparse.Namespace) -> int:
    from imgpack.params import from_mapping, load_params
    from imgpack.write.build import build

    if not args.scheduler:  # Dask needs pandas; nothing else a build runs does
        from imgpack.parallel.workers import without_pandas

        without_pandas()

    ingest_values = {}
    pack_values = {}
    if args.params:
        ingest_values = vars(load_params(args.params, "ingest")).copy()
        pack_values = vars(load_params(args.params, "pack")).copy()
    for name in ("hash", "workers", "path_column", "label_column"):
        if getattr(args, name) is not None:
            ingest_values[name] = getattr(args, name)
    if args.workers is not None:
        pack_values["workers"] = args.workers
    if args.scheduler:
        ingest_values["scheduler"] = pack_values["scheduler"] = args.scheduler
    if args.fresh:
        pack_values["incremental"] = False
    if args.columns:
        ingest_values["columns"] = [c.strip() for c in args.columns.split(",")]
    if args.extensions:
        ingest_values["extensions"] = [
            e if e.startswith(".") else "." + e for e in args.extensions.split(",")
        ]
    if args.on_error:
        ingest_values["on_error"] = {
            **ingest_values.get("on_error", {}),
            **_on_error(args.on_error),
        }
    if args.duplicates:
        pack_values["duplicates"] = args.duplicates
    if args.shard_mb is not None:
        pack_values["shard_mb"] = args.shard_mb
    if args.splits is not None:
        pack_values["splits"] = args.splits
    ingest_values.pop("folder", None)
    ingest_values.pop("labels", None)
    result = build(
        args.raw_dir,
        args.out,
        labels=args.labels,
        ingest_params=from_mapping("ingest", ingest_values),
        pack_params=from_mapping("pack", pack_values),
        report_out=args.report,
    )
    summary = result.report.as_dict()
    reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items())
    print(
        f"packed {summary['packed']} of {summary['discovered']} files into {args.out}"
        f" ({result.header['count']} records, {result.header['aliases']} aliases);"
        f" skipped {summary['skipped']}{f' ({reasons})' if reasons else ''}"
    )
    if summary["label_rows_without_image"]:
        print(f"label rows without an image: {summary['label_rows_without_image']}")
    if summary["duplicates"]["groups"]:
        print(
            f"identical content: {summary['duplicates']['files']} files in "
            f"{summary['duplicates']['groups']} groups"
        )
    header = result.header
    print(
        f"read {summary['read']} of {summary['discovered']} files"
        + (
            " (the others: skipped by name, or unchanged since an earlier run)"
            if summary["read"] < summary["discovered"]
            else ""
        )
        + "; shards: "
        f"{header['carried_shards']} carried over, {header['new_shards']} new, "
        f"{header['compacted_shards']} rewritten"
    )
    for item in summary["notes_list"][:20]:
        print(f"  note {item['path']}: {item['note']}")
    for item in summary["skipped_files"][:20]:
        print(f"  skipped {item['path']}: {item['reason']} ({item['detail']})")
    if summary["skipped"] > 20:
        print(f"  ... and {summary['skipped'] - 20} more; see --report for all")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
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
        for key in sorted(info):
            value = info[key]
            if key in ("classes", "shard_files", "columns"):
                value = f"{len(value)}: {', '.join(value[:20])}{' ...' if len(value) > 20 else ''}"
            print(f"{key}: {value}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from imgpack.read.export import export_pack

    written = export_pack(_at_rev(args.pack, args.rev), args.dir)
    print(f"exported {written} files to {args.dir}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from imgpack.check.verify import verify_pack

    result = verify_pack(_at_rev(args.pack, args.rev), scheduler=args.scheduler)
    shards = counted(result.shards, "shard")
    print(f"ok: {result.records} records in {shards} match their stored hashes")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from imgpack.write.convert import convert_pack

    header = convert_pack(args.old, args.new, args.shard_mb)
    print(
        f"converted {header['count']} records and {header['aliases']} aliases into {args.new} "
        f"(format version {header['format_version']}, {len(header['shards'])} shards)"
    )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from imgpack.write.compact import compact_pack

    out = args.out or args.pack
    header = compact_pack(args.pack, out, args.shard_mb)
    print(
        f"compacted {header['count']} records and {header['aliases']} aliases into {out} "
        f"({len(header['shards'])} shards, {header['total_bytes']} image bytes)"
    )
    return 0


def _at_rev(pack: Path, rev: str | None) -> Path:
    if rev is None:
        return pack
    from imgpack.read.revisions import fetch_pack

    return fetch_pack(pack, rev)


def cmd_diff(args: argparse.Namespace) -> int:
    from imgpack.read.diff import KINDS, diff_packs
    from imgpack.read.pack import Pack
    from imgpack.read.revisions import PIPELINE_PACK

    revs = args.rev or []
    if len(revs) > 2 or (revs and len(args.packs) > 1) or (not revs and len(args.packs) != 2):
        raise InputError(
            "diff takes OLD NEW, or --rev REV [PACK] (that revision against the workspace), "
            "or --rev A --rev B [PACK]"
        )
    if revs:
        pack = Path(args.packs[0]) if args.packs else Path(PIPELINE_PACK)
        new_rev = revs[1] if len(revs) == 2 else None
        sides = [(pack, revs[0], revs[0]), (pack, new_rev, new_rev or "workspace")]
    else:
        sides = [
            (Path(args.packs[0]), None, str(args.packs[0])),
            (Path(args.packs[1]), None, str(args.packs[1])),
        ]
    (old_path, old_rev, old_name), (new_path, new_rev, new_name) = sides
    with Pack(old_path, old_rev) as old, Pack(new_path, new_rev) as new:
        result = diff_packs(old, new, old_name, new_name)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"{old_name} ({result.old['count']} records) -> {new_name} ({result.new['count']})")
        for kind in KINDS:
            keys = result.changes[kind]
            print(f"{kind}: {len(keys)}")
            for key in keys[:20]:
                print(f"  {' -> '.join(key) if isinstance(key, list) else key}")
            if len(keys) > 20:
                print(f"  ... and {len(keys) - 20} more; --json lists all")
    return 1 if args.exit_code and result.any else 0


def _command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:  # noqa: A002
    """A subcommand whose --help ends with an example line."""
    return sub.add_parser(
        name,
        help=help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example: {example}",
    )


def _rev_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--rev", help="the pack as of this git revision (fetched through DVC)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="imgpack",
        description="Pack many small images into one validated LMDB pack.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: imgpack build data/raw/images data/packed/images.lmdb "
        "&& imgpack verify data/packed/images.lmdb",
    )
    top.add_argument("--version", action="version", version=f"imgpack {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    b = _command(
        sub,
        "build",
        "ingest + pack + validate RAW_DIR into OUT.lmdb",
        "imgpack build data/raw/images data/packed/images.lmdb --labels data/raw/labels.csv",
    )
    b.add_argument(
        "raw_dir",
        help="folder of images, or a URL (s3://bucket/prefix); keys are paths relative to it",
    )
    b.add_argument("out", type=Path, help="the pack to write (replaced atomically when complete)")
    b.add_argument(
        "--labels",
        type=Path,
        help="CSV/TSV/JSONL/Parquet table, or an im2rec .lst/.ctl or Caffe .txt list; "
        "default: labels from parent folder names",
    )
    b.add_argument("--path-column", help="the table's column of image paths (default path)")
    b.add_argument("--label-column", help="the table's column of labels (default label)")
    b.add_argument(
        "--columns",
        help="names of a headerless table's columns in order, e.g. index,label,path "
        "(a column named index is dropped)",
    )
    b.add_argument("--params", type=Path, help="take ingest/pack settings from this params.yaml")
    b.add_argument("--hash", choices=["sha256", "blake2b"], help="default sha256")
    b.add_argument(
        "--extensions",
        help="comma-separated; default torchvision's: .jpg,.jpeg,.png,.ppm,.bmp,.pgm,.tif,.tiff,.webp",
    )
    b.add_argument(
        "--duplicates",
        choices=["keep", "dedupe"],
        help="identical files: store each (default) or once",
    )
    b.add_argument(
        "--on-error",
        action="append",
        default=[],
        metavar="KIND=skip|fail",
        help=f"policy per kind of bad input, repeatable; kinds: {', '.join(ERROR_KINDS)}",
    )
    b.add_argument(
        "--shard-mb",
        type=float,
        help="image MB per shard (default 64); a pack that fits in one shard is one file, "
        "a bigger one a folder of shard files",
    )
    b.add_argument(
        "--splits",
        choices=["folders"],
        help="folders: train/, val/ (valid/, validation/) and test/ top folders are the splits; "
        "default: drawn from a hash of each key (params pack.splits)",
    )
    b.add_argument(
        "--workers",
        help="processes reading, hashing, probing and writing shards (default 0 = every core)",
    )
    b.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run ingest and shard writing on the Dask cluster at ADDRESS (tcp://host:port); "
        "every worker must reach RAW_DIR and OUT's folder (pip install 'imgpack[dask]')",
    )
    b.add_argument(
        "--fresh",
        action="store_true",
        help="ignore a pack already at OUT: the fresh layout, no shard carried over",
    )
    b.add_argument("--report", type=Path, help="write the accounting report (JSON) here")
    b.set_defaults(func=cmd_build)

    i = _command(
        sub, "info", "header and counts of a pack", "imgpack info data/packed/images.lmdb --json"
    )
    i.add_argument("pack", type=Path)
    i.add_argument("--json", action="store_true")
    _rev_option(i)
    i.set_defaults(func=cmd_info)

    e = _command(
        sub,
        "export",
        "write every image back to DIR/<key>",
        "imgpack export data/packed/images.lmdb restored/",
    )
    e.add_argument("pack", type=Path)
    e.add_argument("dir", type=Path)
    _rev_option(e)
    e.set_defaults(func=cmd_export)

    v = _command(
        sub,
        "verify",
        "re-hash every record against its stored hash",
        "imgpack verify data/packed/images.lmdb",
    )
    v.add_argument("pack", type=Path)
    v.add_argument(
        "--scheduler", metavar="ADDRESS", help="check the shards on the Dask cluster at ADDRESS"
    )
    _rev_option(v)
    v.set_defaults(func=cmd_verify)

    c = _command(
        sub,
        "convert",
        "rewrite a format-1 pack as format 3 (the old one is kept)",
        "imgpack convert old.lmdb new.lmdb",
    )
    c.add_argument("old", type=Path, help="the format-1 pack (read only)")
    c.add_argument("new", type=Path, help="the format-3 pack to write")
    c.add_argument("--shard-mb", type=float, default=64, help="image MB per shard (default 64)")
    c.set_defaults(func=cmd_convert)

    k = _command(
        sub,
        "compact",
        "rewrite a pack grown version by version into a fresh build's layout (dead images go)",
        "imgpack compact data/packed/images.lmdb",
    )
    k.add_argument("pack", type=Path)
    k.add_argument("out", type=Path, nargs="?", help="where to write it (default: in place)")
    k.add_argument("--shard-mb", type=float, help="image MB per shard (default: the pack's own)")
    k.set_defaults(func=cmd_compact)

    d = _command(
        sub,
        "diff",
        "what changed between two packs, record by record (catalogs only, no image bytes)",
        "imgpack diff --rev HEAD~1    (the pipeline's pack a commit ago vs now)",
    )
    d.add_argument("packs", nargs="*", metavar="PACK", help="OLD NEW, or with --rev the pack path")
    d.add_argument(
        "--rev",
        action="append",
        help="a git revision: once compares it with the workspace, twice compares the two",
    )
    d.add_argument("--json", action="store_true", help="one object: every kind with all its keys")
    d.add_argument(
        "--exit-code", action="store_true", help="exit 1 when there are differences (errors: 2)"
    )
    d.set_defaults(func=cmd_diff, error_code=2)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_stage(lambda: args.func(args), getattr(args, "error_code", 1))


if __name__ == "__main__":
    raise SystemExit(main())
