"""The manifest parsed once: the first reader of every field keeps the columns, the readers after
it read them, and a manifest written again is parsed again."""

import os

import pyarrow as pa
import pytest

from imgpack.ingest import manifest_columns
from imgpack.ingest.manifest import ALL_FIELDS, _parsed_blocks, manifest_blocks
from imgpack.ingest.run import ingest
from tests.conftest import png_bytes, write_tree


@pytest.fixture
def manifest(tmp_path):
    raw = write_tree(
        tmp_path / "raw",
        {f"{d}/{n}.png": png_bytes(5 + n, 5, shade=n) for d in "ab" for n in range(30)},
    )
    ingest(raw, tmp_path / "manifest.jsonl")
    return tmp_path / "manifest.jsonl"


def parsed(manifest, fields) -> pa.Table:
    return pa.concat_tables(_parsed_blocks(manifest, fields, 1 << 10))


def test_the_readers_after_the_first_read_the_kept_columns_which_are_what_a_parse_gives(manifest):
    assert manifest_columns.kept_blocks(manifest, ALL_FIELDS) is None
    first = pa.concat_tables(manifest_blocks(manifest, ALL_FIELDS, 1 << 10))
    kept = manifest_columns.kept_blocks(manifest, ["key", "hash"])
    assert kept is not None
    assert pa.concat_tables(kept).equals(parsed(manifest, ["key", "hash"]))
    assert first.equals(parsed(manifest, ALL_FIELDS))


def test_a_manifest_written_again_is_parsed_again(manifest):
    list(manifest_blocks(manifest, ALL_FIELDS))
    text = manifest.read_text().replace('"label":"a"', '"label":"c"')
    tmp = manifest.with_name("new.jsonl")
    tmp.write_text(text)
    os.replace(tmp, manifest)
    assert manifest_columns.kept_blocks(manifest, ALL_FIELDS) is None
    labels = pa.concat_tables(manifest_blocks(manifest, ALL_FIELDS)).column("label").to_pylist()
    assert set(labels) == {"b", "c"}


def test_a_parse_that_fails_or_is_left_half_way_keeps_nothing(manifest):
    blocks = manifest_blocks(manifest, ALL_FIELDS, 1 << 10)
    next(blocks)
    blocks.close()
    assert manifest_columns.kept_blocks(manifest, ALL_FIELDS) is None
    lines = manifest.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"extra":{}', '"extra":{"x":1}')
    manifest.write_text("".join(lines))
    with pytest.raises(pa.ArrowInvalid):
        list(manifest_blocks(manifest, ALL_FIELDS, 1 << 20))
    assert manifest_columns.kept_blocks(manifest, ALL_FIELDS) is None
    assert not [
        p for p in manifest_columns.columns_file(manifest).parent.iterdir() if "tmp" in p.name
    ]
