"""`imgpack convert` turns a version-1 pack (written here in its documented layout) into version 2."""

import hashlib
import subprocess
import sys

import lmdb
import msgpack

import imgpack
from imgpack.format.codec import encode_index
from imgpack.format.version1 import V1_SUBDBS
from tests.conftest import png_bytes


def write_version_1(path, records, aliases=()):
    """A version-1 pack: header, images, meta, keys, aliases sub-databases, msgpack values."""
    env = lmdb.open(str(path), subdir=False, lock=False, max_dbs=len(V1_SUBDBS), map_size=1 << 24)
    with env.begin(write=True) as txn:
        dbs = {n.decode(): env.open_db(n, txn=txn) for n in V1_SUBDBS}
        for i, (key, data, label, extra) in enumerate(records):
            meta = {
                "key": key,
                "label": label,
                "hash": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "format": "PNG",
                "width": 8,
                "height": 6,
                "split": "val" if i % 2 else "train",
                "extra": extra,
            }
            txn.put(encode_index(i), data, db=dbs["images"])
            txn.put(encode_index(i), msgpack.packb(meta, use_bin_type=True), db=dbs["meta"])
            txn.put(key.encode(), encode_index(i), db=dbs["keys"])
        for alias, key in aliases:
            txn.put(alias.encode(), key.encode(), db=dbs["aliases"])
        header = {
            "format": "imgpack",
            "format_version": 1,
            "count": len(records),
            "aliases": len(aliases),
            "hash_algorithm": "sha256",
            "imgpack_version": "0.1.0",
            "params_digest": "p",
            "manifest_digest": "m",
            "total_bytes": sum(len(r[1]) for r in records),
            "classes": sorted({r[2] for r in records}),
        }
        txn.put(b"header", msgpack.packb(header), db=dbs["header"])
    env.close()
    return path


def test_a_version_1_pack_is_refused_then_converted_record_for_record(tmp_path):
    records = [
        (f"{label}/{n}.png", png_bytes(8, 6, shade=n * 9 + len(label)), label, {"bbox": [n, 1]})
        for label in ("cat", "dog")
        for n in range(4)
    ]
    old = write_version_1(tmp_path / "old.lmdb", records, aliases=[("dog/copy.png", "dog/0.png")])
    refused = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", "info", str(old)], capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert (
        "format version 1, this imgpack reads versions 2 and 3: convert it with `imgpack convert OLD NEW`"
        in refused.stderr
    )
    before = old.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", "convert", str(old), str(tmp_path / "new.lmdb")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "converted 8 records and 1 aliases" in done.stdout
    assert old.read_bytes() == before  # the old pack is only read
    with imgpack.open(tmp_path / "new.lmdb") as pack:
        assert [(r.key, r.data, r.label, r.meta["split"]) for r in pack] == [
            (k, d, lab, "val" if i % 2 else "train") for i, (k, d, lab, _) in enumerate(records)
        ]
        assert pack.meta(5)["extra"] == {"bbox": [1, 1]}
        assert pack["dog/copy.png"].data == records[4][1]
    verified = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", "verify", str(tmp_path / "new.lmdb")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0


def test_converting_a_pack_that_is_not_version_1_is_a_clear_error(sample_file_pack, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgpack.cli.main",
            "convert",
            str(sample_file_pack),
            str(tmp_path / "n"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "not a version-1 imgpack pack" in result.stderr
    assert not (tmp_path / "n").exists()
