"""`imgpack convert`: rewrite a version-1 pack as version 3, record for record, byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import PackCorruptError, PackFormatError
from imgpack.format.codec import decode_index, unpack_bounded
from imgpack.format.version1 import V1_SUBDBS, decode_meta_v1
from imgpack.ingest.probe import digest
from imgpack.read.handles import check_pack_file
from imgpack.util.progress import progress
from imgpack.write.builder import PackBuilder
from imgpack.write.layout import ShardLayout

__all__ = ["convert_pack"]


def convert_pack(old: str | Path, new: str | Path, shard_mb: float = 64) -> dict[str, Any]:
    """Read the version-1 pack `old` (read-only) and publish the same records as `new`."""
    old, new = Path(old), Path(new)
    if old.resolve() == new.resolve():
        raise PackFormatError(f"{old}: convert writes a new pack; give another path for NEW")
    check_pack_file(old)
    try:
        env = lmdb.open(str(old), subdir=False, readonly=True, lock=False, max_dbs=len(V1_SUBDBS))
    except lmdb.Error as exc:
        raise PackFormatError(f"{old} is not a readable LMDB file ({exc})") from None
    try:
        with env.begin(buffers=False) as txn:
            try:
                dbs = {n.decode(): env.open_db(n, txn=txn, create=False) for n in V1_SUBDBS}
            except lmdb.Error:
                raise PackFormatError(f"{old} is not a version-1 imgpack pack") from None
            header = unpack_bounded(
                txn.get(b"header", db=dbs["header"]) or b"\xc0", 64 << 20, str(old)
            )
            if not isinstance(header, dict) or header.get("format_version") != 1:
                raise PackFormatError(f"{old} is not a version-1 imgpack pack: nothing to convert")
            return _copy(txn, dbs, header, old, new, shard_mb)
    finally:
        env.close()


def _copy(txn, dbs, header, old: Path, new: Path, shard_mb: float) -> dict[str, Any]:
    algorithm = header["hash_algorithm"]
    images = txn.cursor(dbs["images"])
    images.first()
    with PackBuilder(new, algorithm, ShardLayout.for_shard_mb(shard_mb, 32 << 20)) as builder:
        count = header["count"]
        for raw_index, raw_meta in progress(txn.cursor(dbs["meta"]), "convert", count):
            index = decode_index(raw_index)
            meta = decode_meta_v1(raw_meta, f"record {index} of {old}")
            if images.key() != raw_index:
                raise PackCorruptError(f"{old}: images and metadata disagree at record {index}")
            data = images.value()
            images.next()
            if digest(data, algorithm) != meta["hash"]:
                raise PackCorruptError(f"{old}: record {meta['key']} does not match its hash")
            builder.add(
                meta["key"],
                data,
                digest=bytes.fromhex(meta["hash"]),
                format=meta["format"],
                width=meta["width"],
                height=meta["height"],
                label=meta["label"],
                split=meta["split"],
                extra=meta["extra"],
            )
        for raw_alias, raw_key in txn.cursor(dbs["aliases"]):
            builder.add_alias(raw_alias.decode(), raw_key.decode())
        return builder.publish(
            params_digest=header.get("params_digest", ""),
            manifest_digest=header.get("manifest_digest", ""),
        )
