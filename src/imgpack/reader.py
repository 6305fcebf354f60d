"""Open a pack read-only for random access, batch reads, iteration and a pandas metadata catalog."""

from __future__ import annotations

import operator
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from imgpack.errors import ImgpackError, PackCorruptError, PackFormatError
from imgpack.format.codec import (
    HEADER_KEY,
    SUBDBS,
    decode_header,
    decode_index,
    decode_meta,
    encode_index,
)
from imgpack.handles import (
    MappedImages,
    acquire_env,
    forget_envs,
    map_images,
    release_env,
    sole_user,
)

__all__ = ["Pack", "Record", "open_pack"]

# Full scans read this many records or bytes per chunk and release the map every _RELEASE_BYTES.
_CHUNK_RECORDS = 1024
_CHUNK_BYTES = 8 << 20
_RELEASE_BYTES = 64 << 20
_RELEASE_CHUNKS = 16


class Record(NamedTuple):
    """One stored image: its index, key, original file bytes and metadata."""

    index: int
    key: str
    data: bytes
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return self.meta["label"]


_LIVE: weakref.WeakSet[Pack] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pack in list(_LIVE):
        pack._txn = None
        pack._env = None
    forget_envs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pack(Sequence):
    """A read-only pack: `len`, `pack[i]`, `pack.get(key)`, `read_many`, iteration, `metadata()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._images: MappedImages | None = None
        self._closed = False
        self._open()
        _LIVE.add(self)

    # -- opening, closing, fork and pickle --------------------------------------------------------
    def _open(self) -> None:
        env, self._identity = acquire_env(self.path)
        try:
            txn = env.begin(buffers=False)
            try:
                dbs = {n.decode(): env.open_db(n, txn=txn, create=False) for n in SUBDBS}
            except lmdb.Error:
                raise PackFormatError(
                    f"{self.path} is an LMDB file but not an imgpack pack (sub-databases missing)"
                ) from None
            header = decode_header(txn.get(HEADER_KEY, db=dbs["header"]), str(self.path))
        except BaseException:
            release_env(self.path)
            raise
        self._env, self._txn, self._dbs, self.header = env, txn, dbs, header
        self._count = header["count"]

    def _reader(self) -> lmdb.Transaction:
        if self._txn is None:
            if self._closed:
                raise ImgpackError(f"{self.path} was closed; open it again with imgpack.open()")
            self._open()
        return self._txn

    def locate(self) -> MappedImages:
        """Map the file read-only and find every image's bytes in it (done by the first read).

        Once per process and file: call it before forking DataLoader workers and they share the
        table instead of each building its own. See format/README.md, *Reading images in place*.
        """
        if self._images is None:
            txn = self._reader()
            self._images = map_images(
                self.path,
                self._identity,
                txn.get(b"images"),  # the sub-database's record in LMDB's main database
                self._env.stat()["psize"],
                self._count,
            )
        return self._images

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            release_env(self.path)
        self._env = None
        self._images = None  # the map is unmapped when no Pack in this process uses it
        self._closed = True

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Pack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Only the path travels to spawned workers; each reopens the file on unpickling.
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])
        self._env = self._txn = self._images = None
        self._closed = False
        self._open()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<imgpack.Pack {self.path} records={len(self)}>"

    def __len__(self) -> int:
        return self._count

    def _index(self, i: Any) -> int:
        if type(i) is not int:
            i = operator.index(i)
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"record {i} out of range for a pack of {self._count}")
        return i

    def __getitem__(self, i: Any) -> Record:
        if isinstance(i, str):
            return self.get(i)
        if isinstance(i, slice):
            return self.read_many(range(*i.indices(self._count)))
        return self._record(self._reader(), self._index(i))

    def _record(self, txn: lmdb.Transaction, index: int) -> Record:
        meta_raw = txn.get(encode_index(index), db=self._dbs["meta"])
        if meta_raw is None:
            raise PackCorruptError(f"{self.path}: record {index} is missing; the pack is damaged")
        meta = decode_meta(meta_raw, f"record {index} of {self.path}")
        return Record(index, meta["key"], self.data(index), meta)

    def data(self, i: int) -> bytes:
        """The original image bytes of record `i`, without decoding its metadata."""
        images = self._images or self.locate()
        i = self._index(i)
        return images.map[images.starts[i] : images.ends[i]]

    def data_many(self, indices: Iterable[int], checked: bool = False) -> list[bytes]:
        """Original bytes of many records, in the order asked.

        `checked=True` skips range checks for indices the caller already validated.
        """
        images = self._images or self.locate()
        mapped, starts, ends = images.map, images.starts, images.ends
        if not checked:
            indices = [self._index(i) for i in indices]
        return [mapped[starts[i] : ends[i]] for i in indices]

    def meta(self, i: int) -> dict[str, Any]:
        raw = self._reader().get(encode_index(self._index(i)), db=self._dbs["meta"])
        if raw is None:
            raise PackCorruptError(f"{self.path}: record {i} is missing; the pack is damaged")
        return decode_meta(raw, f"record {i} of {self.path}")

    def index_of(self, key: str) -> int:
        """Index of the record stored under `key` or under an alias of it (deduplicated content)."""
        txn = self._reader()
        raw_key = key.encode("utf-8", "surrogateescape")
        raw = txn.get(raw_key, db=self._dbs["keys"])
        if raw is None:
            canonical = txn.get(raw_key, db=self._dbs["aliases"])
            raw = canonical and txn.get(canonical, db=self._dbs["keys"])
        if raw is None:
            raise KeyError(key)
        return decode_index(raw)

    def get(self, key: str) -> Record:
        return self._record(self._reader(), self.index_of(key))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self.index_of(key)
        except KeyError:
            return False
        return True

    def read_many(self, items: Iterable[int | str]) -> list[Record]:
        """Read many records, by index or key, in one transaction and in the order asked."""
        txn = self._reader()
        indices = [self.index_of(x) if isinstance(x, str) else self._index(x) for x in items]
        return [self._record(txn, i) for i in indices]

    def __iter__(self) -> Iterator[Record]:
        """All records in key order, read in bounded chunks (see `_scan`)."""
        images = self._scan("images")
        for index, meta_raw in self._scan("meta"):
            raw_index, data = next(images, (None, None))
            if raw_index != index:
                raise PackCorruptError(f"{self.path}: images and metadata disagree; damaged pack")
            meta = decode_meta(meta_raw, f"record {index} of {self.path}")
            yield Record(index, meta["key"], data, meta)

    def _scan(self, db_name: str) -> Iterator[tuple[int, bytes]]:
        """(index, value) of a sub-database in order, a bounded chunk at a time.

        No cursor lives across a `yield`, so scans can interleave with other reads, and every
        `_RELEASE_BYTES` the memory map is released (when no other Pack shares it): a full scan of
        a large pack does not leave every page of it mapped into this process's RSS.
        """
        start, since_release, chunks = 0, 0, 0
        while start < self._count:
            chunk, size = [], 0
            cursor = self._reader().cursor(self._dbs[db_name])
            if cursor.set_range(encode_index(start)):
                for raw, value in cursor:
                    chunk.append((decode_index(raw), value))
                    size += len(value)
                    if len(chunk) >= _CHUNK_RECORDS or size >= _CHUNK_BYTES:
                        break
            if not chunk:
                return
            start = chunk[-1][0] + 1
            since_release += size
            chunks += 1
            # Small records map more B-tree pages than value bytes, hence the chunk count too.
            if since_release >= _RELEASE_BYTES or chunks >= _RELEASE_CHUNKS:
                self._release_map()
                since_release = chunks = 0
            yield from chunk

    def _release_map(self) -> None:
        if self._txn is None or not sole_user(self.path):
            return  # another Pack in this process uses the same mapping: keep it
        self._txn.abort()
        self._txn = self._env = None
        release_env(self.path)

    def keys(self) -> Iterator[str]:
        """Record keys in index order (aliases not included)."""
        for raw_key, _ in self._reader().cursor(self._dbs["keys"]):
            yield raw_key.decode("utf-8")

    def aliases(self) -> Iterator[tuple[str, str]]:
        """(alias, key of the stored record) for content stored once under several keys."""
        for raw_alias, raw_key in self._reader().cursor(self._dbs["aliases"]):
            yield raw_alias.decode("utf-8"), raw_key.decode("utf-8")

    def iter_meta(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, metadata) of every record, without touching image bytes."""
        for index, meta_raw in self._scan("meta"):
            yield index, decode_meta(meta_raw, f"record {index} of {self.path}")

    def metadata(self, columns: Sequence[str] | None = None, chunksize: int | None = None):
        """The metadata catalog as a pandas DataFrame indexed by record, or an iterator of chunks."""
        from imgpack.catalog import metadata_chunks, metadata_frame

        if chunksize is None:
            return metadata_frame(self.iter_meta(), columns)
        return metadata_chunks(self.iter_meta(), columns, chunksize)


def open_pack(path: str | os.PathLike) -> Pack:
    """Open a pack read-only; raises PackFormatError/PackCorruptError with a clear message."""
    return Pack(path)
