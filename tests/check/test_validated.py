"""A damaged record of validated shards is found, named in one warning and made again: validate
then hashes every shard once, and the next validate knows them again."""

import os
import sqlite3
from pathlib import Path

import pytest

from imgpack.check.validate import validate
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.write.pack import pack
from tests.conftest import png_bytes, write_tree


def garbage(path):
    path.write_bytes(b"\x13 not a database \xff" * 500)


def another_table(path):
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE shards (name TEXT PRIMARY KEY)")
    db.close()


@pytest.mark.parametrize("damage", [garbage, another_table], ids=lambda f: f.__name__)
def test_a_damaged_record_of_validated_shards_is_rebuilt_with_one_warning(tmp_path, capfd, damage):
    raw = write_tree(
        tmp_path / "raw",
        {f"{n % 3}/{n:03d}.png": png_bytes(8 + n % 13, 7, shade=n) for n in range(90)},
    )
    manifest, out = tmp_path / "m.jsonl", tmp_path / "p.lmdb"
    ingest(raw, manifest)
    pack(manifest, raw, out, PackParams(shard_mb=0.002))
    first = validate(out, manifest)
    shards = first["shards"]
    assert shards > 3 and validate(out, manifest)["shards_known"] == shards
    capfd.readouterr()
    record = os.path.join(os.environ["IMGPACK_STATE"], "validated-shards.sqlite")
    damage(Path(record))

    report = validate(out, manifest)
    warnings = [line for line in capfd.readouterr().err.splitlines() if "imgpack" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"imgpack: warning: {record}: the record of validated shards was damaged ("
    )
    assert warnings[0].endswith("); rebuilt it (every shard is hashed again once)")
    assert report["ok"] and report["shards_hashed"] == shards

    again = validate(out, manifest)
    assert again["ok"] and again["shards_known"] == shards  # remembered again
    assert not [line for line in capfd.readouterr().err.splitlines() if "imgpack" in line]
