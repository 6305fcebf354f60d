"""One shard as one unit of work: its images from raw files, a spool or an older shard, written and sealed.

A task is plain data, so a worker process (or a cluster worker) can run it, and its finished file
is named by what it holds: a rerun after a crash finds the shards already written and keeps them.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from pathlib import Path
from typing import Any

from imgpack.format.codec import SHARD_FORMAT, SHARD_VERSION, encode_index, encode_shard_header
from imgpack.util.digests import file_digest
from imgpack.write.lmdbfile import LmdbFileWriter

__all__ = ["ShardWriter", "open_sealing", "shard_entry", "ENTRY_FIELDS"]

_ONLY = encode_index(0)
_SHARD_HEADER_KEY = b"shard"


class ShardWriter:
    """One shard: images under their slot, and their properties (digest, size, format, w, h)."""

    def __init__(
        self,
        path: Path,
        error_path: Path,
        map_size: int,
        batch_bytes: int,
        check: bool = False,
    ):
        self.file = LmdbFileWriter(path, map_size, error_path, batch_bytes, check=check)
        self.file.create(b"images")
        self.count = 0
        self.image_bytes = 0
        self.digests = bytearray()
        self.sizes = array("q")
        self.widths = array("i")
        self.heights = array("i")
        self.formats: list[str] = []

    def add(self, data: bytes, digest: bytes, fmt: str, width: int, height: int) -> int:
        slot = self.count
        self.file.put(b"images", encode_index(slot), data)
        self.digests += digest
        self.sizes.append(len(data))
        self.widths.append(width)
        self.heights.append(height)
        self.formats.append(fmt)
        self.count += 1
        self.image_bytes += len(data)
        return slot

    def seal(self, hash_algorithm: str) -> None:
        """Commit the images and close the file, then queue the shard's header and property
        table in the file opened again (`open_sealing`); the caller closes it."""
        self.file.close(durable=False)
        images = self.file
        self.file = open_sealing(
            images.path,
            images.error_path,
            images.map_size,
            images.batch_bytes,
            images.check,
            hash_algorithm,
            bytes(self.digests),
            self.sizes,
            self.formats,
            self.widths,
            self.heights,
        )
        self.file.grown = images.grown


def open_sealing(
    path, error_path, map_size, batch_bytes, check, hash_algorithm, digests, sizes, formats, w, h
) -> LmdbFileWriter:
    """A shard whose images are committed and whose file is closed, opened again with its
    property table and header queued: the caller closes it.

    Sealing is a transaction of its own in a file opened anew, so a shard has the same bytes
    whether the process that wrote its images seals it or another does: a fresh build's workers
    write images only (no Arrow to import) and its own process seals.
    """
    import pyarrow as pa

    from imgpack.format import tables as cat

    digest_size = hashlib.new(hash_algorithm).digest_size
    count = len(sizes)
    props = pa.table(
        [
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(digest_size), count, [None, pa.py_buffer(digests)]
            ),
            pa.array(sizes, pa.int64()),
            pa.array(formats, pa.string()),
            pa.array(w, pa.int32()),
            pa.array(h, pa.int32()),
        ],
        schema=cat.props_schema(digest_size),
    )
    header = {
        "format": SHARD_FORMAT,
        "format_version": SHARD_VERSION,
        "count": count,
        "hash_algorithm": hash_algorithm,
        "image_bytes": sum(sizes),
    }
    file = LmdbFileWriter(path, map_size, error_path, batch_bytes, existing=True, check=check)
    try:
        file.put(b"props", _ONLY, cat.encode_table(props))
        file.put(b"shard", _SHARD_HEADER_KEY, encode_shard_header(header))
    except BaseException:
        file.abort()
        raise
    return file


ENTRY_FIELDS = ("count", "image_bytes", "file_bytes", "sha256")  # a header entry but its name


def shard_entry(path: str | Path, count: int, image_bytes: int) -> dict[str, Any]:
    """A finished shard file's entry in the pack header's `shards` (the assembler names it)."""
    return {
        "count": count,
        "image_bytes": image_bytes,
        "file_bytes": os.path.getsize(path),
        "sha256": file_digest(Path(path)),
    }
