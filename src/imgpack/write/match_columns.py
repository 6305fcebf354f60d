"""Match a version's records to the previous version's images as whole columns: keys joined by a
hash table, digests compared as numpy rows; only records left over go through SQLite."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.errors import ImgpackError, InputError
from imgpack.format.tables import numpy_of
from imgpack.ingest.manifest import manifest_blocks
from imgpack.write.matching import Digests, Match, PreviousDamaged, by_digest

__all__ = ["NewRecords", "new_records", "match_columns", "hex_to_raw"]

_NIBBLE = np.full(256, 255, np.uint8)
for _n, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _n
for _n, _c in enumerate(b"ABCDEF", 10):
    _NIBBLE[_c] = _n


def hex_to_raw(column: pa.Array) -> np.ndarray:
    """A column of hex digests of one length as rows of raw bytes; ValueError if one is not."""
    if column.null_count or not len(column):
        if not len(column):
            return np.zeros((0, 0), np.uint8)
        raise ValueError("a digest is missing")
    offsets = _offsets(column)
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if width % 2 or (lengths != width).any():
        raise ValueError("digests of different lengths")
    data = np.frombuffer(
        column.buffers()[2], np.uint8, int(offsets[-1] - offsets[0]), int(offsets[0])
    )
    nibbles = _NIBBLE[data].reshape(len(column), width)
    if (nibbles == 255).any():
        raise ValueError("a digest is not hex")
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def _offsets(column: pa.Array) -> np.ndarray:
    kind = np.int64 if pa.types.is_large_string(column.type) else np.int32
    return np.frombuffer(
        column.buffers()[1], kind, len(column) + 1, column.offset * np.dtype(kind).itemsize
    ).astype(np.int64)


@dataclass
class NewRecords:
    """The manifest's records to store (aliases left out when deduplicating), as columns."""

    keys: pa.Array
    digests: np.ndarray  # raw, a row per record
    sizes: np.ndarray
    ordinals: np.ndarray  # each record's row in the manifest (aliases count)
    rows: int  # the manifest's rows, aliases too


def new_records(manifest: Path, dedupe: bool) -> NewRecords:
    """The manifest's records to store; TypeError or ValueError for a manifest the row reader
    must name the fault of (a field missing, a digest not hex); InputError for keys out of order."""
    keys, digests, sizes, ordinals, start = [], [], [], [], 0
    for block in manifest_blocks(manifest, ["key", "hash", "size", "duplicate_of"]):
        block = block.combine_chunks()
        if any(block.column(name).null_count for name in ("key", "hash", "size")):
            raise TypeError("a field is missing")
        rows = np.arange(start, start + block.num_rows)
        start += block.num_rows
        keep = ~_valid(block.column("duplicate_of")) if dedupe else None
        if keep is not None and not keep.all():
            block, rows = block.filter(pa.array(keep)), rows[keep]
        keys.append(block.column("key").chunk(0) if block.num_rows else pa.array([], pa.string()))
        digests.append(hex_to_raw(block.column("hash").chunk(0)) if block.num_rows else None)
        sizes.append(numpy_of(block.column("size")))
        ordinals.append(rows)
    all_keys = pa.chunked_array(keys, pa.string()).combine_chunks()
    _check_order(all_keys, manifest, np.concatenate(ordinals) if ordinals else np.zeros(0, int))
    widths = {d.shape[1] for d in digests if d is not None and len(d)}
    if len(widths) > 1:
        raise ValueError("digests of different lengths")
    width = widths.pop() if widths else 0
    return NewRecords(
        all_keys,
        np.concatenate([d for d in digests if d is not None] or [np.zeros((0, width), np.uint8)]),
        np.concatenate(sizes or [np.zeros(0, np.int64)]).astype(np.int64),
        np.concatenate(ordinals or [np.zeros(0, np.int64)]).astype(np.int64),
        start,
    )


def _valid(column: pa.ChunkedArray) -> np.ndarray:
    return numpy_of(pc.cast(pc.is_valid(column), pa.int8())).astype(bool)


