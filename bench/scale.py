"""imgpack build at 1x, 2x and 4x the data: time per image and peak RSS must not grow with the data."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.data import WORK, copies, scaled, warm
from bench.packing import count_images
from bench.timing import IMGPACK, median, run_process


def measure(base: Path, runs: int, factors=(1, 2, 4)) -> dict:
    rows = {}
    folders = [(f"{factor}x", scaled(base, factor)) for factor in factors]
    folders.append(("4 identical copies", copies(base, 4)))
    for factor, raw in folders:
        images, _ = count_images(raw)
        warm(raw)
        out = WORK / "scale" / f"{factor.replace(' ', '-')}.lmdb"
        out.parent.mkdir(parents=True, exist_ok=True)
        times, peaks = [], []
        for _ in range(runs):
            shutil.rmtree(out, ignore_errors=True)
            out.unlink(missing_ok=True)
            seconds, peak = run_process([IMGPACK, "build", str(raw), str(out)])
            times.append(seconds)
            peaks.append(peak)
        rows[factor] = {
            "images": images,
            "seconds": median(times),
            "us_per_image": median(times) / images * 1e6,
            "peak_rss_mb": max(peaks) / 1e6,
            "runs": times,
        }
        shutil.rmtree(out, ignore_errors=True)
        out.unlink(missing_ok=True)
    first, last = rows[f"{factors[0]}x"], rows[f"{factors[-1]}x"]
    shutil.rmtree(WORK / "scale", ignore_errors=True)
    return {
        "rows": rows,
        "rss_growth": last["peak_rss_mb"] / first["peak_rss_mb"],
        "time_per_image_growth": last["us_per_image"] / first["us_per_image"],
        "rss_copies": rows["4 identical copies"]["peak_rss_mb"] / first["peak_rss_mb"],
    }
