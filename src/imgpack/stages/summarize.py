"""Stage summarize: DVC metrics (counts, bytes, formats, sizes) and plot data from the pack's catalog."""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path
from typing import Any

from imgpack.params import SummarizeParams, load_params
from imgpack.reader import Pack
from imgpack.stages.common import run_stage, write_json

__all__ = ["summarize"]


def _counts(series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(series.items())}


def _range(column) -> dict[str, float | int | None]:
    if not len(column):
        return {"min": None, "mean": None, "max": None}
    return {
        "min": int(column.min()),
        "mean": round(float(column.mean()), 3),
        "max": int(column.max()),
    }


def summarize(
    pack_path: str | Path,
    summary_out: str | Path,
    plots_dir: str | Path,
    params: SummarizeParams | None = None,
) -> dict[str, Any]:
    """Write summary.json and the plot CSVs; reads catalog columns only, never image bytes."""
    params = params or SummarizeParams()
    with Pack(pack_path) as pack:
        frame = pack.metadata(columns=["label", "split", "format", "width", "height", "size"])
        header = pack.header
        pack_bytes = pack.file_bytes
    per_label = frame["label"].value_counts()
    per_split = frame["split"].value_counts()
    per_split_label = frame.groupby(["split", "label"]).size()
    formats = frame["format"].value_counts()
    summary = {
        "images": header["count"],
        "aliases": header["aliases"],
        "image_bytes": header["total_bytes"],
        "pack_bytes": pack_bytes,
        "shards": len(header["shards"]),
        "per_label": _counts(per_label),
        "per_split": _counts(per_split),
        "per_split_label": {
            split: {
                label: int(n) for (s, label), n in sorted(per_split_label.items()) if s == split
            }
            for split in sorted(per_split.index)
        },
        "formats": _counts(formats),
        "width": _range(frame["width"]),
        "height": _range(frame["height"]),
        "file_bytes": _range(frame["size"]),
    }
    write_json(Path(summary_out), summary)
    plots = Path(plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    _write_csv(plots / "images_per_label.csv", ["label", "count"], _counts(per_label).items())
    sizes = frame["size"].to_numpy()
    _write_csv(
        plots / "image_sizes.csv", ["size_bytes", "count"], _histogram(sizes, params.size_bins)
    )
    return summary


def _histogram(values, bins: int) -> list[tuple[int, int]]:
    """Counts per equal-width bin, labelled by each bin's lower edge in bytes."""
    if not len(values):
        return []
    low, high = int(values.min()), int(values.max())
    width = max(1, -(-(high - low + 1) // bins))
    counts = Counter(((values - low) // width).tolist())
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
