"""imgpack build at 1x, 2x and 4x the data: time per image and peak RSS must not grow with the data."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.data import WORK, scaled
from bench.packing import count_images
from bench.timing import IMGPACK, median, run_process


def measure(base: Path, runs: int, factors=(1, 2, 4)) -> dict:
    rows = {}
    for factor in factors:
        raw = scaled(base, factor)
        images, _ = count_images(raw)
        out = WORK / "scale" / f"x{factor}.lmdb"
        out.parent.mkdir(parents=True, exist_ok=True)
        times, peaks = [], []
        for _ in range(runs):
            out.unlink(missing_ok=True)
            seconds, peak = run_process([IMGPACK, "build", str(raw), str(out)])
            times.append(seconds)
            peaks.append(peak)
        rows[f"{factor}x"] = {
            "images": images,
            "seconds": median(times),
            "us_per_image": median(times) / images * 1e6,
            "peak_rss_mb": max(peaks) / 1e6,
            "runs": times,
        }
        out.unlink(missing_ok=True)
    first, last = rows[f"{factors[0]}x"], rows[f"{factors[-1]}x"]
    shutil.rmtree(WORK / "scale", ignore_errors=True)
    return {
        "rows": rows,
        "rss_growth": last["peak_rss_mb"] / first["peak_rss_mb"],
        "time_per_image_growth": last["us_per_image"] / first["us_per_image"],
    }
