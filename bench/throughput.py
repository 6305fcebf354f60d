"""imgpack build against the bare putmulti packer (a), whole processes alternating, on photo-sized JPEGs.

The packing section's 300 photos (31 MB) take the packer 0.15 s, mostly start-up; this section
measures a folder large enough that reading, hashing and writing bytes is what is timed.
"""

from __future__ import annotations

import shutil

from bench.data import WORK, photos, warm
from bench.packing import CONTENDERS, count_images
from bench.timing import compile_imgpack, median, rounds, run_process

BUILD, PACKER = "imgpack build", "(a) LMDB bytes, putmulti"


def measure(count: int, runs: int) -> dict:
    raw = photos(count)
    images, image_bytes = count_images(raw)
    warm(raw)
    out_dir = WORK / "throughput"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    peaks: dict[str, list[int]] = {BUILD: [], PACKER: []}

    def contender(label: str, name: str):
        out = out_dir / name

        def once() -> float:
            shutil.rmtree(out, ignore_errors=True)
            out.unlink(missing_ok=True)
            seconds, peak = run_process(CONTENDERS[label](raw, out))
            peaks[label].append(peak)
            return seconds

        return once

    times = rounds({BUILD: contender(BUILD, "p.lmdb"), PACKER: contender(PACKER, "a.lmdb")}, runs)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "images": images,
        "image_bytes": image_bytes,
        "contenders": {
            label: {"seconds": median(t), "runs": t, "peak_rss_mb": max(peaks[label]) / 1e6}
            for label, t in times.items()
        },
        "build_over_a": median(times[BUILD]) / median(times[PACKER]),
    }


def table(section: dict) -> list[str]:
    rows = section["contenders"]
    lines = [
        f"### Throughput: {section['images']:,} photo-sized JPEGs "
        f"({section['image_bytes'] / 1e6:,.0f} MB of image bytes)",
        "",
        "| contender | median time | MB/s | peak RSS | vs (a) |",
        "|---|---:|---:|---:|---:|",
    ]
    base = rows[PACKER]["seconds"]
    for label, row in rows.items():
        lines.append(
            f"| {label} | {row['seconds']:.2f} s | {section['image_bytes'] / row['seconds'] / 1e6:.0f}"
            f" | {row['peak_rss_mb']:.0f} MB | {row['seconds'] / base:.2f}x |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    import sys

    compile_imgpack()
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, 3)
    print("\n".join(table(result)))
