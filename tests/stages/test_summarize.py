"""Summarize writes DVC metrics and plot data from metadata alone."""

import csv
import json

from imgpack.stages.summarize import summarize


def test_summary_counts_labels_splits_formats_and_sizes(sample_pack, tmp_path):
    summary = summarize(sample_pack, tmp_path / "s.json", tmp_path / "plots")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["images"] == 36 and saved["per_label"] == {
        "circle": 12,
        "square": 12,
        "triangle": 12,
    }
    assert sum(saved["per_split"].values()) == 36
    assert sum(n for per in saved["per_split_label"].values() for n in per.values()) == 36
    assert set(saved["formats"]) == {"JPEG", "PNG"} and sum(saved["formats"].values()) == 36
    assert saved["width"]["min"] <= saved["width"]["mean"] <= saved["width"]["max"]
    files = [sample_pack] if sample_pack.is_file() else list(sample_pack.iterdir())
    assert saved["pack_bytes"] == sum(f.stat().st_size for f in files)
    assert saved["shards"] == (1 if sample_pack.is_file() else len(files) - 1)
    with open(tmp_path / "plots/images_per_label.csv") as handle:
        assert list(csv.DictReader(handle))[0] == {"label": "circle", "count": "12"}
    with open(tmp_path / "plots/image_sizes.csv") as handle:
        assert sum(int(r["count"]) for r in csv.DictReader(handle)) == 36
