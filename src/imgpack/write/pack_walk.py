"""The pack stage's walk of the manifest: each record placed, its catalog row gathered in columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from imgpack.errors import InputError
from imgpack.ingest.manifest import manifest_blocks, manifest_rows
from imgpack.ingest.splits import split_assigner
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


def plan_records(manifest: Path, count: int, planner, sinks, claimed, params):
    """Catalog rows in key order into the assembler, and (task, task) for each new shard as soon
    as it is cut. `sinks`: the (assembler, alias check) that take rows and aliases; `claimed`:
    (ordinal, shard, slot) of the records that keep a previous version's image, in order."""
    walk = _Walk(planner, sinks, claimed, params, counter("pack", count))
    start, previous, rows_from = 0, None, None
    if planner.spool is not None:  # a spool's entries are read row by row, beside the rows
        rows_from = 0
    else:
        blocks = manifest_blocks(manifest, _FIELDS, _BLOCK_BYTES)
        while (taken := _next_block(blocks, previous)) is not _END:
            if taken is _ROWS:
                blocks.close()
                rows_from = start
                break
            block, keys = taken
            yield from walk.block(block, keys, start)
            start += len(keys)
            previous = keys[-1] if keys else previous
    if rows_from is not None:
        yield from walk.rows(manifest_rows(manifest, rows_from, previous), rows_from)
    walk.bar.close()
    last = planner.finish()
    if last is not None:
        yield last, last


_END, _ROWS = object(), object()


def _next_block(blocks, previous: str | None):
    """(block, its keys) as the block walk takes them; `_END` after the last; `_ROWS` when the
    rest must be read row by row (a block that does not parse, a field missing, keys out of order)."""
    try:
        block = next(blocks, None)
    except (pa.ArrowException, ValueError, TypeError):
        return _ROWS
    if block is None:
        return _END
    if any(block.column(name).null_count for name in _REQUIRED):
        return _ROWS
    keys = block.column("key").to_pylist()
    ordered = all(a < b for a, b in zip(keys, keys[1:], strict=False))
    if not ordered or (previous is not None and keys and keys[0] <= previous):
        return _ROWS
    return block, keys


class _Walk:
    """The state both walks share: the next claim, the split rule, the bar."""

    def __init__(self, planner, sinks, claimed, params, bar):
        self.planner, (self.assembler, self.aliases) = planner, sinks
        self.claimed, self.pending = claimed, next(claimed, None)
        self.assign = split_assigner(params.split_seed, params.splits)
        self.dedupe = params.duplicates == "dedupe"
        self.kept = planner.previous.kept if planner.previous is not None else {}
        self.bar = bar

    def split(self, key: str) -> str:
        try:
            return self.assign(key)
        except ValueError:
            raise InputError(
                f"{key}: pack.splits is 'folders' but its top folder names no split; rerun the "
                "ingest stage (it reports such files as unknown_split)"
            ) from None

    def block(self, block, keys: list[str], start: int):
        """One block of rows: a claimed record in a carried shard keeps its place, others are
        placed by the planner (yielding the shards they complete)."""
        labels, formats, widths, heights, sizes, hashes = (
            block.column(name).to_pylist() for name in _REQUIRED[1:]
        )
        copies = block.column("duplicate_of").to_pylist() if self.dedupe else None
        shards, slots, aliased = [0] * len(keys), [0] * len(keys), []
        pending, claimed, kept, place = self.pending, self.claimed, self.kept, self.planner.place
        for i, key in enumerate(keys):
            ordinal = start + i
            if copies is not None and copies[i]:
                self._alias(key, labels[i], _NO_EXTRA, copies[i])
                aliased.append(i)
                continue
            claim = None
            if pending is not None and pending[0] == ordinal:
                claim, pending = pending[1:], next(claimed, None)
                if claim[0] in kept:  # in a shard carried over: no row needed
                    shards[i], slots[i] = kept[claim[0]], claim[1]
                    continue
            row = {"key": key, "size": sizes[i], "hash": hashes[i], "format": formats[i]}
            row["width"], row["height"] = widths[i], heights[i]
            (shards[i], slots[i]), done = place(ordinal, row, claim)
            if done is not None:
                self.pending = pending
                yield done, done
        self.pending = pending
        columns = [keys, labels, None, formats, widths, heights, sizes, shards, slots]
        if aliased:
            skip = set(aliased)
            columns = [
                None if c is None else [v for i, v in enumerate(c) if i not in skip]
                for c in columns
            ]
        columns[2] = [self.split(key) for key in columns[0]]
        self.assembler.add_rows(columns, [_NO_EXTRA] * len(columns[0]))
        self.bar.update(len(keys))

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
            claim = None
            if self.pending is not None and self.pending[0] == ordinal:
                claim, self.pending = self.pending[1:], next(self.claimed, None)
            (shard, slot), done = self.planner.place(ordinal, row, claim)
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
        self.planner.skip()
