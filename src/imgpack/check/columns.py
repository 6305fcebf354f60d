"""Validate's columnar check: manifest and catalog compared a block at a time with Arrow. It only
ever answers "all equal"; on any doubt validate checks record by record and names the offenders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.ingest.manifest import manifest_blocks

__all__ = ["all_equal"]

_BLOCK = 8 << 20  # manifest bytes parsed at a time: memory stays flat
_COMPARED = ("key", "label", "format", "size", "width", "height")
# Every field a row has: one with extra columns does not parse (the check is not for those).
_FIELDS = [*_COMPARED, "hash", "duplicate_of", "extra"]


class _Catalog:
    """The catalog's compared columns, taken a given number of rows at a time."""

    def __init__(self, pack):
        self.parts = (table for _, table in pack.catalog.tables([*_COMPARED, "hash"]))
        self.held: pa.Table | None = None

    def take(self, size: int) -> pa.Table | None:
        """The next `size` rows; None when fewer are left."""
        held = [self.held] if self.held is not None else []
        count = sum(t.num_rows for t in held)
        while count < size:
            part = next(self.parts, None)
            if part is None:
                return None
            held.append(part)
            count += part.num_rows
        joined = pa.concat_tables(held) if len(held) > 1 else held[0]
        self.held = joined.slice(size)
        return joined.slice(0, size)

    def exhausted(self) -> bool:
        return (self.held is None or self.held.num_rows == 0) and next(self.parts, None) is None


def _equal(left: pa.Array, right: pa.Array) -> bool:
    if left.null_count or right.null_count:
        return False  # nulls compare as unknown: leave them to the record-by-record check
    return bool(pc.all(pc.equal(left, right.cast(left.type))).as_py())


def _hashes_equal(hex_text: pa.Array, digests: pa.Array) -> bool:
    """Hex strings against fixed-size digests, as one comparison of their concatenations."""
    if hex_text.null_count or digests.null_count:
        return False
    hex_text, digests = hex_text.combine_chunks(), digests.combine_chunks()
    width = 2 * digests.type.byte_width
    lengths = pc.binary_length(hex_text)
    if not _equal(lengths, pa.array(np.full(len(hex_text), width), lengths.type)):
        return False
    offsets = np.frombuffer(hex_text.buffers()[1], np.int32)
    first, last = offsets[hex_text.offset], offsets[hex_text.offset + len(hex_text)]
    text = hex_text.buffers()[2].to_pybytes()[first:last]
    start, size = digests.offset * digests.type.byte_width, len(digests) * digests.type.byte_width
    return text == digests.buffers()[1].to_pybytes()[start : start + size].hex().encode()


def all_equal(pack, manifest: Path) -> bool:
    """True when every manifest row and catalog record agree in key, hash, label, format, size,
    width and height, in the same order, and neither has extra columns, aliases or nulls; False
    on any difference or doubt."""
    if pack.header["aliases"] or pack.catalog.extra_columns:
        return False
    try:
        catalog = _Catalog(pack)
        for block in manifest_blocks(manifest, _FIELDS, _BLOCK):
            stored = catalog.take(block.num_rows)
            if stored is None or block.column("extra").type != pa.struct([]):
                return False
            for name in _COMPARED:
                if not _equal(block.column(name).combine_chunks(), stored.column(name)):
                    return False
            if not _hashes_equal(block.column("hash"), stored.column("hash")):
                return False
        return catalog.exhausted()
    except (pa.ArrowException, OSError, ValueError):
        return False
