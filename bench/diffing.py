"""`imgpack diff` of 960,000 records against a copy with 1% changes, vs loading both catalogs."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from bench.data import WORK, scaled
from bench.timing import IMGPACK, PYTHON, median, rounds, run_process

_LOAD_BOTH = "import sys, imgpack; [imgpack.open(p).metadata() for p in sys.argv[1:]]"


def changed_copy(source: Path, out: Path) -> dict[str, int]:
    """`source` rewritten with 1% of records changed: removed, relabelled, modified, re-split,
    and 0.25% added."""
    import imgpack
    from imgpack.write.builder import PackBuilder
    from imgpack.write.layout import ShardLayout

    counts = {"removed": 0, "relabeled": 0, "modified": 0, "meta_changed": 0, "added": 0}
    with (
        imgpack.open(source) as pack,
        PackBuilder(out, "sha256", ShardLayout.for_shard_mb(64, 32 << 20)) as builder,
    ):
        catalog = pack.catalog
        images = pack.iter_data()
        for _, table in catalog.tables():
            for row in table.to_pylist():
                data = next(images)
                n = int.from_bytes(row["hash"][:4], "big") % 400  # 1 in 100: one of four changes
                label, split = row["label"], row["split"]
                if n == 0:
                    counts["removed"] += 1
                    continue
                if n == 1:
                    label, counts["relabeled"] = label + "x", counts["relabeled"] + 1
                if n == 2:
                    data, counts["modified"] = data + b"\0", counts["modified"] + 1
                if n == 3:
                    split = "test" if split != "test" else "train"
                    counts["meta_changed"] += 1
                builder.add(
                    row["key"],
                    data,
                    digest=hashlib.sha256(data).digest(),
                    format=row["format"],
                    width=row["width"],
                    height=row["height"],
                    label=label,
                    split=split,
                    extra={},
                )
        for k in range(len(pack) // 400):
            key = f"~added/{k:06d}.png"
            data = b"new image %d" % k
            builder.add(
                key,
                data,
                digest=hashlib.sha256(data).digest(),
                format="PNG",
                width=1,
                height=1,
                label="new",
                split="train",
                extra={},
            )
            counts["added"] += 1
        builder.publish()
    return counts


def measure(base: Path, runs: int, factor: int = 16) -> dict:
    raw = scaled(base, factor)
    out_dir = WORK / "diffing"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    old, new = out_dir / "old.lmdb", out_dir / "new.lmdb"
    run_process([IMGPACK, "build", str(raw), str(old)])
    expected = changed_copy(old, new)
    times = rounds(
        {
            "load both catalogs (metadata())": lambda: run_process(
                [PYTHON, "-c", _LOAD_BOTH, str(old), str(new)]
            )[0],
            "imgpack diff --json": lambda: run_process(
                [IMGPACK, "diff", str(old), str(new), "--json"]
            )[0],
        },
        runs,
    )
    load, diff = (
        median(times["load both catalogs (metadata())"]),
        median(times["imgpack diff --json"]),
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"changes": expected, "load_seconds": load, "diff_seconds": diff, "ratio": diff / load}


if __name__ == "__main__":
    import json

    from bench.data import mnist

    factor = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    print(json.dumps(measure(mnist(), 3, factor), indent=2))
