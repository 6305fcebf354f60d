"""The reader: lookups, batch reads, iteration, metadata, read-only opening, fork and truncation safety."""

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import imgpack
from tests.conftest import pack_state, source_files


def test_every_record_equals_its_source_file(sample_pack, sample_raw):
    sources = source_files(sample_raw / "images")
    with imgpack.open(sample_pack) as pack:
        assert len(pack) == len(sources)
        assert {r.key: r.data for r in pack} == sources
        for i in range(len(pack)):
            record = pack[i]
            assert record.index == i and record.data == sources[record.key]


def test_records_are_in_key_order_and_found_by_key_and_negative_index(sample_pack):
    with imgpack.open(sample_pack) as pack:
        keys = list(pack.keys())
        assert keys == sorted(keys)
        assert pack[keys[5]].index == 5 == pack.get(keys[5]).index
        assert pack[-1].key == keys[-1]
        assert keys[3] in pack and "nope.png" not in pack
        with pytest.raises(KeyError):
            pack.get("nope.png")
        with pytest.raises(IndexError):
            pack[len(pack)]


def test_batch_read_returns_records_in_the_order_asked(sample_pack):
    with imgpack.open(sample_pack) as pack:
        keys = list(pack.keys())
        records = pack.read_many([7, keys[2], 0, 7])
        assert [r.key for r in records] == [keys[7], keys[2], keys[0], keys[7]]
        assert [r.key for r in pack[2:5]] == keys[2:5]


def test_metadata_catalog_has_labels_and_extra_columns_without_reading_images(sample_pack):
    with imgpack.open(sample_pack) as pack:
        frame = pack.metadata()
        assert len(frame) == len(pack)
        assert {
            "key",
            "label",
            "split",
            "width",
            "height",
            "format",
            "size",
            "hash",
            "bbox",
        } <= set(frame.columns)
        assert frame.loc[4, "key"] == pack[4].key
        assert frame.loc[4, "bbox"] == pack[4].meta["extra"]["bbox"]
        only = pack.metadata(columns=["label", "width"])
        assert list(only.columns) == ["label", "width"]


def test_metadata_chunks_concatenate_to_the_whole_catalog(sample_pack):
    with imgpack.open(sample_pack) as pack:
        chunks = list(pack.metadata(chunksize=7))
        assert all(len(c) <= 7 for c in chunks) and len(chunks) > 1
        pd.testing.assert_frame_equal(pd.concat(chunks), pack.metadata())


def test_opening_and_reading_never_changes_a_file(sample_pack):
    before = pack_state(sample_pack)
    listing = sorted(os.listdir(sample_pack.parent))
    with imgpack.open(sample_pack) as pack:
        list(pack)
        pack.metadata()
        pack.get(pack.key_of(3))
        imgpack.ImageDataset(sample_pack)[2]
    assert pack_state(sample_pack) == before
    assert sorted(os.listdir(sample_pack.parent)) == listing  # no -lock file anywhere


def test_a_pack_opened_in_the_parent_works_in_a_forked_child(sample_pack):
    pack = imgpack.open(sample_pack)
    expected = pack[3].data
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not raise "environment already open"
        try:
            os.write(write, pack[3].data)
        finally:
            os._exit(0)
    os.close(write)
    got = os.read(read, 1 << 20)
    os.waitpid(pid, 0)
    assert got == expected
    assert pack[3].data == expected  # the parent's handle is untouched


def test_a_pack_survives_a_pickle_round_trip_by_reopening_the_path(sample_pack):
    with imgpack.open(sample_pack) as pack:
        clone = pickle.loads(pickle.dumps(pack))
        assert clone.path == pack.path and clone[0].data == pack[0].data


