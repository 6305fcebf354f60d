"""The writer builds a single-file LMDB at a temporary path, grows the map, and publishes atomically."""

import os
import subprocess
import sys

import pytest

import imgpack
from imgpack.format.codec import FORMAT_NAME, FORMAT_VERSION
from imgpack.writer import PackWriter, remove_stale_temporaries, temporary_path


def header(count):
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "count": count,
        "aliases": 0,
        "hash_algorithm": "sha256",
        "imgpack_version": "t",
        "params_digest": "",
        "manifest_digest": "",
        "total_bytes": 0,
        "classes": ["x"],
    }


def meta(key):
    return {
        "key": key,
        "label": "x",
        "hash": "",
        "size": 0,
        "format": "PNG",
        "width": 1,
        "height": 1,
        "split": "train",
        "extra": {},
    }


def write(out, n, map_size, value=b"v" * 5000, batch_bytes=1 << 20):
    with PackWriter(out, map_size, batch_bytes) as writer:
        for i in range(n):
            writer.add(f"k{i:05d}", value, meta(f"k{i:05d}"))
        writer.publish(header(n))
    return writer


def test_a_far_too_small_map_still_finishes_and_every_record_is_readable(tmp_path):
    out = tmp_path / "p.lmdb"
    writer = write(out, 300, map_size=64 << 10)
    assert writer.grown > 0
    with imgpack.open(out) as pack:
        assert len(pack) == 300
        assert pack.get("k00299").data == b"v" * 5000


def test_publish_leaves_one_file_and_no_lock_or_temporary(tmp_path):
    write(tmp_path / "p.lmdb", 10, 1 << 20)
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"]


def test_an_error_while_writing_publishes_nothing_and_keeps_the_old_pack(tmp_path):
    out = tmp_path / "p.lmdb"
    write(out, 5, 1 << 20)
    before = out.read_bytes()
    with pytest.raises(RuntimeError), PackWriter(out, 1 << 20) as writer:
        writer.add("a", b"x", meta("a"))
        raise RuntimeError("boom")
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.lmdb"]


def test_keys_out_of_lmdb_limits_are_refused(tmp_path):
    with (
        PackWriter(tmp_path / "p.lmdb", 1 << 20) as writer,
        pytest.raises(imgpack.InputError, match="511"),
    ):
        writer.add("k" * 600, b"x", meta("k"))


def test_stale_temporaries_of_dead_writers_are_removed_but_live_ones_kept(tmp_path):
    out = tmp_path / "p.lmdb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = out.with_name(f".p.lmdb.tmp-{int(dead.stdout)}")
    stale.write_bytes(b"half a pack")
    live = out.with_name(f".p.lmdb.tmp-{os.getppid()}")
    live.write_bytes(b"someone else's build")
    assert remove_stale_temporaries(out) == [stale]
    assert live.exists() and not stale.exists()


def test_the_same_records_give_identical_bytes(tmp_path):
    write(tmp_path / "a.lmdb", 200, 64 << 10)
    write(tmp_path / "b.lmdb", 200, 64 << 10)
    assert (tmp_path / "a.lmdb").read_bytes() == (tmp_path / "b.lmdb").read_bytes()


def test_temporary_path_is_hidden_beside_the_output(tmp_path):
    tmp = temporary_path(tmp_path / "p.lmdb")
    assert tmp.parent == tmp_path and tmp.name.startswith(".p.lmdb.tmp-")
