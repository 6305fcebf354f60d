"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack.ingest.cache import state_dir
from imgpack.ingest.run import ingest
from imgpack.ingest.splits import FOLDERS
from imgpack.ingest.spool import INDEX_FILE, mark_spool, stage_spool
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
        spool, budget = _spool(args.manifest)
        report = ingest(
            params.folder,
            args.manifest,
            args.report,
            params.labels or None,
            params,
            split_folders,
            spool=spool,
            spool_budget=budget,
            reuse_unchanged=True,
        )
        if (spool / INDEX_FILE).exists():  # read in full: the pack stage takes these bytes
            mark_spool(str(spool), args.manifest)
        else:
            shutil.rmtree(spool, ignore_errors=True)
        print(
            f"ingested {report.packed} of {report.discovered} files from {params.folder}: "
            f"{report.read} read, the others unchanged since an earlier run; "
            f"{report.total('skipped')} skipped (see {args.report})"
        )

    return run_stage(run)


SPOOL_BYTES = 2 << 30  # image bytes ingest keeps for the pack stage, at most


def _spool(manifest: str) -> tuple[Path, int]:
    """The spool the pack stage takes this run's bytes from (emptied), and its budget: at most
    SPOOL_BYTES, and half the free space there."""
    spool = Path(stage_spool(manifest, state_dir()))
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True)
    return spool, min(SPOOL_BYTES, shutil.disk_usage(spool).free // 2)


if __name__ == "__main__":
    raise SystemExit(main())
