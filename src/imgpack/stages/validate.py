"""Stage validate: check the pack read-only against the manifest, record by record."""

from __future__ import annotations

import argparse

from imgpack.util.entry import run_stage  # first: Arrow's allocator, no BLAS threads

# isort: split
from imgpack.check.validate import validate
from imgpack.parallel.workers import without_pandas
from imgpack.params import load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.validate --pack data/packed/images.lmdb",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--section", help="the params block holding the stage blocks (init's)")
    parser.add_argument("--pack", default="data/packed/images.lmdb")
    parser.add_argument("--manifest", default="data/interim/manifest.jsonl")
    parser.add_argument("--report", default="reports/validation.json")
    args = parser.parse_args(argv)
    without_pandas()
    return run_stage(
        lambda: validate(
            args.pack,
            args.manifest,
            args.report,
            load_params(args.params, "validate", args.section),
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
