"""Open a pack (one file or a folder of shards) read-only: random access, batches, scans, the catalog."""

from __future__ import annotations

import operator
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import ImgpackError, PackFormatError
from imgpack.format import tables as cat
from imgpack.format.codec import CATALOG_FILE, HEADER_KEY, decode_header, encode_index
from imgpack.read.catalog import Catalog, SortedKeys
from imgpack.read.handles import acquire_env, forget_envs, release_env
from imgpack.read.shards import ImageTable, check_shard_files, locate_pack

__all__ = ["Pack", "Record", "open_pack"]

_CHUNK_RECORDS = 256  # a full scan reads this many records at a time (photos: ~25 MB)
_RELEASE_BYTES = 16 << 20  # and drops the pages it has read from RSS after this many bytes


class Record:
    """One stored image: `index`, original file bytes `data`; `key`, `meta`, `label` from the catalog."""

    __slots__ = ("index", "data", "_pack")

    def __init__(self, index: int, data: bytes, pack: Pack):
        self.index, self.data, self._pack = index, data, pack

    @property
    def key(self) -> str:
        return self._pack.key_of(self.index)

    @property
    def meta(self) -> dict[str, Any]:
        return self._pack.meta(self.index)

    @property
    def label(self) -> str:
        return self._pack.label_of(self.index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.index, self.key, self.data) == (other.index, other.key, other.data)

    __hash__ = None

    def __repr__(self) -> str:
        return f"<imgpack.Record {self.index} {self.key!r} {len(self.data)} bytes>"


