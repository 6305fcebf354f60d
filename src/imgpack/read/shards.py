"""The shard files: every image located in place (or read through LMDB), each shard's header and digests."""

from __future__ import annotations

import mmap
import os
import weakref
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import REFETCH, PackCorruptError, PackFormatError
from imgpack.format.codec import decode_shard_header, encode_index
from imgpack.read.handles import (
    MappedImages,
    acquire_env,
    file_identity,
    map_images,
    mapped_props,
    release_env,
)

__all__ = [
    "ImageTable",
    "check_shard_files",
    "locate_pack",
    "open_shard",
    "props_digests",
    "read_props",
    "shard_value",
]


class ImageTable:
    """Record index -> image bytes for a whole pack, shared by every Pack on it in a process.

    Located: `maps[shard_of[i]][starts[i]:ends[i]]` (`map` is set when there is one shard).
    Fallback (an LMDB layout the page walker does not know): each read is an LMDB lookup.
    """

    __slots__ = (
        "map",
        "maps",
        "starts",
        "ends",
        "shard_of",
        "slots",
        "shards",
        "_fallback",
        "__weakref__",
    )

    def __init__(self, shards, starts, ends, shard_of, slots=None, fallback=None):
        self.shards: list[MappedImages] = shards  # keeps each shard's map and spans alive
        maps = [m.map for m in shards]
        self.maps: list = maps
        self.map = maps[0] if len(maps) == 1 else None
        self.starts, self.ends = starts, ends
        self.shard_of = shard_of
        self.slots = slots
        self._fallback: _LmdbReads | None = fallback

    def read(self, i: int) -> bytes:
        """Image bytes of record `i` (already range-checked)."""
        if self.map is not None:
            return self.map[self.starts[i] : self.ends[i]]
        if self._fallback is not None:
            return self._fallback.read(self.shard_of[i], self.slots[i])
        return self.maps[self.shard_of[i]][self.starts[i] : self.ends[i]]

    def read_many(self, indices: Sequence[int]) -> list[bytes]:
        if self.map is not None:
            mapped, starts, ends = self.map, self.starts, self.ends
            return [mapped[starts[i] : ends[i]] for i in indices]
        return [self.read(i) for i in indices]

    @property
    def located(self) -> bool:
        return self._fallback is None

    def release_pages(self, indices: Sequence[int]) -> None:
        """Drop the pages a scan has read, up to these records, from this process's RSS.

        The pages stay in the page cache; a later read maps them again. Without this a full scan
        of a large pack leaves all of it resident in every process that made one.
        """
        if self._fallback is not None or not indices:
            return
        ends: dict[int, int] = {}
        for i in indices:
            shard = 0 if self.shard_of is None else self.shard_of[i]
            ends[shard] = max(ends.get(shard, 0), self.ends[i])
        for shard, end in ends.items():
            mapped = self.maps[shard]
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED, 0, min(end, len(mapped)))


class _LmdbReads:
    """Plain LMDB reads of every shard, reopened after a fork (an environment cannot cross one)."""

    def __init__(self, paths: list[Path], identities: list[tuple]):
        self.paths, self.identities = paths, identities
        self._pid = None
        self._txns: list = []

    def read(self, shard: int, slot: int) -> bytes:
        if self._pid != os.getpid():
            self._txns = []
            for path, identity in zip(self.paths, self.identities, strict=True):
                env, _ = acquire_env(path, identity)  # the files the pack was opened with
                db = env.open_db(b"images", create=False)
                self._txns.append((env.begin(buffers=False), db))
            self._pid = os.getpid()
        txn, db = self._txns[shard]
        value = txn.get(encode_index(slot), db=db)
        if value is None:
            raise PackCorruptError(f"{self.paths[shard]}: image {slot} is missing; {REFETCH}")
        return value


def check_shard_files(folder: Path, shards: list[dict[str, Any]]) -> tuple[list[Path], list]:
    """Paths and identities of a folder pack's shards; a missing or resized one is named here,
    before anything maps it."""
    paths, identities = [], []
    for shard in shards:
        path = folder / shard["name"]
        if "/" in shard["name"] or not shard["name"].startswith("shard-"):
            raise PackFormatError(
                f"{folder}: shard name {shard['name']!r} is not a shard file name"
            )
        try:
            st = os.stat(path)
            size = st.st_size
        except FileNotFoundError:
            raise PackCorruptError(
                f"{folder}: shard {shard['name']} is missing; {REFETCH}"
            ) from None
        if size != shard["file_bytes"]:
            raise PackCorruptError(
                f"{folder}: shard {shard['name']} is {size} bytes but the catalog says "
                f"{shard['file_bytes']}: it is truncated or damaged; {REFETCH}"
            )
        paths.append(path)
        identities.append(file_identity(st))
    return paths, identities


def shard_value(env: lmdb.Environment, path: Path, db_name: bytes, key: bytes) -> bytes | None:
    """One value of a shard's sub-database, read through LMDB."""
    with env.begin() as txn:
        try:
            db = env.open_db(db_name, txn=txn, create=False)
        except lmdb.Error:
            raise PackFormatError(
                f"{path} has no '{db_name.decode()}' sub-database: not an intact imgpack shard; "
                f"{REFETCH}"
            ) from None
        return txn.get(key, db=db)


