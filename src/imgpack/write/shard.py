"""One shard file: its images under their slots, then sealed with their properties and its header."""

# Every writer of shards (pack, one pass, the builder) writes them here, so a shard has the same
# bytes whichever path wrote it.

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpack.format.codec import SHARD_FORMAT, SHARD_VERSION, encode_index, encode_shard_header
from imgpack.util.digests import file_digest
from imgpack.write.lmdbfile import LmdbFileWriter

__all__ = ["ShardProps", "ShardWriter", "open_sealing", "shard_entry", "ENTRY_FIELDS"]

_ONLY = encode_index(0)
_SHARD_HEADER_KEY = b"shard"


@dataclass(frozen=True, slots=True)
class ShardProps:
    """A shard's per-image properties in slot order, as its props table holds them: gathered by
    `ShardWriter`, sent back by a fresh build's worker, sealed into the shard, put in the catalog."""

    digests: bytes | bytearray  # the images' digests, concatenated
    sizes: MutableSequence[int]
    formats: list[str]
    widths: MutableSequence[int]
    heights: MutableSequence[int]

    @classmethod
    def gathering(cls) -> ShardProps:
        """Empty, in compact arrays, to be appended to."""
        return cls(bytearray(), array("q"), [], array("i"), array("i"))

    def as_lists(self) -> ShardProps:
        """The same in bytes and plain lists: how they travel between processes and into the catalog."""
        return ShardProps(
            bytes(self.digests),
            list(self.sizes),
            list(self.formats),
            list(self.widths),
            list(self.heights),
        )


class ShardWriter:
    """One shard: images under their slot, and their properties (`ShardProps`)."""

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
        self.props = ShardProps.gathering()

    def add(self, data: bytes, digest: bytes, fmt: str, width: int, height: int) -> int:
        slot = self.count
        self.file.put(b"images", encode_index(slot), data)
        props = self.props
        props.digests.extend(digest)
        props.sizes.append(len(data))
        props.widths.append(width)
        props.heights.append(height)
        props.formats.append(fmt)
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
            self.props,
            hash_algorithm,
            error_path=images.error_path,
            map_size=images.map_size,
            batch_bytes=images.batch_bytes,
            check=images.check,
        )
        self.file.grown = images.grown


def open_sealing(
    path: Path,
    props: ShardProps,
    hash_algorithm: str,
    *,
    error_path: Path | str,
    map_size: int,
    batch_bytes: int,
    check: bool,
) -> LmdbFileWriter:
    """A shard whose images are committed and whose file is closed, opened again with its
    property table and header queued: the caller closes it. `map_size`: the closed file's (it
    may have grown past its layout's).

    Sealing is a transaction of its own in a file opened anew, so a shard has the same bytes
    whether the process that wrote its images seals it or another does: a fresh build's workers
    write images only (no Arrow to import) and its own process seals.
    """
    import pyarrow as pa

    from imgpack.format import tables as cat

    digest_size = hashlib.new(hash_algorithm).digest_size
    count = len(props.sizes)
    table = pa.table(
        [
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(digest_size), count, [None, pa.py_buffer(bytes(props.digests))]
            ),
            pa.array(props.sizes, pa.int64()),
            pa.array(props.formats, pa.string()),
            pa.array(props.widths, pa.int32()),
            pa.array(props.heights, pa.int32()),
        ],
        schema=cat.props_schema(digest_size),
    )
    header = {
        "format": SHARD_FORMAT,
        "format_version": SHARD_VERSION,
        "count": count,
        "hash_algorithm": hash_algorithm,
        "image_bytes": sum(props.sizes),
    }
    file = LmdbFileWriter(path, map_size, error_path, batch_bytes, existing=True, check=check)
    try:
        file.put(b"props", _ONLY, cat.encode_table(table))
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
