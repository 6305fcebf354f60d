"""Stage pack: original image bytes into size-cut shards and their metadata into the catalog."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack.ingest.cache import state_dir
from imgpack.ingest.spool import spool_for, stage_spool
from imgpack.parallel.workers import without_pandas
from imgpack.params import load_params
from imgpack.write.pack import pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.pack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.pack --params params.yaml --out data/packed/images.lmdb",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--section", help="the params block holding the stage blocks (init's)")
    parser.add_argument("--manifest", default="data/interim/manifest.jsonl")
    parser.add_argument("--out", default="data/packed/images.lmdb")
    args = parser.parse_args(argv)

    def run() -> None:
        folder = load_params(args.params, "ingest", args.section).folder
        params = load_params(args.params, "pack", args.section)
        if not params.scheduler:  # Dask needs pandas; nothing else here does
            without_pandas()
        # The bytes the ingest stage read for this very manifest, if it kept them: read once.
        spool = spool_for(stage_spool(args.manifest, state_dir()), args.manifest)
        header = pack(args.manifest, folder, args.out, params, spool=spool and Path(spool))
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
        print(
            f"packed {header['count']} records into {args.out}: {header['carried_shards']} "
            f"shards carried over, {header['new_shards']} new, {header['compacted_shards']} "
            "rewritten"
        )

    return run_stage(run)


if __name__ == "__main__":
    raise SystemExit(main())
