"""Plan a version's shards: which shards of the previous version carry over, what new shards hold."""

# Records are matched to the previous version's stored images by key and digest, then by digest
# alone (a renamed file costs nothing). A previous shard is carried over, byte for byte, while its
# live share is at least `pack.compact_below`; every other record is stored anew, in key order, in
# new shards cut by size exactly as a from-scratch build cuts them.

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.check.validated import ValidatedShards
from imgpack.errors import ImgpackError, InputError
from imgpack.format.codec import SHARD_IMAGES
from imgpack.ingest.spool import read_index, spool_file, spooled_at
from imgpack.params import PackParams
from imgpack.util.digests import file_digest
from imgpack.util.urls import join
from imgpack.write.layout import ShardLayout, image_text, resume_at
from imgpack.write.match_columns import match_records
from imgpack.write.matching import Match
from imgpack.write.pack_shard import ShardTask, Sources

__all__ = ["Previous", "load_previous", "damaged_shards", "match_previous", "Planner"]


@dataclass
class Previous:
    """The previous version's shards: paths and header entries, and which survive."""

    path: Path
    shard_paths: list[Path]
    entries: list[dict[str, Any]]
    params_digest: str | None = None  # of the params it was built with
    kept: dict[int, int] = field(default_factory=dict)  # old shard number -> new shard number
    live: dict[int, int] = field(default_factory=dict)  # old shard number -> records still in it


def load_previous(out: Path, algorithm: str, layout: str) -> Previous | None:
    """The pack at `out`, if it is a folder pack of the same digest and shard layout (shard size,
    map size, transaction size). A changed layout param means a fresh layout."""
    if not out.is_dir():
        return None  # nothing there, or one file: small enough to rebuild whole
    from imgpack.read.pack import Pack

    try:
        with Pack(out) as pack:
            if (
                pack.header["hash_algorithm"] != algorithm
                or pack.header.get("layout_params") != layout
            ):
                return None
            shards = list(pack.header["shards"])
            return Previous(out, pack.shard_paths, shards, pack.header.get("params_digest"))
    except ImgpackError:
        return None  # a damaged previous version is not a source: build from scratch


def damaged_shards(paths: list[Path], entries: list[dict[str, Any]]) -> list[str]:
    """Names of the previous version's shard files whose bytes are not what their header entry
    records. A shard this machine validated, unchanged since (same size, inode and mtime), is
    trusted; any other is hashed whole: a flipped byte leaves the size as it was."""
    validated = ValidatedShards()
    try:
        return [
            entry["name"]
            for path, entry in zip(paths, entries, strict=True)
            if not validated.checked(path, entry) and not _intact(path, entry)
        ]
    finally:
        validated.close()


def _intact(path: Path, entry: dict[str, Any]) -> bool:
    try:
        return os.path.getsize(path) == entry["file_bytes"] and file_digest(path) == entry["sha256"]
    except OSError:
        return False


def match_previous(
    previous: Previous,
    manifest: Path,
    dedupe: bool,
    compact_below: float,
    db: sqlite3.Connection,
    scratch: Path,
) -> Match | None:
    """Claim a previous image for each record that can have one (see `imgpack.write.matching`) and
    decide which shards carry over; None when the previous version turns out damaged."""
    from imgpack.read.pack import Pack

    try:
        with Pack(previous.path) as pack:
            match = match_records(pack, manifest, dedupe, db, scratch)
    except InputError:
        raise  # the manifest's fault: refused, not built around
    except ImgpackError:
        return None
    if match is None:
        return None
    previous.live = dict(match.live)
    for number, entry in enumerate(previous.entries):
        live = previous.live.get(number, 0)
        if live and live >= compact_below * entry["count"]:
            previous.kept[number] = len(previous.kept)
    return match


