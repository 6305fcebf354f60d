"""960,000 distinct MNIST-sized PNGs: build time and RSS against (a), catalog and dataset loads
against pandas.read_parquet of the same columns, and verify. Each measured in a fresh process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench import million_versions
from bench.data import WORK, allocated_bytes, scaled, warm
from bench.packing import CONTENDERS, count_images
from bench.timing import IMGPACK, PYTHON, env, median, rounds, run_process

# One fresh process per measurement: the time of the call and the peak RSS it added.
_LOAD = r"""
import json, sys, time
kind, pack, parquet = sys.argv[1:4]
import pandas as pd, pyarrow.parquet, imgpack
def peak():  # VmHWM: ru_maxrss would carry the benchmark parent's high-water mark over exec
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024
before = peak()
start = time.perf_counter()
if kind == "metadata":
    result = imgpack.open(pack).metadata()
elif kind == "parquet":
    result = pd.read_parquet(parquet)
else:
    result = imgpack.ImageDataset(pack)
seconds = time.perf_counter() - start
size = int(result.memory_usage(deep=True).sum()) if kind != "dataset" else 0
print(json.dumps({"seconds": seconds, "added_peak": peak() - before, "frame_bytes": size}))
"""


def _load(kind: str, pack: Path, parquet: Path) -> dict:
    out = subprocess.run(
        [PYTHON, "-c", _LOAD, kind, str(pack), str(parquet)],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def measure(base: Path, runs: int, factor: int = 16) -> dict:
    raw = scaled(base, factor)
    images, image_bytes = count_images(raw)
    warm(raw)
    out_dir = WORK / "million"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    pack, a_out = out_dir / "imgpack.lmdb", out_dir / "a.lmdb"
    peaks: dict[str, list[int]] = {"imgpack build": [], "(a) LMDB bytes, putmulti": []}

    def builder(label: str, out: Path):
        def once() -> float:
            if out.is_dir():
                shutil.rmtree(out)
            out.unlink(missing_ok=True)
            seconds, peak = run_process(CONTENDERS[label](raw, out))
            peaks[label].append(peak)
            return seconds

        return once

    build_times = rounds(
        {
            "imgpack build": builder("imgpack build", pack),
            "(a) LMDB bytes, putmulti": builder("(a) LMDB bytes, putmulti", a_out),
        },
        runs,
    )
    import imgpack

    parquet = out_dir / "catalog.parquet"
    with imgpack.open(pack) as opened:
        opened.metadata().to_parquet(parquet)  # the same columns, written in this run
        shards = len(opened.header["shards"])
    samples: dict[str, list[dict]] = {"metadata": [], "parquet": [], "dataset": []}

    def loader(kind: str):
        def once() -> float:
            samples[kind].append(_load(kind, pack, parquet))
            return samples[kind][-1]["seconds"]

        return once

    load_times = rounds({kind: loader(kind) for kind in samples}, runs)
    verify_times = [run_process([IMGPACK, "verify", str(pack)])[0] for _ in range(max(1, runs - 2))]
    result = {
        "images": images,
        "image_bytes": image_bytes,
        "shards": shards,
        "pack_bytes": allocated_bytes(pack),
        "build": {
            label: {"seconds": median(t), "runs": t, "peak_rss_mb": max(peaks[label]) / 1e6}
            for label, t in build_times.items()
        },
        "loads": {
            kind: {
                "seconds": median(load_times[kind]),
                "runs": load_times[kind],
                "added_peak_mb": max(s["added_peak"] for s in samples[kind]) / 1e6,
                "frame_mb": samples[kind][0]["frame_bytes"] / 1e6,
            }
            for kind in samples
        },
        "verify_seconds": median(verify_times),
    }
    loads = result["loads"]
    result["targets"] = {
        "metadata_over_parquet": loads["metadata"]["seconds"] / loads["parquet"]["seconds"],
        "metadata_peak_over_frame": loads["metadata"]["added_peak_mb"]
        / loads["metadata"]["frame_mb"],
        "dataset_over_parquet": loads["dataset"]["seconds"] / loads["parquet"]["seconds"],
        "build_over_a": result["build"]["imgpack build"]["seconds"]
        / result["build"]["(a) LMDB bytes, putmulti"]["seconds"],
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    donors = WORK / "mnist" / "testing"  # new images for the 1% version, made distinct
    result["versions"] = million_versions.measure(raw, donors, runs, added=images // 100)
    return result
