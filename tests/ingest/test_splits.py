"""ImageFolder trees that hold their split: train/, val/ (valid/, validation/), test/ top folders."""

import json
import subprocess
import sys

import pytest

import imgpack
from imgpack.errors import PolicyError
from imgpack.params import IngestParams, PackParams
from imgpack.write.build import build
from tests.conftest import png_bytes, write_tree

FOLDERS = PackParams(splits="folders")


@pytest.fixture
def split_tree(tmp_path):
    files = {
        f"{top}/{label}/{n}.png": png_bytes(6 + n, 5, shade=i * 20 + n)
        for i, (top, label) in enumerate(
            (t, lab) for t in ("train", "val", "validation", "test") for lab in ("a", "b")
        )
        for n in range(3)
    }
    files["extras/a/0.png"] = png_bytes(9, 9, shade=250)
    return write_tree(tmp_path / "raw", files)


def test_the_split_is_the_top_folder_and_the_label_the_parent_folder(split_tree, tmp_path):
    out = tmp_path / "p.lmdb"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgpack.cli.main",
            "build",
            split_tree,
            out,
            "--splits",
            "folders",
            "--report",
            tmp_path / "r.json",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["skipped_by_reason"] == {"unknown_split": 1}
    assert report["skipped_files"][0]["path"] == "extras/a/0.png"
    with imgpack.open(out) as pack:
        frame = pack.metadata(columns=["key", "label", "split"])
    expected = frame["key"].str.split("/").str[0].replace({"validation": "val"})
    assert (frame["split"] == expected).all() and set(frame["split"]) == {"train", "val", "test"}
    assert (frame["label"] == frame["key"].str.split("/").str[1]).all()
    val = imgpack.ImageDataset(out, split="val")
    keys = [val.pack.key_of(i) for i in val.indices]
    assert sorted(keys) == sorted(
        k for k in frame["key"] if k.split("/")[0] in ("val", "validation")
    )
    assert len(keys) == 12


def test_a_top_folder_that_names_no_split_can_be_refused(split_tree, tmp_path):
    with pytest.raises(PolicyError, match="unknown_split 1: extras/a/0.png"):
        build(
            split_tree,
            tmp_path / "p.lmdb",
            ingest_params=IngestParams(on_error={"unknown_split": "fail"}),
            pack_params=FOLDERS,
        )
    assert not (tmp_path / "p.lmdb").exists()


def test_hash_splits_ignore_the_folders_by_default(split_tree, tmp_path):
    result = build(split_tree, tmp_path / "p.lmdb")
    assert result.report.packed == 25  # nothing skipped: the top folder is only a path


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.8, "val": 0.1, "test": 0.1},
        {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3},  # a rounding sliver past the last bound
        {"train": 0.5, "none": 0.0, "val": 0.25},  # an empty split; a quarter left over
        {"only": 0.5},
    ],
)
def test_splits_drawn_as_a_column_are_each_keys_own_draw(fractions):
    from imgpack.ingest.splits import split_assigner, splits_drawn

    keys = [f"{label}/{n}é.png" for label in "abc" for n in range(4000)]
    for seed in (0, 11):
        one_by_one = list(map(split_assigner(seed, fractions), keys))
        assert splits_drawn(keys, seed, fractions).to_pylist() == one_by_one
        assert len(set(one_by_one)) == len([f for f in fractions.values() if f]) or (
            len(fractions) == 1
        )
