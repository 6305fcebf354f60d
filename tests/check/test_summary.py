"""Summarize writes DVC metrics and plot data from metadata alone."""

import csv
import json

from imgpack.check.summary import summarize


def test_summary_counts_labels_splits_formats_and_sizes(sample_pack, tmp_path):
    summary = summarize(sample_pack, tmp_path / "s.json", tmp_path / "plots")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["images"] == 36 and saved["labels"] == 3
    assert saved["train"] + saved["val"] + saved["test"] == 36
    assert saved["mean_width"] > 0 and saved["mean_height"] > 0
    files = [sample_pack] if sample_pack.is_file() else list(sample_pack.iterdir())
    assert saved["pack_bytes"] == sum(f.stat().st_size for f in files)
    assert saved["shards"] == (1 if sample_pack.is_file() else len(files) - 1)
    with open(tmp_path / "plots/images_per_label.csv") as handle:
        assert list(csv.DictReader(handle))[0] == {"label": "circle", "count": "12"}
    for plot in ("image_sizes", "images_per_split", "image_dimensions"):
        with open(tmp_path / f"plots/{plot}.csv") as handle:
            assert sum(int(r["count"]) for r in csv.DictReader(handle)) == 36
    with open(tmp_path / "plots/images_per_split.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    assert sum(int(r["count"]) for r in rows if r["split"] == "train") == saved["train"]
