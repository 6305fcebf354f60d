"""Validate compares the pack against the manifest and names every offending key."""

import json

import pytest

from imgpack.check.validate import validate
from imgpack.errors import ValidationError
from imgpack.ingest.manifest import read_manifest
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.write.pack import pack
from tests.conftest import flip_byte_of, png_bytes, write_tree


@pytest.fixture
def built(tmp_path):
    files = {f"{d}/{n}.png": png_bytes(7, 7, shade=d * 50 + n) for d in range(2) for n in range(5)}
    raw = write_tree(tmp_path / "raw", files)
    ingest(raw, tmp_path / "m.jsonl")
    pack(tmp_path / "m.jsonl", raw, tmp_path / "p.lmdb")
    return raw, tmp_path / "m.jsonl", tmp_path / "p.lmdb"


def test_a_good_pack_validates_and_reports(built, tmp_path):
    _, manifest, out = built
    report = validate(out, manifest, tmp_path / "v.json")
    assert report["ok"] and report["checked"] == 10
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True


def test_a_flipped_byte_in_a_stored_image_fails_validation_naming_the_key(built, tmp_path):
    raw, manifest, out = built
    flip_byte_of(out, "1/3.png")
    with pytest.raises(ValidationError, match=r"hash_mismatch 1: 1/3\.png"):
        validate(out, manifest, tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text())["offenders"] == {
        "hash_mismatch": ["1/3.png"]
    }


def test_a_manifest_with_more_images_names_the_missing_keys(built, tmp_path):
    raw, manifest, out = built
    (raw / "1/9.png").write_bytes(png_bytes(3, 3, shade=99))
    ingest(raw, tmp_path / "m2.jsonl")
    with pytest.raises(ValidationError, match=r"missing 1: 1/9\.png"):
        validate(out, tmp_path / "m2.jsonl")


def test_a_manifest_with_fewer_images_names_the_extra_keys(built, tmp_path):
    raw, manifest, out = built
    (raw / "0/2.png").unlink()
    ingest(raw, tmp_path / "m2.jsonl")
    with pytest.raises(ValidationError, match=r"extra 1: 0/2\.png"):
        validate(out, tmp_path / "m2.jsonl")


def test_more_than_twenty_offenders_are_listed_as_twenty_and_a_count(tmp_path):
    files = {f"x/{n:02d}.png": png_bytes(4, 4, shade=n) for n in range(30)}
    raw = write_tree(tmp_path / "raw", files)
    ingest(raw, tmp_path / "m.jsonl")
    pack(tmp_path / "m.jsonl", raw, tmp_path / "p.lmdb")
    empty = write_tree(tmp_path / "other", {"y/a.png": png_bytes(2, 2)})
    ingest(empty, tmp_path / "m2.jsonl")
    with pytest.raises(ValidationError, match=r"extra 30: x/00\.png.*x/19\.png and 10 more"):
        validate(tmp_path / "p.lmdb", tmp_path / "m2.jsonl")
    assert read_manifest(tmp_path / "m2.jsonl")[0]["count"] == 1


def test_an_aliass_own_metadata_is_checked_against_what_it_reads_back(tmp_path):
    same = png_bytes(shade=5)
    raw = write_tree(tmp_path / "raw", {"a.png": same, "b.png": same})
    table = tmp_path / "labels.csv"
    table.write_text("path,label,bbox\na.png,cat,1 2 3 4\nb.png,cat,1 2 3 4\n")
    manifest, out = tmp_path / "m.jsonl", tmp_path / "p.lmdb"
    ingest(raw, manifest, labels=table)
    pack(manifest, raw, out, PackParams(duplicates="dedupe"))
    assert validate(out, manifest)["ok"]
    # the manifest of another input: b.png's own bbox differs from the copy it aliases
    lines = manifest.read_text().splitlines()
    lines = [
        line.replace('"bbox":"1 2 3 4"', '"bbox":"5 6 7 8"') if '"key":"b.png"' in line else line
        for line in lines
    ]
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationError, match=r"meta_mismatch 1: b\.png"):
        validate(out, manifest, tmp_path / "v.json")
