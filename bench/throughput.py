"""imgpack build against the bare putmulti packer (a), whole processes alternating, on photo-sized JPEGs.

The packing section's 300 photos (31 MB) take the packer 0.15 s, mostly start-up; this section
measures a folder large enough that reading, hashing and writing bytes is what is timed.

Two floors run in the same rounds: the packer plus the hashing imgpack cannot skip, spread over
every core with nothing else (no probing, catalog, checks or imports beyond lmdb). One hashes
each image (the manifest's digest); the other also each output file (a shard's name and its
cheap check when carried over). No build that hashes as imgpack does can beat its floor.
"""

from __future__ import annotations

import shutil

from bench.data import WORK, photos, warm
from bench.packing import CONTENDERS, count_images
from bench.timing import PYTHON, compile_imgpack, median, rounds, run_process

BUILD, PACKER = "imgpack build", "(a) LMDB bytes, putmulti"
FLOOR_IMAGES = "floor: (a) + image sha256, every core"
FLOOR_FILES = "floor: (a) + image and file sha256, every core"


def _floor(*flags: str):
    return lambda raw, out: [PYTHON, "-m", "bench.approach_floor", str(raw), str(out), *flags]


COMMANDS = {
    **{label: CONTENDERS[label] for label in (BUILD, PACKER)},
    FLOOR_IMAGES: _floor("--no-file-digest"),
    FLOOR_FILES: _floor(),
}


def measure(count: int, runs: int) -> dict:
    raw = photos(count)
    images, image_bytes = count_images(raw)
    warm(raw)
    out_dir = WORK / "throughput"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    peaks: dict[str, list[int]] = {label: [] for label in COMMANDS}

    def contender(label: str, number: int):
        out = out_dir / f"{number}.lmdb"

        def once() -> float:
            for old in out_dir.glob(f"{number}.lmdb*"):  # a floor writes one file per core
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            seconds, peak = run_process(COMMANDS[label](raw, out))
            peaks[label].append(peak)
            return seconds

        return once

    times = rounds({label: contender(label, n) for n, label in enumerate(COMMANDS)}, runs)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "images": images,
        "image_bytes": image_bytes,
        "contenders": {
            label: {"seconds": median(t), "runs": t, "peak_rss_mb": max(peaks[label]) / 1e6}
            for label, t in times.items()
        },
        "build_over_a": median(times[BUILD]) / median(times[PACKER]),
        "floor_images_over_a": median(times[FLOOR_IMAGES]) / median(times[PACKER]),
        "floor_files_over_a": median(times[FLOOR_FILES]) / median(times[PACKER]),
        "build_over_floor_files": median(times[BUILD]) / median(times[FLOOR_FILES]),
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
    if "floor_files_over_a" in section:
        lines += [
            "",
            f"The floors take {section['floor_images_over_a']:.2f}x (image digests) and "
            f"{section['floor_files_over_a']:.2f}x (image and file digests) of (a)'s time; "
            f"imgpack build takes {section['build_over_floor_files']:.2f}x the second floor.",
        ]
    return [*lines, ""]


if __name__ == "__main__":
    import sys

    compile_imgpack()
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, 7)
    print("\n".join(table(result)))