_LIVE: weakref.WeakSet[Pack] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pack in list(_LIVE):
        pack._txn = None
        pack._env = None
    forget_envs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pack(Sequence):
    """A read-only pack: `len`, `pack[i]`, `pack[key]`, `read_many`, iteration, `metadata()`."""

    def __init__(self, path: str | os.PathLike, rev: str | None = None):
        if rev is not None:  # the pack as of a git revision, fetched through DVC (see revisions)
            from imgpack.read.revisions import fetch_pack

            path = fetch_pack(path, rev)
        self.path = Path(path).resolve()
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._table: ImageTable | None = None
        self._rows = self._keys = self._aliases = None
        self._closed = False
        self._count = 0
        self._shard_paths: list[Path] = []
        self._open()
        _LIVE.add(self)

    # -- opening, closing, fork and pickle --------------------------------------------------------
    def _open(self) -> None:
        folder = self.path.is_dir()
        self.catalog_path = self.path / CATALOG_FILE if folder else self.path
        if folder and not self.catalog_path.exists():
            raise PackFormatError(f"{self.path} is a folder without {CATALOG_FILE}: not a pack")
        env, self._identity = acquire_env(self.catalog_path)
        try:
            txn = env.begin(buffers=False)
            try:
                header_db = env.open_db(b"header", txn=txn, create=False)
            except lmdb.Error:
                raise PackFormatError(
                    f"{self.path} is an LMDB file but not an imgpack pack (sub-databases missing)"
                ) from None
            header = decode_header(txn.get(HEADER_KEY, db=header_db), str(self.path))
            try:
                dbs = {
                    n: env.open_db(n.encode(), txn=txn, create=False)
                    for n in ("catalog", "aliases")
                }
            except lmdb.Error:
                raise PackFormatError(
                    f"{self.path}: the catalog is missing; the pack is damaged"
                ) from None
            names = [s["name"] for s in header["shards"]]
            if folder != all(names) or (not folder and len(names) != 1):
                raise PackFormatError(
                    f"{self.path}: its header lists shards {names[:3]} that do not fit a "
                    f"{'folder' if folder else 'one-file'} pack; the pack is damaged"
                )
            if folder:
                paths, opened = check_shard_files(self.path, header["shards"])
            else:
                paths, opened = [self.path], [self._identity]
        except BaseException:
            release_env(self.catalog_path)
            raise
        self._env, self._txn, self.header, self._shard_paths = env, txn, header, paths
        self._shard_identities = opened
        self._catalog = Catalog(txn, dbs, header, str(self.path), paths)
        self._count = header["count"]

    def _reader(self) -> lmdb.Transaction:
        if self._txn is None:
            if self._closed:
                raise ImgpackError(f"{self.path} was closed; open it again with imgpack.open()")
            self._open()
        return self._txn

    @property
    def catalog(self) -> Catalog:
        self._reader()
        return self._catalog

    @property
    def shard_paths(self) -> list[Path]:
        """The files holding the images: the pack itself, or its folder's shard files."""
        return list(self._shard_paths)

    @property
    def files(self) -> list[Path]:
        """Every file of the pack: the one file, or the folder's catalog and shard files."""
        if self.catalog_path == self.path:
            return [self.path]
        return [self.catalog_path, *self._shard_paths]

    @property
    def file_bytes(self) -> int:
        return sum(os.path.getsize(path) for path in self.files)

    def locate(self) -> ImageTable:
        """Map every shard read-only and find every image's bytes in it (done by the first read).

        Once per process and pack: call it before forking DataLoader workers and they share the
        table instead of each building its own. See format/README.md, *Reading images in place*.
        """
        if self._table is None:
            where = self.catalog.table(list(cat.LOCATION_COLUMNS))
            self._table = locate_pack(
                self._identity,
                self._shard_paths,
                self._shard_identities,
                [shard["count"] for shard in self.header["shards"]],
                where.column("shard").to_numpy(),
                where.column("slot").to_numpy(),
            )
        return self._table

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            release_env(self.catalog_path)
        self._env = None
        self._table = None  # the maps are unmapped when no Pack in this process uses them
        self._rows = self._keys = self._aliases = None
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
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"<imgpack.Pack {self.path} records={len(self)} shards={len(self._shard_paths)}>"

    # -- records -----------------------------------------------------------------------------------
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
        i = self._index(i)
        return Record(i, (self._table or self.locate()).read(i), self)

    def data(self, i: int) -> bytes:
        """The original image bytes of record `i`."""
        return (self._table or self.locate()).read(self._index(i))

    def data_many(self, indices: Iterable[int], checked: bool = False) -> list[bytes]:
        """Original bytes of many records, in the order asked.

        `checked=True` skips range checks for indices the caller already validated.
        """
        if not checked:
            indices = [self._index(i) for i in indices]
        return (self._table or self.locate()).read_many(indices)

    def _full_catalog(self):
        if self._rows is None:
            self._rows = self.catalog.table()
        return self._rows

    def meta(self, i: int) -> dict[str, Any]:
        """Record `i`'s metadata: key, label, hash (hex), size, format, width, height, split, extra."""
        return self.catalog.row(self._full_catalog(), self._index(i))

    def label_of(self, i: int) -> str:
        return self._full_catalog().column("label")[self._index(i)].as_py()

    def _sorted_keys(self) -> SortedKeys:
        if self._keys is None:
            self._keys = SortedKeys(self.catalog.table(["key"]).column("key"))
        return self._keys

    def _alias_table(self):
        if self._aliases is None:
            raw = self._reader().get(encode_index(0), db=self.catalog._dbs["aliases"])
            table = cat.decode_table(raw or b"", cat.alias_schema(), f"{self.path} aliases")
            self._aliases = (SortedKeys(table.column("alias")), SortedKeys(table.column("key")))
        return self._aliases

    def key_of(self, i: int) -> str:
        return self._sorted_keys().text(self._index(i))

    def index_of(self, key: str) -> int:
        """Index of the record stored under `key` or under an alias of it (deduplicated content)."""
        raw = key.encode("utf-8", "surrogateescape")
        keys = self._sorted_keys()
        found = keys.find(raw)
        if found is None and self.header["aliases"]:
            aliases, targets = self._alias_table()
            at = aliases.find(raw)
            found = None if at is None else keys.find(targets[at])
        if found is None:
            raise KeyError(key)
        return found

    def get(self, key: str) -> Record:
        return self[self.index_of(key)]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self.index_of(key)
        except KeyError:
            return False
        return True

    def read_many(self, items: Iterable[int | str]) -> list[Record]:
        """Read many records, by index or key, in the order asked."""
        indices = [self.index_of(x) if isinstance(x, str) else self._index(x) for x in items]
        table = self._table or self.locate()
        return [
            Record(i, data, self) for i, data in zip(indices, table.read_many(indices), strict=True)
        ]

    def __iter__(self) -> Iterator[Record]:
        """All records in key order, read a chunk at a time; pages already read leave the RSS."""
        for first, chunk in self.scan():
            for offset, data in enumerate(chunk):
                yield Record(first + offset, data, self)

    def iter_data(self) -> Iterator[bytes]:
        """The image bytes of every record in key order, as `scan` reads them."""
        for _, chunk in self.scan():
            yield from chunk

    def scan(self, chunk: int = _CHUNK_RECORDS) -> Iterator[tuple[int, list[bytes]]]:
        """(first index, image bytes of the next `chunk` records), in key order.

        Every full read (iteration, validate, verify, export) goes through here: every
        `_RELEASE_BYTES` the pages already read leave this process's RSS, so memory stays flat
        however large the pack.
        """
        table = self._table or self.locate()
        since_release = 0
        for first in range(0, self._count, chunk):
            indices = range(first, min(first + chunk, self._count))
            datas = table.read_many(indices)
            yield first, datas
            since_release += sum(map(len, datas))
            if since_release >= _RELEASE_BYTES:
                table.release_pages(indices)
                since_release = 0

    def keys(self) -> Iterator[str]:
        """Record keys in index order (aliases not included)."""
        keys = self._sorted_keys()
        return (keys.text(i) for i in range(len(keys)))

    def aliases(self) -> Iterator[tuple[str, str]]:
        """(alias, key of the stored record) for content stored once under several keys."""
        aliases, targets = self._alias_table()
        return ((aliases.text(i), targets.text(i)) for i in range(len(aliases)))

    def iter_meta(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, metadata) of every record, a catalog part at a time, without image bytes."""
        catalog = self.catalog
        for start, table in catalog.tables():
            for offset, values in enumerate(table.to_pylist()):
                yield start + offset, catalog.meta_dict(values)

    def metadata(
        self,
        columns: Sequence[str] | None = None,
        chunksize: int | None = None,
        filters: Any = None,
    ):
        """The catalog as a pandas DataFrame indexed by record, or an iterator of `chunksize` frames.

        `filters` selects rows like `pandas.read_parquet`'s: `[("label", "==", "3")]`, a list of
        such lists (OR of ANDs), or a `pyarrow.compute.Expression`. No image byte is read.
        """
        from imgpack.read.metadata import metadata_chunks, metadata_frame

        if chunksize is None:
            return metadata_frame(self.catalog, columns, filters)
        return metadata_chunks(self.catalog, columns, filters, chunksize)


def open_pack(path: str | os.PathLike, rev: str | None = None) -> Pack:
    """Open a pack read-only, as in the workspace or as of git revision `rev` (through DVC);
    raises PackFormatError/PackCorruptError with a clear message."""
    return Pack(path, rev)
