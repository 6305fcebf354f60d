"""Encoders and decoders of the pack format round-trip, and refuse hostile or foreign values clearly."""

import msgpack
import pytest

from imgpack.errors import PackFormatError
from imgpack.format.codec import (
    FORMAT_VERSION,
    SHARD_VERSION,
    decode_header,
    decode_index,
    decode_shard_header,
    encode_header,
    encode_index,
    encode_shard_header,
)
from imgpack.format.version1 import decode_meta_v1 as decode_meta

SHARD = {"name": "shard-00.lmdb", "count": 3, "image_bytes": 99, "file_bytes": 8192, "sha256": "e"}

HEADER = {
    "format": "imgpack",
    "format_version": FORMAT_VERSION,
    "count": 3,
    "aliases": 1,
    "hash_algorithm": "sha256",
    "imgpack_version": "0.1.0",
    "params_digest": "ab",
    "manifest_digest": "cd",
    "total_bytes": 99,
    "classes": ["a", "b"],
    "shards": [SHARD, {**SHARD, "name": "shard-01.lmdb"}],
    "catalog_parts": 1,
}
SHARD_HEADER = {
    "format": "imgpack-shard",
    "format_version": SHARD_VERSION,
    "count": 3,
    "hash_algorithm": "sha256",
    "image_bytes": 99,
}
META = {
    "key": "a/1.png",
    "label": "a",
    "hash": "00" * 32,
    "size": 10,
    "format": "PNG",
    "width": 4,
    "height": 3,
    "split": "train",
    "extra": {"bbox": [1, 2, 3, 4], "text": "héllo", "score": 0.5, "none": None},
}


@pytest.mark.parametrize("index", [0, 1, 255, 256, 2**32, 2**64 - 1])
def test_index_round_trips_and_sorts_numerically(index):
    assert decode_index(encode_index(index)) == index
    assert (encode_index(index) < encode_index(index + 1)) if index < 2**64 - 1 else True


def test_header_round_trips():
    assert decode_header(encode_header(HEADER)) == HEADER


def test_shard_header_round_trips_and_names_a_foreign_file():
    assert decode_shard_header(encode_shard_header(SHARD_HEADER), "s") == SHARD_HEADER
    with pytest.raises(PackFormatError, match="not a shard"):
        decode_shard_header(msgpack.packb({**SHARD_HEADER, "format": "imgpack"}), "s")
    with pytest.raises(PackFormatError, match="field 'count' is not a int"):
        decode_shard_header(msgpack.packb({**SHARD_HEADER, "count": "3"}), "s")


def test_a_version_1_record_decodes_for_convert():
    assert decode_meta(msgpack.packb(META, use_bin_type=True)) == META


def test_other_format_version_is_refused_with_exact_message():
    raw = msgpack.packb({**HEADER, "format_version": 4})
    with pytest.raises(PackFormatError) as info:
        decode_header(raw, "x.lmdb")
    assert str(info.value) == (
        "x.lmdb has format version 4, this imgpack reads versions 2 and 3: "
        "rebuild the pack with this imgpack or install the imgpack that wrote it"
    )


def test_a_version_1_pack_is_refused_with_the_command_that_converts_it():
    with pytest.raises(PackFormatError) as info:
        decode_header(msgpack.packb({**HEADER, "format_version": 1}), "x.lmdb")
    assert str(info.value) == (
        "x.lmdb has format version 1, this imgpack reads versions 2 and 3: "
        "convert it with `imgpack convert OLD NEW`"
    )


def test_a_header_whose_shard_list_is_malformed_is_refused():
    with pytest.raises(PackFormatError, match="shard 1 field 'file_bytes'"):
        decode_header(encode_header({**HEADER, "shards": [SHARD, {**SHARD, "file_bytes": 1.5}]}))


@pytest.mark.parametrize(
    "raw, words",
    [
        (None, "no imgpack header"),
        (msgpack.packb({k: v for k, v in HEADER.items() if k != "format_version"}), "version None"),
        (msgpack.packb({"format": "other"}), "not an imgpack pack"),
        (b"\xc1garbage", "not valid msgpack"),
        (msgpack.packb([1, 2]), "not an imgpack pack"),
    ],
)
def test_foreign_or_missing_headers_are_refused(raw, words):
    with pytest.raises(PackFormatError, match=words):
        decode_header(raw)


def test_deeply_nested_metadata_is_refused():
    raw = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(PackFormatError, match="nested too deeply"):
        decode_meta(raw)


def test_huge_declared_length_is_refused_without_allocating():
    raw = b"\xdd\xff\xff\xff\xff"  # an array claiming 4 billion items, with no items
    with pytest.raises(PackFormatError, match="not valid msgpack"):
        decode_meta(raw)


def test_oversized_metadata_is_refused():
    with pytest.raises(PackFormatError, match="over the"):
        decode_meta(msgpack.packb({**META, "extra": {"blob": "x" * (2 << 20)}}))


@pytest.mark.parametrize("field, value", [("size", "10"), ("width", True), ("extra", [])])
def test_metadata_with_wrong_types_is_refused(field, value):
    with pytest.raises(PackFormatError, match=field):
        decode_meta(msgpack.packb({**META, field: value}))


def test_non_string_map_keys_are_refused():
    with pytest.raises(PackFormatError):
        decode_meta(msgpack.packb({**META, "extra": {1: "x"}}))
