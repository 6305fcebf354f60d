"""Stage summarize: DVC metrics (counts, bytes, formats, sizes) and plot data from the pack's catalog."""

from __future__ import annotations

import argparse

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack.check.summary import summarize
from imgpack.parallel.workers import without_pandas
from imgpack.params import load_params
from imgpack.util.text import counted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.summarize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.summarize --pack data/packed/images.lmdb",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--section", help="the params block holding the stage blocks (init's)")
    parser.add_argument("--pack", default="data/packed/images.lmdb")
    parser.add_argument("--summary", default="reports/summary.json")
    parser.add_argument("--plots", default="reports/plots")
    args = parser.parse_args(argv)
    without_pandas()

    def run() -> None:
        summary = summarize(
            args.pack, args.summary, args.plots, load_params(args.params, "summarize", args.section)
        )
        print(
            f"summarized {summary['images']} images in {counted(summary['shards'], 'shard')}: "
            f"{args.summary}, plots in {args.plots}"
        )

    return run_stage(run)


if __name__ == "__main__":
    raise SystemExit(main())
