"""Match a version's records to the previous version's images as whole columns: keys joined by a
hash table, digests compared as numpy rows; only records left over go through SQLite."""

from __future__ import annotations

import bisect
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.errors import ImgpackError, InputError
from imgpack.format.tables import bools_of, numpy_of, rising
from imgpack.ingest.manifest import ALL_FIELDS, manifest_blocks
from imgpack.write.matching import Digests, Match, PreviousDamaged, by_digest, match_rows

__all__ = ["match_records", "NewRecords", "new_records", "match_columns", "hex_to_raw"]

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


def match_records(
    pack, manifest: Path, dedupe: bool, db: sqlite3.Connection, scratch: Path
) -> Match | None:
    """Claims of the manifest's records (aliases skipped when `dedupe`) on the images of `pack`,
    an open previous version; None when that version turns out damaged."""
    try:
        # Every field first (the readers after this one then need not parse the manifest);
        # rows with extra columns refuse that, and are read for the four fields a match needs.
        for fields in (ALL_FIELDS, _FIELDS):
            with contextlib.suppress(pa.ArrowException, ValueError, TypeError):
                return match_columns(pack, new_records(manifest, dedupe, fields), db, scratch)
            db.execute("DROP TABLE IF EXISTS left_new")
        return match_rows(pack, manifest, dedupe, db, scratch)
    except PreviousDamaged:
        return None


@dataclass
class NewRecords:
    """A block of the manifest's records to store (aliases left out when deduplicating)."""

    keys: pa.Array
    digests: np.ndarray  # raw, a row per record
    sizes: np.ndarray
    ordinals: np.ndarray  # each record's row in the manifest (aliases count)


_FIELDS = ["key", "hash", "size", "duplicate_of"]


def new_records(manifest: Path, dedupe: bool, fields: list[str] = _FIELDS):
    """The manifest's records to store, a block at a time; then the number of its rows.
    TypeError or ValueError for a manifest the row reader must name the fault of (a field
    missing, a digest not hex); InputError for keys out of order."""
    start, last = 0, None
    for block in manifest_blocks(manifest, fields):
        block = block.combine_chunks()
        if any(block.column(name).null_count for name in ("key", "hash", "size")):
            raise TypeError("a field is missing")
        if not block.num_rows:
            continue
        rows = np.arange(start, start + block.num_rows)
        start += block.num_rows
        keys = block.column("key").chunk(0)
        _check_order(keys, last, manifest, rows[0])
        last = keys[len(keys) - 1].as_py()
        keep = ~bools_of(pc.is_valid(block.column("duplicate_of"))) if dedupe else None
        if keep is not None and not keep.all():
            block, rows = block.filter(pa.array(keep)), rows[keep]
            keys = block.column("key").chunk(0) if block.num_rows else pa.array([], pa.string())
        digests = hex_to_raw(block.column("hash").chunk(0)) if block.num_rows else None
        sizes = numpy_of(block.column("size")).astype(np.int64)
        yield NewRecords(keys, digests, sizes, rows)
    yield start


def _check_order(keys: pa.Array, previous: str | None, manifest: Path, first: int) -> None:
    """Keys in strictly ascending order, as ingest writes them; else the line that is not."""
    if previous is not None and len(keys) and keys[0].as_py() <= previous:
        raise InputError(f"{manifest}:{first + 2}: keys are not in ascending order")
    ascending = rising(keys)
    if not ascending.all():
        line = first + int(np.flatnonzero(~ascending)[0]) + 1 + 2
        raise InputError(f"{manifest}:{line}: keys are not in ascending order")