def _check_order(keys: pa.Array, manifest: Path, ordinals: np.ndarray) -> None:
    """Keys in strictly ascending order, as ingest writes them; else the line that is not."""
    if len(keys) < 2:
        return
    ascending = _valid_true(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1)))
    if not ascending.all():
        line = int(ordinals[int(np.flatnonzero(~ascending)[0]) + 1]) + 2
        raise InputError(f"{manifest}:{line}: keys are not in ascending order")


def _valid_true(column) -> np.ndarray:
    return numpy_of(pc.cast(column.fill_null(False), pa.int8())).astype(bool)


def match_columns(pack, new: NewRecords, db: sqlite3.Connection, scratch: Path) -> Match:
    """Claims of `new` records on the images of `pack`, the open previous version: a record
    keeps the image its key had when the digest is the same; the records left over take
    unclaimed images of their digest (`by_digest`)."""
    match = Match(scratch / "claims.bin", scratch / "by-digest.bin")
    match.by_digest_path.write_bytes(b"")
    digests = Digests(pack)
    old_keys, old_shards, old_slots = _old_records(pack, digests)
    at = numpy_of(pc.index_in(new.keys, value_set=old_keys).fill_null(-1)).astype(np.int64)
    found = np.flatnonzero(at >= 0)
    match.previous_rows = np.full(new.rows, -1, np.int64)
    match.previous_rows[new.ordinals] = at
    starts = np.concatenate([[0], np.cumsum(digests.counts)]).astype(np.int64)
    every = (
        np.frombuffer(b"".join(digests.raw), np.uint8).reshape(-1, digests.width)
        if digests.total
        else np.zeros((0, digests.width), np.uint8)
    )
    if new.digests.shape[1] != digests.width and len(found):
        raise PreviousDamaged  # another digest algorithm: nothing can be claimed
    places = starts[old_shards[at[found]]] + old_slots[at[found]]
    same = (new.digests[found] == every[places]).all(axis=1)
    claimed, places = found[same], places[same]
    shards, slots = old_shards[at[claimed]], old_slots[at[claimed]]
    np.column_stack([new.ordinals[claimed], shards, slots]).astype(np.int64).tofile(
        match.claims_path
    )
    match.stored, match.stored_bytes = len(new.sizes), int(new.sizes.sum())
    live = np.bincount(shards, minlength=len(digests.counts))
    weight = np.bincount(shards, new.sizes[claimed], minlength=len(digests.counts))
    match.live = {int(s): int(live[s]) for s in np.flatnonzero(live)}
    match.claimed_bytes = {int(s): int(weight[s]) for s in np.flatnonzero(live)}
    left = np.ones(len(new.sizes), bool)
    left[claimed] = False
    db.execute("CREATE TABLE left_new (ordinal INTEGER PRIMARY KEY, hash BLOB, size INT)")
    rows = np.flatnonzero(left)
    db.executemany(
        "INSERT INTO left_new VALUES (?, ?, ?)",
        zip(
            new.ordinals[rows].tolist(),
            (new.digests[r].tobytes() for r in rows),
            new.sizes[rows].tolist(),
            strict=True,
        ),
    )
    if len(rows) and digests.total - len(claimed):  # records and images left: by digest
        by_digest(db, digests, match)
    return match


def _old_records(pack, digests: Digests) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The previous catalog's keys, shards and slots; PreviousDamaged when keys are not strictly
    ascending or a place is outside its shard."""
    try:
        parts = [part for _, part in pack.catalog.tables(["key", "shard", "slot"])]
    except ImgpackError:
        raise PreviousDamaged from None
    table = pa.concat_tables(parts).combine_chunks() if parts else None
    if table is None or not table.num_rows:
        return pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = table.column("key").chunk(0)
    shards = numpy_of(table.column("shard")).astype(np.int64)
    slots = numpy_of(table.column("slot")).astype(np.int64)
    if (
        len(keys) > 1
        and not _valid_true(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1))).all()
    ):
        raise PreviousDamaged  # a key twice, or out of order
    counts = np.asarray(digests.counts, np.int64)
    if (shards < 0).any() or (shards >= len(counts)).any():
        raise PreviousDamaged
    if (slots < 0).any() or (slots >= counts[shards]).any():
        raise PreviousDamaged  # the catalog points outside its shards
    return keys, shards, slots
