"""Open a pack read-only for random access, batch reads, iteration and a pandas metadata catalog."""

from __future__ import annotations

import operator
import os
import struct
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

__all__ = ["Pack", "Record", "open_pack", "check_pack_file"]

# The format's index key (codec.encode_index), inlined for speed on the read path.
_pack_index = struct.Struct(">Q").pack
# Full scans read this many records or bytes per chunk and release the map every _RELEASE_BYTES.
_CHUNK_RECORDS = 1024
_CHUNK_BYTES = 8 << 20
_RELEASE_BYTES = 64 << 20
_RELEASE_CHUNKS = 16

_MIN_PAGES = 2  # LMDB's two meta pages
_OS_PAGE = 4096


class Record(NamedTuple):
    """One stored image: its index, key, original file bytes and metadata."""

    index: int
    key: str
    data: bytes
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return self.meta["label"]


def check_pack_file(path: Path) -> int:
    """Raise a clear error for a missing, empty or undersized file before LMDB maps it."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise PackFormatError(f"{path}: no such pack file") from None
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the pack file ({exc.strerror})") from None
    if size < _MIN_PAGES * _OS_PAGE:
        raise PackCorruptError(
            f"{path} is {size} bytes, too small for an LMDB file: the pack is truncated "
            "or not a pack; fetch it again (dvc pull / dvc checkout) or rebuild it"
        )
    return size


# One environment per file per process (LMDB refuses a second open of the same file), shared by
# every Pack on it; a forked child closes the inherited ones and reopens on first use.
_ENVS: dict[str, list] = {}  # real path -> [environment, number of packs using it]
_LIVE: weakref.WeakSet[Pack] = weakref.WeakSet()


def _acquire_env(path: Path) -> lmdb.Environment:
    entry = _ENVS.get(str(path))
    if entry is not None:
        entry[1] += 1
        return entry[0]
    size = check_pack_file(path)
    try:
        env = lmdb.open(
            str(path),
            subdir=False,
            readonly=True,
            lock=False,  # no reader slots and no lock file: nothing is ever written near the pack
            max_dbs=len(SUBDBS),
            readahead=False,
        )
    except lmdb.Error as exc:
        raise PackFormatError(f"{path} is not a readable LMDB file ({exc})") from None
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if needed > size:
        env.close()
        raise PackCorruptError(
            f"{path} is {size} bytes but its database needs {needed}: the pack is truncated; "
            "fetch it again (dvc pull / dvc checkout) or rebuild it"
        )
    _ENVS[str(path)] = [env, 1]
    return env


def _release_env(path: Path) -> None:
    entry = _ENVS.get(str(path))
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            del _ENVS[str(path)]
            entry[0].close()


def _after_fork_in_child() -> None:
    for pack in list(_LIVE):
        pack._txn = None
        pack._env = None
    for env, _ in _ENVS.values():
        env.close()
    _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pack(Sequence):
    """A read-only pack: `len`, `pack[i]`, `pack.get(key)`, `read_many`, iteration, `metadata()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._closed = False
        self._open()
        _LIVE.add(self)

    # -- opening, closing, fork and pickle --------------------------------------------------------
    def _open(self) -> None:
        env = _acquire_env(self.path)
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
            _release_env(self.path)
            raise
        self._env, self._txn, self._dbs, self.header = env, txn, dbs, header
        self._count = header["count"]

    def _reader(self) -> lmdb.Transaction:
        if self._txn is None:
            if self._closed:
                raise ImgpackError(f"{self.path} was closed; open it again with imgpack.open()")
            self._open()
        return self._txn

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            _release_env(self.path)
        self._env = None
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
        self._env = self._txn = None
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
        raw = encode_index(index)
        data = txn.get(raw, db=self._dbs["images"])
        meta_raw = txn.get(raw, db=self._dbs["meta"])
        if data is None or meta_raw is None:
            raise PackCorruptError(f"{self.path}: record {index} is missing; the pack is damaged")
        meta = decode_meta(meta_raw, f"record {index} of {self.path}")
        return Record(index, meta["key"], data, meta)

    def data(self, i: int) -> bytes:
        """The original image bytes of record `i`, without decoding its metadata."""
        txn = self._txn or self._reader()
        data = txn.get(_pack_index(self._index(i)), None, self._dbs["images"])
        if data is None:
            raise PackCorruptError(f"{self.path}: record {i} is missing; the pack is damaged")
        return data

    def data_many(self, indices: Iterable[int], checked: bool = False) -> list[bytes]:
        """Original bytes of many records in one transaction, in the order asked.

        `checked=True` skips range checks for indices the caller already validated.
        """
        get, images = (self._txn or self._reader()).get, self._dbs["images"]
        if not checked:
            indices = [self._index(i) for i in indices]
        out = [get(_pack_index(i), None, images) for i in indices]
        if None in out:
            raise PackCorruptError(f"{self.path}: a record is missing; the pack is damaged")
        return out

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
            if cursor.set_range(_pack_index(start)):
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
        entry = _ENVS.get(str(self.path))
        if self._txn is None or entry is None or entry[1] != 1:
            return  # another Pack in this process uses the same mapping: keep it
        self._txn.abort()
        self._txn = self._env = None
        _release_env(self.path)

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
