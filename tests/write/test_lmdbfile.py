"""The pack writer: shards cut by size, one file or a folder, map growth, atomic publication."""

import os
import subprocess
import sys

import pytest

import imgpack
from imgpack.util.outputs import publish, remove_stale_temporaries, temporary_path
from imgpack.write.builder import PackBuilder
from imgpack.write.layout import ShardLayout
from tests.conftest import write_pack


def test_a_far_too_small_map_still_finishes_and_every_record_is_readable(tmp_path):
    out = tmp_path / "p.lmdb"
    header = write_pack(out, 300, map_size=64 << 10)
    assert header["grown"] > 0
    with imgpack.open(out) as pack:
        assert len(pack) == 300
        assert pack.get("k00299").data == b"v" * 5000


def test_publish_leaves_one_file_and_no_lock_or_temporary(tmp_path):
    write_pack(tmp_path / "p.lmdb", 10)
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"]


def test_a_pack_bigger_than_one_shard_is_a_folder_of_a_catalog_and_content_named_shards(tmp_path):
    out = tmp_path / "p.lmdb"
    # 500 kB of distinct images, ~100 kB per shard
    header = write_pack(out, 100, value=lambda i: bytes([i]) * 5000, shard_mb=0.1)
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"] and out.is_dir()
    names = [s["name"] for s in header["shards"]]
    assert len(names) == 5 and sorted(os.listdir(out)) == sorted(["catalog.lmdb", *names])
    assert [s["count"] for s in header["shards"]] == [20] * 5
    for shard in header["shards"]:
        assert shard["name"] == f"shard-{shard['sha256'][:16]}.lmdb"
        assert (out / shard["name"]).stat().st_size == shard["file_bytes"]


def test_an_error_while_writing_publishes_nothing_and_keeps_the_old_pack(tmp_path):
    out = tmp_path / "p.lmdb"
    write_pack(out, 5)
    before = out.read_bytes()
    with pytest.raises(ZeroDivisionError):
        write_pack(out, 5, value=lambda i: b"x" * (10 // (3 - i)), shard_mb=0.00001)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"]


def test_keys_out_of_lmdb_limits_are_refused(tmp_path):
    with (
        pytest.raises(imgpack.InputError, match="511"),
        PackBuilder(
            tmp_path / "p.lmdb", "sha256", ShardLayout.for_shard_mb(1, 32 << 20)
        ) as builder,
    ):
        builder.add_alias("k" * 600, "k")
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_writers_are_removed_but_live_ones_kept(tmp_path):
    out = tmp_path / "p.lmdb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = out.with_name(f".p.lmdb.tmp-{int(dead.stdout)}")
    stale.write_bytes(b"half a pack")
    stale_folder = out.with_name(f".p.lmdb.tmp-{int(dead.stdout)}.lmdb")
    stale_folder.mkdir()
    (stale_folder / "shard-0.lmdb").write_bytes(b"half a shard")
    live = out.with_name(f".p.lmdb.tmp-{os.getppid()}")
    live.write_bytes(b"someone else's build")
    assert remove_stale_temporaries(out) == [stale, stale_folder]
    assert live.exists() and not stale.exists() and not stale_folder.exists()


@pytest.mark.parametrize("shard_mb", [64, 0.1])
def test_the_same_records_give_identical_bytes(tmp_path, shard_mb):
    write_pack(tmp_path / "a.lmdb", 200, shard_mb=shard_mb, map_size=64 << 10)
    write_pack(tmp_path / "b.lmdb", 200, shard_mb=shard_mb, map_size=64 << 10)
    assert tree_bytes(tmp_path / "a.lmdb") == tree_bytes(tmp_path / "b.lmdb")


def tree_bytes(path):
    if path.is_file():
        return path.read_bytes()
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize(
    "old, new",
    [
        ("file", "file"),
        ("file", "folder"),
        ("folder", "file"),
        ("folder", "folder"),
        (None, "folder"),
    ],
)
def test_publishing_replaces_a_file_or_a_folder_by_either_in_one_step(tmp_path, old, new):
    out = tmp_path / "p.lmdb"
    make = {
        "file": lambda p: p.write_bytes(b"F"),
        "folder": lambda p: (p.mkdir(), (p / "x").write_bytes(b"D")),
    }
    if old:
        make[old](out)
    tmp = temporary_path(out)
    make[new](tmp)
    publish(tmp, out)
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"]
    assert (out.read_bytes() == b"F") if new == "file" else ((out / "x").read_bytes() == b"D")


def test_temporary_path_is_hidden_beside_the_output(tmp_path):
    tmp = temporary_path(tmp_path / "p.lmdb")
    assert tmp.parent == tmp_path and tmp.name.startswith(".p.lmdb.tmp-")
