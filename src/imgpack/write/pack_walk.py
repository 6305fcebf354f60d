"""The pack stage's walk of the manifest: each record placed, its catalog row gathered in columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.errors import InputError
from imgpack.format.tables import bools_of, catalog_schema, rising
from imgpack.ingest.manifest import manifest_blocks, manifest_rows
from imgpack.ingest.splits import FOLDERS, split_assigner, splits_drawn
from imgpack.util.progress import counter

__all__ = ["plan_records"]

# A manifest as ingest writes it is read a block of rows at a time as Arrow columns, with no
# Python object per row but for records stored anew. A block that does not parse that way (extra
# columns, a damaged line, keys out of order) hands the rest of the walk, from its first row, to
# the row-by-row reader, which names what is wrong and where; both give the same rows.
_FIELDS = ["key", "label", "format", "width", "height", "size", "hash", "duplicate_of", "extra"]
_REQUIRED = ("key", "label", "format", "width", "height", "size", "hash")
_BLOCK_BYTES = 2 << 20  # manifest bytes parsed into one block: Arrow keeps what it parsed with
_BATCH = 4096  # catalog rows handed to the assembler at a time by the row-by-row walk
_NO_EXTRA: dict = {}  # shared by every row of a block: a block has no extra columns


def plan_records(manifest: Path, count: int, planner, sinks, claims, params, splits=None):
    """Catalog rows in key order into the assembler, and (task, task) for each new shard as soon
    as it is cut. `sinks`: the (assembler, alias check) that take rows and aliases; `claims`:
    rows (ordinal, shard, slot) of the records that keep a previous version's image, in order;
    `splits`: the split each manifest row had in the previous version (null where none)."""
    walk = _Walk(planner, sinks, claims, params, counter("pack", count), splits)
    start, previous, rows_from = 0, None, None
    blocks = manifest_blocks(manifest, _FIELDS, _BLOCK_BYTES)
    while (taken := _next_block(blocks, previous)) is not _END:
        if taken is _ROWS:
            blocks.close()
            rows_from = start
            break
        block, last = taken
        yield from walk.block(block, start)
        start += block.num_rows
        previous = last if last is not None else previous
    if rows_from is not None:
        yield from walk.rows(manifest_rows(manifest, rows_from, previous), rows_from)
    walk.bar.close()
    last = planner.finish()
    if last is not None:
        yield last, last


_END, _ROWS = object(), object()


def _next_block(blocks, previous: str | None):
    """(block, its last key) as the block walk takes them; `_END` after the last; `_ROWS` when
    the rest must be read row by row (a block that does not parse, a field missing, keys out of
    order)."""
    try:
        block = next(blocks, None)
    except (pa.ArrowException, ValueError, TypeError):
        return _ROWS
    if block is None:
        return _END
    block = block.combine_chunks()
    if any(block.column(name).null_count for name in _REQUIRED):
        return _ROWS
    if not block.num_rows:
        return block, None
    keys = block.column("key").chunk(0)
    ordered = rising(keys).all()
    first, last = keys[0].as_py(), keys[len(keys) - 1].as_py()
    if not ordered or (previous is not None and first <= previous):
        return _ROWS
    return block, last


class _Walk:
    """The state both walks share: the claims, the split rule, the bar."""

    def __init__(self, planner, sinks, claims: np.ndarray, params, bar, splits=None):
        self.planner, (self.assembler, self.aliases) = planner, sinks
        self.claims = claims
        self.assign = split_assigner(params.split_seed, params.splits)
        self.seed, self.fractions = params.split_seed, params.splits
        self.dedupe = params.duplicates == "dedupe"
        self.kept = planner.previous.kept if planner.previous is not None else {}
        old = max(self.kept, default=-1) + 1
        self.kept_as = np.full(max(old, int(claims[:, 1].max(initial=-1)) + 1), -1, np.int64)
        for shard, number in self.kept.items():
            self.kept_as[shard] = number
        self.splits = splits
        self.bar = bar

    def split(self, key: str) -> str:
        try:
            return self.assign(key)
        except ValueError:
            raise InputError(
                f"{key}: pack.splits is 'folders' but its top folder names no split; rerun the "
                "ingest stage (it reports such files as unknown_split)"
            ) from None

    def claim(self, ordinal: int) -> tuple[int, int] | None:
        """The claim of the record at `ordinal`, if it has one."""
        at = int(np.searchsorted(self.claims[:, 0], ordinal))
        if at < len(self.claims) and self.claims[at, 0] == ordinal:
            return int(self.claims[at, 1]), int(self.claims[at, 2])
        return None

    def block(self, block: pa.Table, start: int):
        """One block of rows as columns: a claimed record in a carried shard keeps its place;
        the others are placed by the planner as columns (yielding the shards they complete);
        aliases go to the assembler. No Python object is made per record but for aliases."""
        n = block.num_rows
        stop = start + n
        c0, c1 = np.searchsorted(self.claims[:, 0], [start, stop])
        claims = self.claims[c0:c1]
        shards, slots = np.full(n, -1, np.int64), np.zeros(n, np.int64)
        new_shard = self.kept_as[claims[:, 1]] if len(claims) else np.zeros(0, np.int64)
        carried = new_shard >= 0
        shards[claims[carried, 0] - start] = new_shard[carried]
        slots[claims[carried, 0] - start] = claims[carried, 2]
        stored = np.ones(n, bool)
        if self.dedupe:
            copies = np.flatnonzero(bools_of(pc.is_valid(block.column("duplicate_of"))))
            for row in _rows(block, copies):
                self._alias(row["key"], row["label"], _NO_EXTRA, row["duplicate_of"])
            stored[copies] = False
        placed = np.flatnonzero(stored & (shards < 0))
        if len(placed):
            # A record of a compacted shard keeps its claim: its bytes are read from there.
            compacted = claims[~carried]
            rows = compacted[:, 0] - start
            at = np.minimum(np.searchsorted(placed, rows), len(placed) - 1)
            hit = placed[at] == rows  # (an alias's claim is not among the records placed)
            older = np.full((len(placed), 2), -1, np.int64)
            older[at[hit]] = compacted[hit, 1:]
            taken = block.take(pa.array(placed))
            got = self.planner.place_block(placed + start, taken, older)
            shards[placed], slots[placed] = got[0], got[1]
            for done in got[2]:
                yield done, done
        if not stored.all():
            block, shards, slots = block.filter(pa.array(stored)), shards[stored], slots[stored]
        columns = [
            block.column("key"),
            block.column("label"),
            self._splits(block.column("key"), np.flatnonzero(stored) + start),
            block.column("format"),
            pc.cast(block.column("width"), pa.int32()),
            pc.cast(block.column("height"), pa.int32()),
            block.column("size"),
            pa.array(shards, pa.int32()),
            pa.array(slots, pa.int32()),
        ]
        self.assembler.add_table(pa.Table.from_arrays(columns, schema=catalog_schema()))
        self.bar.update(n)

    def _splits(self, keys: pa.ChunkedArray, ordinals: np.ndarray) -> pa.Array:
        """Each record's split: as the previous version had it (same key, same split params),
        else drawn here."""
        if self.splits is None:
            return self._drawn(keys.to_pylist())
        known = self.splits.take(pa.array(ordinals))
        if not known.null_count:
            return known
        missing = pc.is_null(known)
        return pc.replace_with_mask(known, missing, self._drawn(keys.filter(missing).to_pylist()))

    def _drawn(self, keys: list[str]) -> pa.Array:
        if self.fractions == FOLDERS:
            return pa.array([self.split(k) for k in keys], pa.string())
        return splits_drawn(keys, self.seed, self.fractions)

    def rows(self, rows, start: int):
        """The rest of the manifest row by row, from ordinal `start`."""
        columns: list[list] = [[] for _ in range(9)]  # add_row's order
        keys, labels, splits, formats, widths, heights, sizes, shards, slots = columns
        extras: list = []
        for ordinal, row in enumerate(rows, start):
            self.bar.update(1)
            if self.dedupe and row["duplicate_of"]:
                self._alias(row["key"], row["label"], row["extra"], row["duplicate_of"])
                continue
            (shard, slot), done = self.planner.place(ordinal, row, self.claim(ordinal))
            if done is not None:
                yield done, done
            keys.append(row["key"])
            labels.append(row["label"])
            splits.append(self.split(row["key"]))
            formats.append(row["format"])
            widths.append(row["width"])
            heights.append(row["height"])
            sizes.append(row["size"])
            shards.append(shard)
            slots.append(slot)
            extras.append(row["extra"])
            if len(extras) >= _BATCH:
                self.assembler.add_rows(columns, extras)
                for column in columns:
                    column.clear()
                extras.clear()
        if extras:
            self.assembler.add_rows(columns, extras)

    def _alias(self, key: str, label: Any, extra: dict, copy: str) -> None:
        self.assembler.add_alias(key, copy)
        self.aliases.add({"key": key, "label": label, "extra": extra, "duplicate_of": copy})


def _rows(block: pa.Table, at: np.ndarray) -> list[dict]:
    """The rows at positions `at` as dicts, made in one call."""
    return block.take(pa.array(at, pa.int64())).to_pylist() if len(at) else []
