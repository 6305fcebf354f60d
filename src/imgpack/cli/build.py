"""`imgpack build`: ingest, pack and validate a folder of images into a pack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from imgpack.cli.common import add_command, parse_on_error
from imgpack.params import ERROR_KINDS, IngestParams, PackParams, from_mapping, load_params

__all__ = ["add_parser", "run"]

SHOWN_FILES = 20  # notes and skipped files printed; --report has them all


def add_parser(subparsers) -> None:
    command = add_command(
        subparsers,
        "build",
        "ingest + pack + validate RAW_DIR into OUT.lmdb",
        "imgpack build data/raw/images data/packed/images.lmdb --labels data/raw/labels.csv",
    )
    _add_input_arguments(command)
    _add_setting_options(command)
    _add_run_options(command)
    command.set_defaults(func=run)


def _add_input_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "raw_dir",
        help="folder of images, or a URL (s3://bucket/prefix); keys are paths relative to it",
    )
    command.add_argument(
        "out", type=Path, help="the pack to write (replaced atomically when complete)"
    )
    command.add_argument(
        "--labels",
        type=Path,
        help="CSV/TSV/JSONL/Parquet table, or an im2rec .lst/.ctl or Caffe .txt list; "
        "default: labels from parent folder names",
    )
    command.add_argument("--path-column", help="the table's column of image paths (default path)")
    command.add_argument("--label-column", help="the table's column of labels (default label)")
    command.add_argument(
        "--columns",
        help="names of a headerless table's columns in order, e.g. index,label,path "
        "(a column named index is dropped)",
    )


def _add_setting_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--params", type=Path, help="take ingest/pack settings from this params.yaml"
    )
    command.add_argument("--hash", choices=["sha256", "blake2b"], help="default sha256")
    command.add_argument(
        "--extensions",
        help="comma-separated; default torchvision's: .jpg,.jpeg,.png,.ppm,.bmp,.pgm,.tif,.tiff,.webp",
    )
    command.add_argument(
        "--duplicates",
        choices=["keep", "dedupe"],
        help="identical files: store each (default) or once",
    )
    command.add_argument(
        "--on-error",
        action="append",
        default=[],
        metavar="KIND=skip|fail",
        help=f"policy per kind of bad input, repeatable; kinds: {', '.join(ERROR_KINDS)}",
    )
    command.add_argument(
        "--shard-mb",
        type=float,
        help="image MB per shard (default 64); a pack that fits in one shard is one file, "
        "a bigger one a folder of shard files",
    )
    command.add_argument(
        "--splits",
        choices=["folders"],
        help="folders: train/, val/ (valid/, validation/) and test/ top folders are the splits; "
        "default: drawn from a hash of each key (params pack.splits)",
    )


def _add_run_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--workers",
        help="processes reading, hashing, probing and writing shards (default 0 = every core)",
    )
    command.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run ingest and shard writing on the Dask cluster at ADDRESS (tcp://host:port); "
        "every worker must reach RAW_DIR and OUT's folder (pip install 'imgpack[dask]')",
    )
    command.add_argument(
        "--fresh",
        action="store_true",
        help="ignore a pack already at OUT: the fresh layout, no shard carried over",
    )
    command.add_argument("--report", type=Path, help="write the accounting report (JSON) here")


def run(args: argparse.Namespace) -> int:
    from imgpack.write.build import build

    if not args.scheduler:  # Dask needs pandas; nothing else a build runs does
        from imgpack.parallel.workers import without_pandas

        without_pandas()

    ingest_params, pack_params = _params(args)
    result = build(
        args.raw_dir,
        args.out,
        labels=args.labels,
        ingest_params=ingest_params,
        pack_params=pack_params,
        report_out=args.report,
    )
    _print_summary(result.report.as_dict(), result.header, args.out)
    return 0


def _params(args: argparse.Namespace) -> tuple[IngestParams, PackParams]:
    """--params's file (else the defaults), overridden by the options given."""
    ingest_values: dict[str, Any] = {}
    pack_values: dict[str, Any] = {}
    if args.params:
        ingest_values = vars(load_params(args.params, "ingest")).copy()
        pack_values = vars(load_params(args.params, "pack")).copy()
    _override_ingest(ingest_values, args)
    _override_pack(pack_values, args)
    # RAW_DIR and --labels say where the inputs are, whatever the file's ingest block says
    ingest_values.pop("folder", None)
    ingest_values.pop("labels", None)
    return from_mapping("ingest", ingest_values), from_mapping("pack", pack_values)


def _override_ingest(values: dict[str, Any], args: argparse.Namespace) -> None:
    for name in ("hash", "workers", "path_column", "label_column"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.scheduler:
        values["scheduler"] = args.scheduler
    if args.columns:
        values["columns"] = [c.strip() for c in args.columns.split(",")]
    if args.extensions:
        values["extensions"] = [
            e if e.startswith(".") else "." + e for e in args.extensions.split(",")
        ]
    if args.on_error:
        values["on_error"] = {**values.get("on_error", {}), **parse_on_error(args.on_error)}


def _override_pack(values: dict[str, Any], args: argparse.Namespace) -> None:
    if args.workers is not None:
        values["workers"] = args.workers
    if args.scheduler:
        values["scheduler"] = args.scheduler
    if args.fresh:
        values["incremental"] = False
    if args.duplicates:
        values["duplicates"] = args.duplicates
    if args.shard_mb is not None:
        values["shard_mb"] = args.shard_mb
    if args.splits is not None:
        values["splits"] = args.splits


def _print_summary(summary: dict[str, Any], header: dict[str, Any], out: Path) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items())
    print(
        f"packed {summary['packed']} of {summary['discovered']} files into {out}"
        f" ({header['count']} records, {header['aliases']} aliases);"
        f" skipped {summary['skipped']}{f' ({reasons})' if reasons else ''}"
    )
    if summary["label_rows_without_image"]:
        print(f"label rows without an image: {summary['label_rows_without_image']}")
    if summary["duplicates"]["groups"]:
        print(
            f"identical content: {summary['duplicates']['files']} files in "
            f"{summary['duplicates']['groups']} groups"
        )
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
    _print_listed_files(summary)


def _print_listed_files(summary: dict[str, Any]) -> None:
    for item in summary["notes_list"][:SHOWN_FILES]:
        print(f"  note {item['path']}: {item['note']}")
    for item in summary["skipped_files"][:SHOWN_FILES]:
        print(f"  skipped {item['path']}: {item['reason']} ({item['detail']})")
    if summary["skipped"] > SHOWN_FILES:
        print(f"  ... and {summary['skipped'] - SHOWN_FILES} more; see --report for all")
