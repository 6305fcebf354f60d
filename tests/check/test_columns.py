"""The columnar check says "all equal" exactly when the record-by-record check finds nothing, across
manifest blocks and catalog parts of any size."""

import json

import pytest

import imgpack
import imgpack.format.tables as catalog_format
from imgpack.check import columns as columncheck
from imgpack.check.columns import all_equal
from imgpack.check.validate import validate
from imgpack.errors import ValidationError
from imgpack.ingest.run import ingest
from imgpack.write.pack import pack
from tests.conftest import png_bytes, write_tree


@pytest.fixture
def built(tmp_path, monkeypatch):
    """300 records in catalog parts of 64 rows, the manifest parsed in blocks of about 20 rows."""
    monkeypatch.setattr(catalog_format, "PART_ROWS", 64)
    monkeypatch.setattr(columncheck, "_BLOCK", 3000)
    files = {
        f"{d}/{n:03d}.png": png_bytes(5 + n % 4, 6, shade=d * 100 + n)
        for d in range(3)
        for n in range(100)
    }
    raw = write_tree(tmp_path / "raw", files)
    ingest(raw, tmp_path / "m.jsonl")
    pack(tmp_path / "m.jsonl", raw, tmp_path / "p.lmdb")
    return tmp_path / "m.jsonl", tmp_path / "p.lmdb"


def edited(manifest, tmp_path, edit):
    """A copy of the manifest with `edit(rows)` applied to its rows."""
    lines = manifest.read_text().splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    edit(rows)
    out = tmp_path / "edited.jsonl"
    header = json.loads(lines[0])
    header["count"] = len(rows)
    out.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return out


def test_a_matching_manifest_is_all_equal_and_validates(built):
    manifest, out = built
    with imgpack.open(out) as opened:
        assert opened.catalog.parts > 4
        assert all_equal(opened, manifest)
    assert validate(out, manifest)["checked"] == 300


def change_label(rows):
    rows[150]["label"] = "other"


def change_hash(rows):
    rows[299]["hash"] = "0" * 64


def change_width(rows):
    rows[64]["width"] += 1


def drop_a_row(rows):
    del rows[0]


def add_a_row(rows):
    rows.append({**rows[-1], "key": "9/last.png"})


def add_an_extra_column(rows):
    rows[10]["extra"] = {"colour": "red"}


def null_a_size(rows):
    rows[5]["size"] = None


@pytest.mark.parametrize(
    "edit",
    [
        change_label,
        change_hash,
        change_width,
        drop_a_row,
        add_a_row,
        add_an_extra_column,
        null_a_size,
    ],
    ids=lambda e: e.__name__,
)
def test_any_difference_is_not_all_equal_and_validate_names_it_record_by_record(
    built, tmp_path, edit
):
    manifest, out = built
    other = edited(manifest, tmp_path, edit)
    with imgpack.open(out) as opened:
        assert not all_equal(opened, other)
    with pytest.raises(ValidationError, match="does not match"):
        validate(out, other)