class Planner:
    """Walk the manifest in key order, give each record its (shard, slot), and cut new shards."""

    def __init__(
        self,
        out: Path,
        folder: str,
        algorithm: str,
        params: PackParams,
        layout: ShardLayout,
        store: Path,
        previous: Previous | None,
        spool: Path | None,
    ):
        self.out, self.folder, self.algorithm = out, folder, algorithm
        self.params, self.layout, self.store = params, layout, store
        self.previous = previous
        self.first_new = len(previous.kept) if previous else 0
        self.spool = spool
        # every manifest row has its entry, looked up by the row's ordinal
        self._spool_index = read_index(str(spool)) if spool else None
        self._filling = _Filling(layout.task_hash(algorithm))
        self.new_shards = 0

    def close(self) -> None:
        self._spool_index = None

    def place(self, ordinal: int, row: dict[str, Any], claim: tuple[int, int] | None):
        """(shard, slot) of one stored record, and the task of a shard it completed, if any."""
        previous = self.previous
        if claim is not None and claim[0] in previous.kept:
            return (previous.kept[claim[0]], claim[1]), None
        kind, where, offset = self._source(ordinal, row["key"], claim)
        done = None
        if self.layout.full(len(self._filling), self._filling.bytes, row["size"]):
            done = self.finish()
        self._filling.add(kind, where, offset, row)
        return (self.first_new + self.new_shards, len(self._filling) - 1), done

    def place_block(self, ordinals: np.ndarray, rows: pa.Table, claims: np.ndarray):
        """`place` for many records at once, none in a carried shard: their (shards, slots) as
        arrays, and the tasks of the shards they complete. `claims`: each record's (older shard,
        slot) in a shard being compacted, or (-1, -1)."""
        n = len(ordinals)
        sizes = rows.column("size").to_numpy().astype(np.int64)
        columns = _Block(rows, *self._sources(ordinals, rows.column("key"), claims), sizes)
        cumulative = np.cumsum(sizes)
        shards, slots = np.empty(n, np.int64), np.empty(n, np.int64)
        done, i, limit = [], 0, self.layout.shard_bytes
        while i < n:
            filling = self._filling
            count, before = len(filling), int(cumulative[i - 1]) if i else 0
            # `ShardLayout.full` for a run of records: the first that would take the shard
            # over its bytes or its count closes it (a shard always takes its first image).
            over = int(np.searchsorted(cumulative, limit - filling.bytes + before, "right"))
            end = min(max(over, i), i + SHARD_IMAGES - count, n)
            if end == i and count:
                done.append(self.finish())
                continue
            end = max(end, i + 1)
            filling.extend(columns, i, end, int(cumulative[end - 1]) - before)
            shards[i:end] = self.first_new + self.new_shards
            slots[i:end] = np.arange(count, count + end - i)
            i = end
        return shards, slots, done

    def _source(self, ordinal: int, key: str, claim) -> tuple[int, str, int]:
        """(kind, where, offset) of one record's bytes, as `Sources` has them."""
        index = self._spool_index
        spooled = spooled_at(index, self.spool, ordinal) if index is not None else None
        if spooled is not None:  # read by this build's ingest
            return _SPOOL, spooled[0], spooled[1]
        if claim is not None:  # in a previous shard being compacted: read it from there
            return _SHARD, str(self.previous.shard_paths[claim[0]]), claim[1]
        return _FILE, join(self.folder, key), 0

    def _sources(self, ordinals: np.ndarray, keys: pa.ChunkedArray, claims: np.ndarray):
        """`_source` of many records: (kinds, wheres, offsets) as arrays."""
        n = len(ordinals)
        kinds, offsets = np.full(n, _FILE, np.uint8), np.zeros(n, np.int64)
        wheres = np.empty(n, object)
        spooled = np.zeros(n, bool)
        if self._spool_index is not None:
            numbers, at = self._spool_index[ordinals].T
            spooled = numbers >= 0
            if spooled.any():
                used, which = np.unique(numbers[spooled], return_inverse=True)
                paths = [os.path.join(self.spool, spool_file(int(u))) for u in used]
                wheres[spooled] = np.array(paths, object)[which]
                kinds[spooled], offsets[spooled] = _SPOOL, at[spooled]
        compacted = ~spooled & (claims[:, 0] >= 0)
        if compacted.any():
            paths = np.array([str(p) for p in self.previous.shard_paths], object)
            wheres[compacted] = paths[claims[compacted, 0]]
            kinds[compacted], offsets[compacted] = _SHARD, claims[compacted, 1]
        files = ~spooled & ~compacted
        if files.any():
            named = keys.filter(pa.array(files)).to_pylist()
            wheres[files] = np.array([join(self.folder, key) for key in named], object)
        return kinds, wheres, offsets

    def finish(self) -> ShardTask | None:
        """The task of the shard being filled, if it holds anything."""
        filling = self._filling
        if not len(filling):
            return None
        task = ShardTask(
            resume_at(str(self.store), filling.task.hexdigest()),
            self.algorithm,
            self.layout,
            str(self.out),
            filling.sources(),
        )
        self._filling = _Filling(self.layout.task_hash(self.algorithm))
        self.new_shards += 1
        return task


