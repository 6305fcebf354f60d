"""The pipeline's stages (ingest, pack, validate) in-process, beside approach (a): where `dvc repro` spends time."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import approach_a
from bench.data import WORK
from bench.timing import clock, median


def measure(raw: Path, runs: int) -> dict:
    from imgpack.check.validate import validate
    from imgpack.ingest.run import ingest
    from imgpack.write.pack import pack

    work = WORK / "phases"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    manifest, out, a_out = work / "m.jsonl", work / "p.lmdb", work / "a.lmdb"

    def a_once():
        a_out.unlink(missing_ok=True)
        approach_a.main(str(raw), str(a_out))

    # The order inside a round is fixed (pack needs ingest's manifest), so no rotation here.
    times = {"ingest": [], "pack": [], "validate": [], "approach (a), in-process": []}
    for _ in range(runs):
        # Cold: no ingest cache, no previous pack to carry shards over from.
        times["ingest"].append(clock(lambda: ingest(raw, manifest, cache=False))())
        shutil.rmtree(out, ignore_errors=True)
        out.unlink(missing_ok=True)
        times["pack"].append(clock(lambda: pack(manifest, raw, out))())
        times["validate"].append(clock(lambda: validate(out, manifest))())
        times["approach (a), in-process"].append(clock(a_once)())
    shutil.rmtree(work, ignore_errors=True)
    a = median(times["approach (a), in-process"])
    return {
        name: {"seconds": median(v), "vs_approach_a": median(v) / a, "runs": v}
        for name, v in times.items()
    }