def match_columns(pack, blocks, db: sqlite3.Connection, scratch: Path) -> Match:
    """Claims of the new records (`new_records`) on the images of `pack`, the open previous
    version: a record keeps the image its key had when the digest is the same; the records
    left over take unclaimed images of their digest (`by_digest`). Both sides are in key
    order, so each block of records is joined with the previous records of its key range."""
    match = Match(scratch / "claims.bin", scratch / "by-digest.bin")
    match.by_digest_path.write_bytes(b"")
    digests = Digests(pack)
    old_keys, old_shards, old_slots = _old_records(pack, digests)
    shard_digests = [np.frombuffer(raw, np.uint8).reshape(-1, digests.width) for raw in digests.raw]
    db.execute("CREATE TABLE left_new (ordinal INTEGER PRIMARY KEY, hash BLOB, size INT)")
    live = np.zeros(len(digests.counts), np.int64)
    weight = np.zeros(len(digests.counts), np.int64)
    previous_rows, claimed_count = [], 0
    with open(match.claims_path, "wb") as claims:
        for new in blocks:
            if isinstance(new, int):
                rows = new
                break
            if not len(new.keys):
                continue
            lo = _first_at(old_keys, new.keys[0].as_py())
            hi = _first_at(old_keys, new.keys[len(new.keys) - 1].as_py(), lo, right=True)
            local = pc.index_in(new.keys, value_set=old_keys.slice(lo, hi - lo).combine_chunks())
            at = numpy_of(local.fill_null(-1)).astype(np.int64)
            at[at >= 0] += lo
            same = np.zeros(len(at), bool)
            found = np.flatnonzero(at >= 0)
            shards, slots = old_shards[at[found]], old_slots[at[found]]
            if len(found) and new.digests.shape[1] != digests.width:
                raise PreviousDamaged  # another digest algorithm: nothing can be claimed
            for shard in np.unique(shards).tolist():
                mine = shards == shard
                kept = shard_digests[shard][slots[mine]] == new.digests[found[mine]]
                same[found[mine]] = kept.all(axis=1)
            claimed = np.flatnonzero(same)
            shards, slots = old_shards[at[claimed]], old_slots[at[claimed]]
            np.column_stack([new.ordinals[claimed], shards, slots]).astype(np.int64).tofile(claims)
            live += np.bincount(shards, minlength=len(live))
            weight += np.bincount(shards, new.sizes[claimed], minlength=len(live)).astype(np.int64)
            claimed_count += len(claimed)
            previous_rows.append((new.ordinals, at))
            match.stored += len(new.sizes)
            match.stored_bytes += int(new.sizes.sum())
            left = np.ones(len(new.sizes), bool)
            left[claimed] = False
            _left_new(db, new, np.flatnonzero(left))
        else:
            rows = 0
    match.previous_rows = np.full(rows, -1, np.int64)
    for ordinals, at in previous_rows:
        match.previous_rows[ordinals] = at
    match.live = {int(s): int(live[s]) for s in np.flatnonzero(live)}
    match.claimed_bytes = {int(s): int(weight[s]) for s in np.flatnonzero(live)}
    if match.stored - claimed_count and digests.total - claimed_count:  # both left: by digest
        by_digest(db, digests, match)
    return match


def _first_at(keys: pa.ChunkedArray, key: str, lo: int = 0, right: bool = False) -> int:
    find = bisect.bisect_right if right else bisect.bisect_left
    return find(range(len(keys)), key, lo, key=lambda i: keys[i].as_py())


def _left_new(db: sqlite3.Connection, new: NewRecords, rows: np.ndarray) -> None:
    db.executemany(
        "INSERT INTO left_new VALUES (?, ?, ?)",
        zip(
            new.ordinals[rows].tolist(),
            (new.digests[r].tobytes() for r in rows),
            new.sizes[rows].tolist(),
            strict=True,
        ),
    )


def _old_records(pack, digests: Digests) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    """The previous catalog's keys (a chunk per part), shards and slots; PreviousDamaged when
    keys are not strictly ascending or a place is outside its shard."""
    keys, shards, slots, last = [], [], [], None
    try:
        for _, part in pack.catalog.tables(["key", "shard", "slot"]):
            if not part.num_rows:
                continue
            part = part.combine_chunks()
            chunk = part.column("key").chunk(0)
            if last is not None and chunk[0].as_py() <= last:
                raise PreviousDamaged  # a key twice, or out of order
            n = len(chunk)
            if not rising(chunk).all():
                raise PreviousDamaged
            last = chunk[n - 1].as_py()
            keys.append(chunk)
            shards.append(numpy_of(part.column("shard")))
            slots.append(numpy_of(part.column("slot")))
    except ImgpackError:
        raise PreviousDamaged from None
    shards = np.concatenate(shards or [np.zeros(0, np.int32)]).astype(np.int64)
    slots = np.concatenate(slots or [np.zeros(0, np.int32)]).astype(np.int64)
    counts = np.asarray(digests.counts, np.int64)
    if (shards < 0).any() or (shards >= len(counts)).any():
        raise PreviousDamaged
    if (slots < 0).any() or (slots >= counts[shards]).any():
        raise PreviousDamaged  # the catalog points outside its shards
    return pa.chunked_array(keys, pa.string()), shards, slots