_FILE, _SPOOL, _SHARD = ord("f"), ord("s"), ord("o")  # as `Sources.kinds` has them


class _Block:
    """Records of a manifest block being placed, as Python lists (made in one call each) and
    their `image_text`s as one Arrow column."""

    def __init__(self, rows: pa.Table, kinds, wheres, offsets, sizes: np.ndarray):
        self.kinds, self.wheres, self.offsets = kinds.tobytes(), wheres.tolist(), offsets.tolist()
        self.sizes = sizes.tolist()
        self.hashes = rows.column("hash").to_pylist()
        self.formats = rows.column("format").to_pylist()
        self.widths = rows.column("width").to_pylist()
        self.heights = rows.column("height").to_pylist()
        texts = [rows.column("hash"), pc.cast(rows.column("size"), pa.string())]
        texts += [rows.column("format")]
        texts += [pc.cast(rows.column(name), pa.string()) for name in ("width", "height")]
        joined = pc.binary_join_element_wise(*texts, ":")
        self.texts = pc.binary_join_element_wise("", joined, "\n").combine_chunks()
        self.text_offsets = np.frombuffer(
            self.texts.buffers()[1], np.int32, len(self.texts) + 1, self.texts.offset * 4
        )

    def text(self, start: int, end: int) -> memoryview:
        """The `image_text`s of records start..end-1, concatenated."""
        at = self.text_offsets
        return memoryview(self.texts.buffers()[2])[at[start] : at[end]]


_IMAGE = ("size", "hash", "format", "width", "height")


class _Filling:
    """The new shard being filled, as columns, and its task id's running digest."""

    def __init__(self, task):
        self.task = task
        self.kinds = bytearray()
        self.columns: tuple[list, ...] = ([], [], [], [], [], [], [])
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.kinds)

    def add(self, kind: int, where: str, offset: int, row: dict[str, Any]) -> None:
        size, digest, fmt, width, height = (row[name] for name in _IMAGE)
        self.kinds.append(kind)
        values = (where, offset, size, digest, fmt, width, height)
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.bytes += size
        self.task.update(image_text(digest, size, fmt, width, height).encode())

    def extend(self, block: _Block, start: int, end: int, image_bytes: int) -> None:
        self.kinds += block.kinds[start:end]
        sources = (block.wheres, block.offsets, block.sizes, block.hashes, block.formats)
        for column, values in zip(
            self.columns, (*sources, block.widths, block.heights), strict=True
        ):
            column.extend(values[start:end])
        self.bytes += image_bytes
        self.task.update(block.text(start, end))

    def sources(self) -> Sources:
        return Sources(bytes(self.kinds), *self.columns)
