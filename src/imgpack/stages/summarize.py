"""Stage summarize: DVC metrics (counts, bytes, formats, sizes) and plot data from the pack's metadata."""

from __future__ import annotations

import argparse
import csv
import os
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from imgpack.params import SummarizeParams, load_params
from imgpack.reader import Pack
from imgpack.stages.common import run_stage, write_json

__all__ = ["summarize"]


class _Range:
    def __init__(self) -> None:
        self.low: int | None = None
        self.high: int | None = None
        self.total = 0
        self.count = 0

    def add(self, value: int) -> None:
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.total += value
        self.count += 1

    def as_dict(self) -> dict[str, float | int | None]:
        mean = round(self.total / self.count, 3) if self.count else None
        return {"min": self.low, "mean": mean, "max": self.high}


def summarize(
    pack_path: str | Path,
    summary_out: str | Path,
    plots_dir: str | Path,
    params: SummarizeParams | None = None,
) -> dict[str, Any]:
    """Write summary.json and the plot CSVs; reads metadata only, never image bytes."""
    params = params or SummarizeParams()
    per_label: Counter[str] = Counter()
    per_split: Counter[str] = Counter()
    per_split_label: Counter[tuple[str, str]] = Counter()
    formats: Counter[str] = Counter()
    width, height, size = _Range(), _Range(), _Range()
    sizes = array("q")  # 8 bytes per image: the histogram needs min and max first
    with Pack(pack_path) as pack:
        for _, meta in pack.iter_meta():
            per_label[meta["label"]] += 1
            per_split[meta["split"]] += 1
            per_split_label[(meta["split"], meta["label"])] += 1
            formats[meta["format"]] += 1
            width.add(meta["width"])
            height.add(meta["height"])
            size.add(meta["size"])
            sizes.append(meta["size"])
        header = pack.header
    summary = {
        "images": header["count"],
        "aliases": header["aliases"],
        "image_bytes": header["total_bytes"],
        "pack_bytes": os.path.getsize(pack_path),
        "per_label": dict(sorted(per_label.items())),
        "per_split": dict(sorted(per_split.items())),
        "per_split_label": {
            split: {label: n for (s, label), n in sorted(per_split_label.items()) if s == split}
            for split in sorted(per_split)
        },
        "formats": dict(sorted(formats.items())),
        "width": width.as_dict(),
        "height": height.as_dict(),
        "file_bytes": size.as_dict(),
    }
    write_json(Path(summary_out), summary)
    plots = Path(plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    _write_csv(plots / "images_per_label.csv", ["label", "count"], sorted(per_label.items()))
    _write_csv(
        plots / "image_sizes.csv", ["size_bytes", "count"], _histogram(sizes, params.size_bins)
    )
    return summary


def _histogram(values, bins: int) -> list[tuple[int, int]]:
    """Counts per equal-width bin, labelled by each bin's lower edge in bytes."""
    if not values:
        return []
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))
    counts = Counter((v - low) // width for v in values)
    return [(low + b * width, counts.get(b, 0)) for b in range(bins) if low + b * width <= high]


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgpack.stages.summarize", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pack", default="data/packed/images.lmdb")
    parser.add_argument("--summary", default="reports/summary.json")
    parser.add_argument("--plots", default="reports/plots")
    args = parser.parse_args(argv)
    return run_stage(
        lambda: summarize(
            args.pack, args.summary, args.plots, load_params(args.params, "summarize")
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