def _open_in_subprocess(path):
    code = textwrap.dedent(
        f"""
        import sys, imgpack
        try:
            pack = imgpack.open({str(path)!r})
            for record in pack:
                pass
        except imgpack.ImgpackError as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
        print("read fine")
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("keep", ["half", "one_page", "zero"])
def test_a_truncated_pack_fails_on_open_with_a_clear_error_not_a_signal(
    sample_file_pack, tmp_path, keep
):
    data = sample_file_pack.read_bytes()
    size = {"half": len(data) // 2, "one_page": 4096, "zero": 0}[keep]
    bad = tmp_path / "bad.lmdb"
    bad.write_bytes(data[:size])
    result = _open_in_subprocess(bad)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.startswith("PackCorruptError") and "truncated" in result.stdout


def test_a_file_of_garbage_is_not_a_pack(tmp_path):
    bad = tmp_path / "garbage.lmdb"
    bad.write_bytes(os.urandom(64 << 10))
    result = _open_in_subprocess(bad)
    assert result.returncode == 3 and result.stdout.startswith("PackFormatError")


def _foreign_pack(path, header_value=None, catalog_value=None, with_subdbs=True):
    """An LMDB file shaped like a pack but with a header or catalog we choose (untrusted input)."""
    import lmdb
    import msgpack

    from imgpack.format.codec import SUBDBS, encode_index

    env = lmdb.open(str(path), subdir=False, lock=False, max_dbs=len(SUBDBS), map_size=1 << 24)
    with env.begin(write=True) as txn:
        if with_subdbs:
            dbs = {n.decode(): env.open_db(n, txn=txn) for n in SUBDBS}
            if header_value is not None:
                txn.put(b"header", header_value, db=dbs["header"])
            if catalog_value is not None:
                txn.put(encode_index(0), catalog_value, db=dbs["catalog"])
        else:
            txn.put(b"some", msgpack.packb("thing"))
    env.close()
    return path


def _header(**changes):
    import msgpack

    header = {
        "format": "imgpack",
        "format_version": 2,
        "count": 1,
        "aliases": 0,
        "hash_algorithm": "sha256",
        "imgpack_version": "t",
        "params_digest": "",
        "manifest_digest": "",
        "total_bytes": 3,
        "classes": ["x"],
        "shards": [{"name": "", "count": 1, "image_bytes": 3, "file_bytes": 0, "sha256": ""}],
        "catalog_parts": 1,
    }
    return msgpack.packb({**header, **changes})


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"header_value": _header(format_version=99)},
            "has format version 99, this imgpack reads versions 2 and 3",
        ),
        (
            {"header_value": _header(format_version=1)},
            "has format version 1, this imgpack reads versions 2 and 3: convert it with "
            "`imgpack convert OLD NEW`",
        ),
        ({"header_value": None}, "no imgpack header"),
        ({"with_subdbs": False}, "not an imgpack pack (sub-databases missing)"),
        ({"header_value": b"\xdd\xff\xff\xff\xff"}, "header is not valid msgpack"),
        ({"header_value": _header(shards=[{"name": 3}])}, "field 'name' is not a str"),
    ],
)
def test_someone_elses_file_gets_a_clear_error_in_reader_and_cli(tmp_path, kwargs, words):
    path = _foreign_pack(tmp_path / "foreign.lmdb", **kwargs)
    result = _open_in_subprocess(path)
    assert result.returncode == 3 and words in result.stdout, result.stdout + result.stderr
    for command in ("info", "verify"):
        cli = subprocess.run(
            [sys.executable, "-m", "imgpack.cli.main", command, str(path)],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 1 and words in cli.stderr and "Traceback" not in cli.stderr


def _parquet(**columns):
    import pyarrow as pa

    from imgpack.format.tables import encode_table

    return encode_table(pa.table(columns))


@pytest.mark.parametrize(
    "catalog_raw, words",
    [
        (b"PAR1" + b"\xff" * 100 + b"PAR1", "not a readable Parquet value"),
        (b"\x00" * 64, "not a readable Parquet value"),
        (_parquet(key=["a"]), "has no 'label' column"),
        (_parquet(key=[1]), "column 'key' is int64, expected string"),
        (None, "catalog value 0 is missing"),
    ],
)
def test_a_hostile_or_damaged_catalog_is_refused_with_a_clear_error(tmp_path, catalog_raw, words):
    path = _foreign_pack(
        tmp_path / "hostile.lmdb", header_value=_header(), catalog_value=catalog_raw
    )
    result = _open_in_subprocess(path)
    assert result.returncode == 3 and words in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("keep", ["half", "one_page", "zero"])
@pytest.mark.parametrize("command", ["info", "verify"])
def test_the_cli_reports_a_truncated_pack_in_one_line(sample_file_pack, tmp_path, keep, command):
    data = sample_file_pack.read_bytes()
    bad = tmp_path / "bad.lmdb"
    bad.write_bytes(data[: {"half": len(data) // 2, "one_page": 4096, "zero": 0}[keep]])
    cli = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", command, str(bad)],
        capture_output=True,
        text=True,
    )
    assert (
        cli.returncode == 1
        and "truncated" in cli.stderr
        and len(cli.stderr.strip().splitlines()) == 1
    )


def mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0]:
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("shard_mb", [64, 0.3])
def test_full_scans_drop_read_pages_from_rss_and_interleave_with_other_reads(
    tmp_path, monkeypatch, shard_mb
):
    from imgpack.read import records as reader
    from tests.conftest import write_pack

    out = tmp_path / "big.lmdb"
    write_pack(out, 2500, value=lambda i: i.to_bytes(4, "big") * 300, shard_mb=shard_mb)
    monkeypatch.setattr(reader, "_RELEASE_BYTES", 1)  # drop pages after every chunk
    with imgpack.open(out) as pack:
        seen = []
        for record in pack:
            if record.index % 500 == 0:
                assert pack[record.index].data == record.data  # a lookup in the middle of a scan
            assert record.data == record.index.to_bytes(4, "big") * 300
            seen.append(record.key)
        assert seen == [f"k{i:05d}" for i in range(2500)]
        resident = sum(mapped_rss(p.resolve()) for p in set(pack.shard_paths))
        assert resident < pack.header["total_bytes"] / 4  # 3 MB read, well under 1 MB resident
        assert [i for i, _ in pack.iter_meta()] == list(range(2500))
        twin = zip(pack, pack.iter_meta(), strict=True)
        assert all(record.index == index for record, (index, _) in twin)
