"""Encoders and decoders, in pairs, for every key and value an imgpack pack stores."""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from imgpack.errors import PackFormatError

FORMAT_NAME = "imgpack"
FORMAT_VERSION = 3  # 3: digests only in the shards' props, not in the catalog
READABLE_VERSIONS = (2, 3)  # 2 kept the digests in the catalog too; read as they are
SHARD_FORMAT = "imgpack-shard"
SHARD_VERSION = (
    2  # shards are the same in formats 2 and 3: version 3 packs carry version 2 shards over
)
# The writer's rules that decide the bytes of a pack of given inputs and params within one format
# (the shard cut, map sizes, catalog parts, header fields): bumped with any change to them, so a
# project's recorded format (`imgpack init`) makes DVC build its pack again.
LAYOUT_VERSION = 1
# A catalog file holds the first three, a shard file the last three, a one-file pack all six.
CATALOG_DBS = (b"header", b"catalog", b"aliases")
SHARD_DBS = (b"shard", b"images", b"props")
SHARD_IMAGES = 16_384  # images per shard at most: bounds a shard task's memory, whatever their size
SUBDBS = CATALOG_DBS + SHARD_DBS
HEADER_KEY = b"header"
CATALOG_FILE = "catalog.lmdb"  # in a folder pack, beside its shard-<digest>.lmdb files
CONVERT_HINT = "convert it with `imgpack convert OLD NEW`"

# Bounds for untrusted msgpack: a record's metadata is small, so anything past these is hostile or broken.
_MAX_META_BYTES = 1 << 20  # a shard header, a version-1 record
_MAX_HEADER_BYTES = 64 << 20
_INDEX = struct.Struct(">Q")

_HEADER_FIELDS = {
    "format": str,
    "format_version": int,
    "count": int,
    "aliases": int,
    "hash_algorithm": str,
    "imgpack_version": str,
    "params_digest": str,
    "manifest_digest": str,
    "total_bytes": int,
    "classes": list,
    "shards": list,
    "catalog_parts": int,
}
_SHARD_FIELDS = {"name": str, "count": int, "image_bytes": int, "file_bytes": int, "sha256": str}
_SHARD_HEADER_FIELDS = {
    "format": str,
    "format_version": int,
    "count": int,
    "hash_algorithm": str,
    "image_bytes": int,
}


def encode_index(index: int) -> bytes:
    """Record index -> 8-byte big-endian key, so LMDB's byte order is numeric order."""
    return _INDEX.pack(index)


def decode_index(raw: bytes) -> int:
    if len(raw) != _INDEX.size:
        raise PackFormatError(f"record index has {len(raw)} bytes, expected 8: the pack is damaged")
    return _INDEX.unpack(raw)[0]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack_bounded(raw: bytes, limit: int, what: str) -> Any:
    if len(raw) > limit:
        raise PackFormatError(f"{what} is {len(raw)} bytes, over the {limit}-byte limit")
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit // 2,
            max_map_len=limit // 4,
        )
    except msgpack.exceptions.StackError:
        raise PackFormatError(f"{what} is nested too deeply to be imgpack metadata") from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise PackFormatError(
            f"{what} is not valid msgpack ({type(exc).__name__}: {exc})"
        ) from None
    return value


def check_fields(value: Any, fields: dict[str, type], what: str) -> None:
    if type(value) is not dict:
        raise PackFormatError(f"{what} is a {type(value).__name__}, expected a map")
    try:
        if all(type(value[name]) is kind for name, kind in fields.items()):
            return
    except KeyError as missing:
        raise PackFormatError(f"{what} has no {missing} field") from None
    for name, kind in fields.items():
        if type(value[name]) is not kind:
            raise PackFormatError(f"{what} field '{name}' is not a {kind.__name__}")


def encode_header(header: dict[str, Any]) -> bytes:
    check_fields(header, _HEADER_FIELDS, "header")
    return _pack(header)


def decode_header(raw: bytes | None, where: str = "pack") -> dict[str, Any]:
    """Decode and check a header; the format version must match exactly."""
    if raw is None:
        raise PackFormatError(f"{where} has no imgpack header: it is not an imgpack pack")
    header = unpack_bounded(raw, _MAX_HEADER_BYTES, f"{where} header")
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise PackFormatError(
            f"{where} header does not name the imgpack format: not an imgpack pack"
        )
    _check_version(header.get("format_version"), where, READABLE_VERSIONS)
    check_fields(header, _HEADER_FIELDS, f"{where} header")
    for number, shard in enumerate(header["shards"]):
        check_fields(shard, _SHARD_FIELDS, f"{where} header, shard {number}")
    return header


def _check_version(version: Any, where: str, readable: tuple[int, ...]) -> None:
    if version in readable:
        return
    reads = " and ".join(map(str, readable))
    reads = f"version{'s' if len(readable) > 1 else ''} {reads}"
    if version == 1:
        raise PackFormatError(
            f"{where} has format version 1, this imgpack reads {reads}: " + CONVERT_HINT
        )
    raise PackFormatError(
        f"{where} has format version {version!r}, this imgpack reads {reads}: "
        "rebuild the pack with this imgpack or install the imgpack that wrote it"
    )


def encode_shard_header(header: dict[str, Any]) -> bytes:
    check_fields(header, _SHARD_HEADER_FIELDS, "shard header")
    return _pack(header)


def decode_shard_header(raw: bytes | None, where: str) -> dict[str, Any]:
    """Decode and check the header every shard carries, so a shard can be checked on its own."""
    if raw is None:
        raise PackFormatError(f"{where} has no shard header: it is not an imgpack shard")
    header = unpack_bounded(raw, _MAX_META_BYTES, f"{where} shard header")
    if not isinstance(header, dict) or header.get("format") != SHARD_FORMAT:
        raise PackFormatError(f"{where} shard header does not name {SHARD_FORMAT!r}: not a shard")
    _check_version(header.get("format_version"), where, (SHARD_VERSION,))
    check_fields(header, _SHARD_HEADER_FIELDS, f"{where} shard header")
    return header