def open_shard(
    path: Path, expected_count: int, expected: tuple | None = None, immutable: bool = False
) -> tuple[lmdb.Environment, tuple, dict]:
    """Acquire a shard's environment (the file of identity `expected`, if given; `immutable`: see
    handles.acquire_env) and check its own header against the catalog's count."""
    env, identity = acquire_env(path, expected, immutable)
    try:
        header = decode_shard_header(shard_value(env, path, b"shard", b"shard"), str(path))
        if header["count"] != expected_count:
            raise PackCorruptError(
                f"{path} holds {header['count']} images but the catalog says {expected_count}; "
                f"the pack is damaged; {REFETCH}"
            )
    except BaseException:
        release_env(identity)
        raise
    return env, identity, header


def read_props(path: Path, hash_algorithm: str, expected: tuple | None = None) -> DigestColumn:
    """The digests a shard stores for its images, in slot order (to check it on its own); from
    the file of identity `expected` if given (the one its pack was opened with)."""
    raw = None if expected is None else mapped_props(expected)
    if raw is None:
        env, identity = acquire_env(path, expected)
        try:
            raw = shard_value(env, path, b"props", encode_index(0))
        finally:
            release_env(identity)
    return props_digests(raw, hash_algorithm, str(path))


def props_digests(raw: bytes | None, hash_algorithm: str, where: str) -> DigestColumn:
    """The digests column of a shard's `props` value `raw` (read from the shard at `where`)."""
    import hashlib

    from imgpack.format import tables as cat

    schema = cat.props_schema(hashlib.new(hash_algorithm).digest_size)
    table = cat.decode_table(raw or b"", schema, f"{where} properties", ["hash"])
    return DigestColumn(table.column("hash"))


class DigestColumn:
    """Fixed-size digests in one buffer: `column[i]` is bytes, 32 or 64 bytes of memory a row."""

    def __init__(self, column):
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        self.width = column.type.byte_width
        start = column.offset * self.width
        data = column.buffers()[1]
        self._data = memoryview(data)[start : start + len(column) * self.width] if data else b""
        self._keep = column

    def __len__(self) -> int:
        return len(self._data) // self.width

    def __getitem__(self, i: int) -> bytes:
        return self._data[i * self.width : (i + 1) * self.width].tobytes()

    def tobytes(self) -> bytes:
        """Every digest, in slot order, as one bytes object (`width` bytes each)."""
        return bytes(self._data)


# One table per pack file and process; forked children inherit it with the maps it slices.
_TABLES: weakref.WeakValueDictionary[tuple, ImageTable] = weakref.WeakValueDictionary()


def locate_pack(
    identity: tuple, paths: list[Path], opened: list, counts: list[int], shard_col, slot_col
) -> ImageTable:
    """Locate every shard's images and index them by record: `shard_col`/`slot_col` from the catalog."""
    cached = _TABLES.get(identity)
    if cached is not None:
        return cached
    from imgpack.format.spans import UnknownLayout

    located: list[MappedImages] = []
    fallback = None
    for path, seen, count in zip(paths, opened, counts, strict=True):
        env, _, _ = open_shard(path, count, seen)  # the file seen when the pack was opened
        try:
            with env.begin() as txn:
                record, props = txn.get(b"images"), txn.get(b"props")
            located.append(map_images(path, seen, record, env.stat()["psize"], count, props))
        except UnknownLayout:
            fallback = _LmdbReads(paths, opened)
        finally:
            release_env(seen)
    table = _index_by_record(located, counts, shard_col, slot_col, fallback, paths)
    _TABLES[identity] = table
    return table


def _index_by_record(located, counts, shard_col, slot_col, fallback, paths) -> ImageTable:
    import numpy as np

    shard_col = np.asarray(shard_col, dtype=np.int64)
    slot_col = np.asarray(slot_col, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if len(shard_col) and (
        (shard_col < 0).any()
        or (shard_col >= len(counts)).any()
        or (slot_col < 0).any()
        or (slot_col >= counts[shard_col]).any()
    ):
        raise PackCorruptError(
            f"{paths[0].parent}: the catalog points outside its shards; {REFETCH}"
        )
    one = len(counts) == 1
    shard_of = array("i", shard_col.astype(np.int32).tobytes())
    if fallback is not None:
        return ImageTable([], None, None, shard_of, array("q", slot_col.tobytes()), fallback)
    if one and np.array_equal(slot_col, np.arange(len(slot_col))):
        return ImageTable(located, located[0].starts, located[0].ends, None)
    base = np.concatenate([[0], np.cumsum(counts)[:-1]])
    every = base[shard_col] + slot_col
    all_starts = np.concatenate([np.frombuffer(m.starts, dtype=np.int64) for m in located])
    all_ends = np.concatenate([np.frombuffer(m.ends, dtype=np.int64) for m in located])
    starts = array("q", all_starts[every].tobytes())
    ends = array("q", all_ends[every].tobytes())
    return ImageTable(located, starts, ends, None if one else shard_of)
