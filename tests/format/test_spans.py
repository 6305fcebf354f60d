"""Locating images in place: every span equals LMDB's own read, and damaged B-tree pages are refused."""

import struct

import lmdb
import pytest

import imgpack
from imgpack.errors import PackCorruptError, PackFormatError
from imgpack.format import spans
from imgpack.format.codec import SUBDBS, encode_index
from tests.conftest import write_pack

PAGE = 4096
# Inline values, values just around LMDB's overflow threshold (~2 KB on 4 KiB pages) and big ones.
SIZES = (1, 17, 400, 1500, 1500, 1500, 2030, 2050, 3000, 20_000)


def value(i: int) -> bytes:
    size = SIZES[i % len(SIZES)]
    return bytes((i * 7 + j) % 251 for j in range(min(size, 64))) * (size // 64) + bytes(size % 64)


@pytest.fixture(scope="module")
def deep_pack(tmp_path_factory):
    """3,000 records: a three-level B-tree with inline values and values on overflow pages."""
    out = tmp_path_factory.mktemp("spans") / "deep.lmdb"
    write_pack(out, 3000, value=value, batch_bytes=1 << 20)
    return out


def lmdb_images(path):
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=len(SUBDBS))
    with env.begin() as txn:
        db = env.open_db(b"images", txn=txn, create=False)
        stat = txn.stat(db)
        values = [txn.get(encode_index(i), db=db) for i in range(stat["entries"])]
    env.close()
    return stat, values


def test_every_span_holds_exactly_what_lmdb_returns_for_the_record(deep_pack):
    stat, expected = lmdb_images(deep_pack)
    assert stat["depth"] >= 3 and stat["overflow_pages"] > 0  # the walk sees every kind of page
    with imgpack.open(deep_pack) as pack:
        assert [pack.data(i) for i in range(len(pack))] == expected
        assert pack.data_many([2999, 0, 6, 6]) == [expected[i] for i in (2999, 0, 6, 6)]
        images = pack.locate()
        assert [images.ends[i] - images.starts[i] for i in range(len(pack))] == [
            len(v) for v in expected
        ]


def damaged_copy(path, tmp_path, where, patch: bytes):
    data = bytearray(path.read_bytes())
    data[where : where + len(patch)] = patch
    out = tmp_path / "damaged.lmdb"
    out.write_bytes(bytes(data))
    return out


def spans_of(path):
    with imgpack.open(path) as pack:
        images = pack.locate()
        return list(images.starts), list(images.ends)


def _inline_record(starts, ends, small=2):
    """A record whose value sits inline on a leaf page (not the first record of its page)."""
    i = small + len(SIZES)
    assert ends[i] - starts[i] == SIZES[small]
    return i, starts[i] - 16  # its node: 8 bytes of header, then the 8-byte key


def _damage_cases(path):
    starts, ends = spans_of(path)
    i, node = _inline_record(starts, ends)
    leaf = node // PAGE
    big = SIZES.index(20_000)
    overflow = (starts[big] - 16) // PAGE
    return {
        "leaf header": (leaf * PAGE, struct.pack("=Q", leaf + 1), "header names another page"),
        "key": (node + 8, encode_index(i + 1), "out of sequence"),
        "value size": (node, struct.pack("=HH", 0xFFFF, 0x7), "runs past its pages"),
        "node flags": (node + 4, struct.pack("=H", 0x02), "unknown node flags"),
        "free space": (leaf * PAGE + 12, struct.pack("=HH", 4000, 100), "free-space bounds"),
        "overflow kind": (overflow * PAGE + 10, struct.pack("=H", 0x02), "page kind is not 0x4"),
        "overflow run": (overflow * PAGE + 12, struct.pack("=I", 1 << 30), "overflow"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "leaf header",
        "key",
        "value size",
        "node flags",
        "free space",
        "overflow kind",
        "overflow run",
    ],
)
def test_a_damaged_images_page_is_refused_with_the_page_named(deep_pack, tmp_path, case):
    where, patch, words = _damage_cases(deep_pack)[case]
    bad = damaged_copy(deep_pack, tmp_path, where, patch)
    with imgpack.open(bad) as pack:  # metadata still opens; the first image read finds the damage
        with pytest.raises(PackCorruptError, match=rf"page \d+ of the images B-tree.*{words}"):
            pack.data(0)
        with pytest.raises(PackCorruptError):
            imgpack.ImageDataset(bad)


def test_an_images_database_with_lmdb_flags_imgpack_never_writes_is_refused(tmp_path):
    path = tmp_path / "dupsort.lmdb"
    write_pack(path, 1, value=b"img")
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=len(SUBDBS))
    with env.begin() as txn:
        values = {n: list(txn.cursor(env.open_db(n, txn=txn, create=False))) for n in SUBDBS}
    env.close()
    other = tmp_path / "other.lmdb"
    env = lmdb.open(str(other), subdir=False, lock=False, max_dbs=len(SUBDBS), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for name, items in values.items():
            db = env.open_db(name, txn=txn, dupsort=name == b"images")
            for key, item in items:
                txn.put(key, item, db=db)
    env.close()
    with imgpack.open(other) as pack:
        assert pack.meta(0)["key"] == "k00000"  # only the image reads depend on the layout
        with pytest.raises(PackFormatError, match="images sub-database has LMDB flags 0x4"):
            pack.data(0)


@pytest.mark.parametrize("shard_mb", [64, 0.01])
def test_an_lmdb_layout_the_walker_does_not_know_falls_back_to_lmdb_reads(
    deep_pack, tmp_path, monkeypatch, shard_mb
):
    out = tmp_path / "p.lmdb"
    write_pack(out, 300, value=value, shard_mb=shard_mb)
    _, expected = lmdb_images(out) if out.is_file() else (None, None)
    # A future LMDB writes another data version: the walker must not guess at its pages.
    monkeypatch.setattr(spans, "KNOWN_DATA_VERSION", spans.KNOWN_DATA_VERSION + 1)
    with imgpack.open(out) as pack:
        assert not pack.locate().located
        assert [pack.data(i) for i in range(len(pack))] == [value(i) for i in range(300)]
        assert pack.data_many([299, 0, 5]) == [value(299), value(0), value(5)]
        assert [r.data for r in pack] == [value(i) for i in range(300)]
        dataset = imgpack.ImageDataset(out)
        assert [dataset[i][0] for i in (7, 3)] == [value(7), value(3)]
    if expected is not None:
        assert expected == [value(i) for i in range(300)]


def test_a_pack_without_records_locates_to_an_empty_table(tmp_path):
    out = tmp_path / "empty.lmdb"
    write_pack(out, 0)
    with imgpack.open(out) as pack:
        assert len(pack.locate().starts) == 0 and len(pack.metadata()) == 0
        with pytest.raises(IndexError):
            pack.data(0)
