"""Packing throughput and size on disk: imgpack build vs approach (a), (b), tar and HDF5."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.data import WORK, allocated_bytes, image_paths, warm
from bench.timing import IMGPACK, PYTHON, median, rounds, run_process

CONTENDERS = {
    "imgpack build": lambda raw, out: [IMGPACK, "build", str(raw), str(out)],
    "(a) LMDB bytes, putmulti": lambda raw, out: [
        PYTHON,
        "-m",
        "bench.approach_a",
        str(raw),
        str(out),
    ],
    "(b) LMDB pickled arrays": lambda raw, out: [
        PYTHON,
        "-m",
        "bench.approach_b",
        str(raw),
        str(out),
    ],
    "tar cf": lambda raw, out: ["tar", "cf", str(out), "-C", str(raw), "."],
    "HDF5 arrays": lambda raw, out: [PYTHON, "-m", "bench.hdf5_pack", str(raw), str(out)],
}


def count_images(raw: Path) -> tuple[int, int]:
    files = image_paths(raw)
    return len(files), sum(os.path.getsize(p) for p in files)


def measure(raw: Path, name: str, runs: int) -> dict:
    """Median wall time, throughput, peak RSS and allocated size of each contender on `raw`."""
    images, image_bytes = count_images(raw)
    warm(raw)
    out_dir = WORK / "out" / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    outputs = {c: out_dir / f"{i}.out" for i, c in enumerate(CONTENDERS)}
    rss: dict[str, list[int]] = {c: [] for c in CONTENDERS}

    def contender(label: str):
        def once() -> float:
            shutil.rmtree(outputs[label], ignore_errors=True)  # a folder pack
            outputs[label].unlink(missing_ok=True)
            seconds, peak = run_process(CONTENDERS[label](raw, outputs[label]))
            rss[label].append(peak)
            return seconds

        return once

    times = rounds({c: contender(c) for c in CONTENDERS}, runs)
    base = median(times["imgpack build"])
    rows = {}
    for label, values in times.items():
        seconds = median(values)
        rows[label] = {
            "seconds": seconds,
            "runs": values,
            "images_per_s": images / seconds,
            "mb_per_s": image_bytes / seconds / 1e6,
            "time_vs_imgpack": seconds / base,
            "peak_rss_mb": max(rss[label]) / 1e6,
            "allocated_bytes": allocated_bytes(outputs[label]),
        }
    result = {
        "images": images,
        "image_bytes": image_bytes,
        "raw_allocated_bytes": allocated_bytes(raw),
        "contenders": rows,
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    return result
