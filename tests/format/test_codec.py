"""Encoders and decoders of the pack format round-trip, and refuse hostile or foreign values clearly."""

import msgpack
import pytest

from imgpack.errors import PackFormatError
from imgpack.format.codec import (
    FORMAT_VERSION,
    decode_header,
    decode_index,
    decode_meta,
    encode_header,
    encode_index,
    encode_meta,
)

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


def test_meta_round_trips_with_nested_extra_columns():
    assert decode_meta(encode_meta(META)) == META


def test_other_format_version_is_refused_with_exact_message():
    raw = msgpack.packb({**HEADER, "format_version": 2})
    with pytest.raises(PackFormatError) as info:
        decode_header(raw, "x.lmdb")
    assert str(info.value) == (
        "x.lmdb has format version 2, this imgpack reads version 1: "
        "rebuild the pack with this imgpack or install the imgpack that wrote it"
    )


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
