"""The version-1 layout, read only by `imgpack convert`: one file, msgpack metadata per record."""

from __future__ import annotations

from typing import Any

from imgpack.format.codec import check_fields, unpack_bounded

__all__ = ["V1_SUBDBS", "decode_meta_v1"]

V1_SUBDBS = (b"header", b"images", b"meta", b"keys", b"aliases")
_MAX_META_BYTES = 1 << 20
_META_FIELDS = {
    "key": str,
    "label": str,
    "hash": str,
    "size": int,
    "format": str,
    "width": int,
    "height": int,
    "split": str,
    "extra": dict,
}


def decode_meta_v1(raw: bytes, where: str = "record") -> dict[str, Any]:
    """A version-1 record's msgpack metadata, bounded and type-checked like every pack value."""
    meta = unpack_bounded(raw, _MAX_META_BYTES, f"metadata of {where}")
    check_fields(meta, _META_FIELDS, f"metadata of {where}")
    return meta
