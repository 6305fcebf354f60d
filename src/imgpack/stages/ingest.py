"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import argparse

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack.ingest.run import ingest
from imgpack.ingest.splits import FOLDERS
from imgpack.parallel.workers import without_pandas
from imgpack.params import load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.ingest --params params.yaml",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--section", help="the params block holding the stage blocks (init's)")
    parser.add_argument("--manifest", default="data/interim/manifest.jsonl")
    parser.add_argument("--report", default="reports/ingest.json")
    args = parser.parse_args(argv)

    def run() -> None:
        params = load_params(args.params, "ingest", args.section)
        if not params.scheduler:  # Dask needs pandas; nothing else here does
            without_pandas()
        split_folders = load_params(args.params, "pack", args.section).splits == FOLDERS
        report = ingest(
            params.folder,
            args.manifest,
            args.report,
            params.labels or None,
            params,
            split_folders,
            reuse_unchanged=True,
        )
        print(
            f"ingested {report.packed} of {report.discovered} files from {params.folder}: "
            f"{report.read} read, the others unchanged since an earlier run; "
            f"{report.total('skipped')} skipped (see {args.report})"
        )

    return run_stage(run)


if __name__ == "__main__":
    raise SystemExit(main())
