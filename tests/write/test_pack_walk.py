"""The pack stage walks the manifest a block of Arrow columns at a time, and row by row from the
first block it cannot take so; either way, and switching midway, the pack has the same bytes."""

import hashlib
import json
import shutil

import pytest

from imgpack.errors import InputError
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.write import pack_walk
from imgpack.write.pack import pack
from tests.conftest import png_bytes, write_tree

PARAMS = PackParams(shard_mb=0.004, duplicates="dedupe")  # several shards; aliases too


def files_digest(folder) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def with_an_unexpected_field(manifest, out, at: int):
    """`manifest` with row `at` carrying one more field: the row reader takes it, a block not."""
    lines = manifest.read_text().splitlines(keepends=True)
    row = json.loads(lines[1 + at])
    row["note"] = "kept by nobody"
    lines[1 + at] = json.dumps(row) + "\n"
    out.write_text("".join(lines))
    return out


@pytest.fixture
def versions(tmp_path, monkeypatch):
    """Two versions of a 240-image folder (the second adds 30 and copies one), ingested."""
    monkeypatch.setattr(pack_walk, "_BLOCK_BYTES", 4096)  # blocks of about 20 rows
    files = {f"c{n % 4}/{n:03d}.png": png_bytes(8 + n % 9, 6, shade=n) for n in range(240)}
    raw = write_tree(tmp_path / "raw", files)
    first = tmp_path / "m1.jsonl"
    ingest(raw, first)
    write_tree(raw, {f"c{n % 4}/x{n:03d}.png": png_bytes(9, 7, shade=n) for n in range(30)})
    write_tree(raw, {"c1/copy.png": files["c1/001.png"]})
    second = tmp_path / "m2.jsonl"
    ingest(raw, second)
    return raw, first, second


@pytest.mark.parametrize("at", [0, 150, -1], ids=["from the start", "midway", "at the last row"])
def test_switching_to_the_row_walk_anywhere_gives_the_same_pack(
    versions, tmp_path, monkeypatch, at
):
    raw, first, second = versions
    row_walks = []  # the ordinal each row-by-row walk starts from
    by_rows = pack_walk._Walk.rows

    def watched(walk, rows, start):
        row_walks.append(start)
        return by_rows(walk, rows, start)

    monkeypatch.setattr(pack_walk._Walk, "rows", watched)
    blocks = tmp_path / "blocks.lmdb"
    pack(first, raw, blocks, PARAMS)
    rows = tmp_path / "rows.lmdb"
    shutil.copytree(blocks, rows)
    pack(second, raw, blocks, PARAMS)  # the second version over the first: shards carried
    assert row_walks == []  # every block taken as columns
    count = len(second.read_text().splitlines()) - 1
    pack(with_an_unexpected_field(second, tmp_path / "m2x.jsonl", at % count), raw, rows, PARAMS)
    assert len(row_walks) == 1 and row_walks[0] <= at % count < row_walks[0] + 40
    assert len(files_digest(blocks)) > 3
    assert files_digest(rows) == files_digest(blocks)


def test_keys_out_of_order_in_a_later_block_are_named_by_their_line(versions, tmp_path):
    raw, first, _ = versions
    lines = first.read_text().splitlines(keepends=True)
    lines[200], lines[201] = lines[201], lines[200]
    (tmp_path / "bad.jsonl").write_text("".join(lines))
    with pytest.raises(InputError, match=r"bad.jsonl:202: keys are not in ascending order"):
        pack(tmp_path / "bad.jsonl", raw, tmp_path / "p.lmdb", PARAMS)
    assert not (tmp_path / "p.lmdb").exists()
