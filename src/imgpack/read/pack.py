"""Open a pack (one file or a folder of shards) read-only: its handles, files, fork and pickling."""

from __future__ import annotations

import hashlib
import operator
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from imgpack.errors import REFETCH, ImgpackError, PackChangedError, PackFormatError
from imgpack.format import tables as cat
from imgpack.format.codec import CATALOG_FILE, HEADER_KEY, decode_header
from imgpack.read.catalog import Catalog
from imgpack.read.handles import (
    acquire_env,
    file_identity,
    forget_envs,
    is_immutable,
    release_env,
)
from imgpack.read.lookups import CatalogLookups
from imgpack.read.records import ImageReads, Record
from imgpack.read.shards import ImageTable, check_shard_files, locate_pack

if TYPE_CHECKING:
    from imgpack.read.stream import StreamShards, StreamSource

__all__ = ["Pack", "Record", "open_pack"]

_ATTEMPTS = 3  # opens of a path whose version a publish replaced during the open

_LIVE: weakref.WeakSet[Pack] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pack in list(_LIVE):
        pack._txn = None
        pack._env = None
    forget_envs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pack(CatalogLookups, ImageReads, Sequence):
    """A read-only pack: `len`, `pack[i]`, `pack[key]`, `read_many`, iteration, `metadata()`.

    The catalog side (keys, aliases, metadata) is `CatalogLookups`, the image bytes (reads,
    batches, scans) `ImageReads`; this class opens, closes, forks and pickles the handles.

    A Pack reads the version it opened for as long as it lives: after a fork, a pickle or a
    publish of another version at its path it never reads another one (PackChangedError).

    With `stream=True` the pack is read straight from its DVC remote (see read/stream.py): the
    version DVC recorded at `rev` (None: the workspace's dvc.lock or .dvc file), from remote
    `remote` (None: the output's, else the default one), through the machine's shard cache
    ($IMGPACK_CACHE/stream) bounded by `cache_limit` (bytes or text such as "20GB"; None: the
    last limit set on this machine, else 20 GB). The catalog is fetched on open; a shard the
    first time one of its records (or its digests) is read.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        rev: str | None = None,
        *,
        stream: bool = False,
        cache_limit: int | str | None = None,
        remote: str | None = None,
    ):
        source = None
        if stream:
            from imgpack.read.stream import StreamSource

            source = StreamSource.resolve(path, rev, remote, cache_limit)
        elif cache_limit is not None or remote is not None:
            raise ValueError("cache_limit and remote apply to a streamed pack: pass stream=True")
        elif rev is not None:  # the pack as of a git revision, fetched through DVC (see revisions)
            from imgpack.read.revisions import fetch_pack

            path = fetch_pack(path, rev)
        self._setup(path, source)

    @classmethod
    def from_stream(cls, source: StreamSource) -> Pack:
        """A Pack on an already resolved stream source (what a pickled streamed Pack carries)."""
        pack = cls.__new__(cls)
        pack._setup(source.path, source)
        return pack

    def _setup(self, path: str | os.PathLike, source: StreamSource | None) -> None:
        self.stream = source  # where a streamed pack comes from; None for a local one
        self._stream_shards: StreamShards | None = None
        self._catalog_pin = None  # a streamed pack's catalog, pinned in the cache
        self._lazy_digests = False
        self.path = Path(path).resolve() if source is None else Path(path)
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._table: ImageTable | None = None
        self._forget_lookups()
        self._closed = False
        self._count = 0
        self._shard_paths: list[Path] = []
        self._identity: tuple = ()
        self._version: tuple | None = None  # set by the first open; every reopen must match it
        self._open()
        _LIVE.add(self)

    # -- opening, closing, fork and pickle --------------------------------------------------------
    def _open(self) -> None:
        for attempt in range(_ATTEMPTS):
            env, identity, catalog_path = self._acquire_catalog()
            try:
                self._adopt(env, identity, catalog_path)
                return
            except PackFormatError as exc:
                release_env(identity)
                moved = _moved(catalog_path, identity)
                if moved and self._version is not None:
                    raise self._changed() from None
                # A publish between opening the catalog and finding its shards: the path now
                # holds a whole other version, which a first open takes.
                if not moved or attempt + 1 == _ATTEMPTS:
                    raise self._with_remedy(exc) from None
            except BaseException:
                release_env(identity)
                raise

    def _acquire_catalog(self) -> tuple[lmdb.Environment, tuple, Path]:
        if self.stream is not None:
            if self._catalog_pin is None:
                self._catalog_pin = self.stream.pin_catalog()
            path = self._catalog_pin.path
            env, identity = acquire_env(path, immutable=True)  # the cache only touches its mtime
            return env, identity, path
        folder = self.path.is_dir()
        catalog_path = self.path / CATALOG_FILE if folder else self.path
        try:
            if folder and not catalog_path.exists():
                raise PackFormatError(f"{self.path} is a folder without {CATALOG_FILE}: not a pack")
            env, identity = acquire_env(catalog_path)
        except PackFormatError as exc:
            if self._version is not None:  # a reopen: the file it had is gone from the path
                raise self._changed() from None
            raise self._with_remedy(exc) from None
        return env, identity, catalog_path

    def _adopt(self, env: lmdb.Environment, identity: tuple, catalog_path: Path) -> None:
        """Read the header and find the shards of the catalog file `env` opened."""
        folder = self.stream.is_folder if self.stream is not None else catalog_path != self.path
        txn = env.begin(buffers=False)
        try:
            header_db = env.open_db(b"header", txn=txn, create=False)
        except lmdb.Error:
            raise PackFormatError(
                f"{self.path} is an LMDB file but not an imgpack pack (sub-databases missing)"
            ) from None
        raw = txn.get(HEADER_KEY, db=header_db)
        header = decode_header(raw, str(self.path))
        # A streamed version is known by its content (DVC's md5 of the catalog): its cache entry
        # is the same file in every process, or an identical copy fetched again.
        held = identity if self.stream is None else ("md5", self.stream.catalog.md5)
        version = (held, hashlib.sha256(raw).hexdigest())
        if self._version is not None and version != self._version:
            raise self._changed()
        try:
            dbs = {
                n: env.open_db(n.encode(), txn=txn, create=False) for n in ("catalog", "aliases")
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
        shard_props = None
        if folder and self.stream is not None:
            if self._stream_shards is None:
                from imgpack.read.stream import StreamShards

                self._stream_shards = StreamShards(self.stream, header["shards"], self._where)
            paths, opened = [], []
            shard_props = self._stream_shards.props
        elif folder:
            paths, opened = check_shard_files(self.path, header["shards"])
        else:
            paths, opened = [catalog_path], [identity]
        self._env, self._txn, self.header, self._shard_paths = env, txn, header, paths
        self.catalog_path, self._identity = catalog_path, identity
        self._shard_identities, self._version = opened, version
        self._catalog = Catalog(txn, dbs, header, self._where, paths, opened, shard_props)
        # A streamed folder pack reads digests from its shards only when asked for them.
        self._lazy_digests = shard_props is not None and not self._catalog.stores_hash
        self._count = header["count"]

    @property
    def _where(self) -> str:
        return str(self.path) if self.stream is None else self.stream.described

    @property
    def identity(self) -> str:
        """Which version this Pack reads: its header's digest and its catalog file's identity
        (device, inode, size, mtime). A version published at the path since has another one.
        A streamed pack's is its header's digest and its catalog's md5 on the DVC remote."""
        held, digest = self._version
        if self.stream is not None:
            return f"{digest[:16]}:md5:{held[1]}"
        dev, ino, size, mtime = held
        return f"{digest[:16]}:{dev}:{ino}:{size}:{mtime}"

    def _changed(self) -> PackChangedError:
        return PackChangedError(
            f"{self.path} changed since it was opened (another version was published); "
            "open it again"
        )

    def _with_remedy(self, exc: PackFormatError) -> PackFormatError:
        """`exc`, its remedy naming what repairs this copy when it is imgpack's copy of a revision
        (dvc pull and dvc checkout never touch that cache)."""
        from imgpack.read.revisions import refetch_remedy

        remedy = refetch_remedy(self.path)
        if remedy == REFETCH or REFETCH not in str(exc):
            return exc
        return type(exc)(str(exc).replace(REFETCH, remedy))

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
        self._local_files("shard_paths")
        return list(self._shard_paths)

    @property
    def files(self) -> list[Path]:
        """Every file of the pack: the one file, or the folder's catalog and shard files."""
        self._local_files("files")
        if self.catalog_path == self.path or self.stream is not None:
            return [self.catalog_path]
        return [self.catalog_path, *self._shard_paths]

    @property
    def file_bytes(self) -> int:
        """Bytes of the pack's files (a streamed pack's: as its header and the remote record)."""
        if self.stream is not None:
            return self.stream.catalog.size + sum(
                s["file_bytes"] for s in self.header["shards"] if self.stream.is_folder
            )
        return sum(os.path.getsize(path) for path in self.files)

    def _local_files(self, what: str) -> None:
        if self._stream_shards is not None:
            raise ImgpackError(
                f"{self._where} is streamed: its shards are fetched one at a time into the shard "
                f"cache, so it has no {what}; open it without stream=True (after `dvc pull`) "
                "for what needs its files"
            )

    def locate(self) -> ImageTable:
        """Map every shard read-only and find every image's bytes in it (done by the first read).

        Once per process and pack: call it before forking DataLoader workers and they share the
        table instead of each building its own. See format/README.md, *Reading images in place*.
        A streamed folder pack's table only says where each record lies (shard, slot): a shard
        is fetched, mapped and located the first time one of its records is read.
        """
        if self._table is None:
            where = self.catalog.table(list(cat.LOCATION_COLUMNS))
            if self._stream_shards is not None:  # per shard, on its first read: nothing fetched
                from imgpack.read.stream import StreamImages

                shards, slots = where.column("shard"), where.column("slot")
                self._table = StreamImages(
                    self._stream_shards, cat.numpy_of(shards), cat.numpy_of(slots)
                )
                return self._table
            try:
                self._table = locate_pack(
                    self._identity,
                    self._shard_paths,
                    self._shard_identities,
                    [shard["count"] for shard in self.header["shards"]],
                    cat.numpy_of(where.column("shard")),
                    cat.numpy_of(where.column("slot")),
                )
            except (PackFormatError, PackChangedError) as exc:
                if _moved(self.catalog_path, self._identity):  # its shards went with it
                    raise self._changed() from None
                if isinstance(exc, PackFormatError):
                    raise self._with_remedy(exc) from None
                raise
        return self._table

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            release_env(self._identity)
        self._env = None
        self._table = None  # the maps are unmapped when no Pack in this process uses them
        if self._stream_shards is not None:
            self._stream_shards.close()
            self._stream_shards = None
        if self._catalog_pin is not None:
            self._catalog_pin.close()
            self._catalog_pin = None
        self._forget_lookups()
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
        # The path and the version travel to spawned workers; each reopens the file on
        # unpickling and refuses another version. A streamed pack's source travels too: the
        # remote's files as resolved, never resolved again.
        return {"path": str(self.path), "version": self._version, "stream": self.stream}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["path"], state.get("stream"))
        if state.get("version") not in (None, self._version):
            self.close()
            raise self._changed()

    def __repr__(self) -> str:
        where = self.path if self.stream is None else f"{self._where} (streamed)"
        return f"<imgpack.Pack {where} records={len(self)} shards={len(self.header['shards'])}>"

    def check_window(self, window: int) -> None:
        """For a streamed folder pack: refuse a sampler window its shard cache cannot hold."""
        if self._stream_shards is not None:
            self._stream_shards.check_window(window)

    def prefetcher(self, ahead: int = 1):
        """What a ShardSampler's `prefetch` calls with the shards read next, or None.

        Streamed folder pack: hint them to the shard cache and fetch them into it, unpinned.
        Local folder pack: ask the kernel to read them ahead (`madvise(MADV_WILLNEED)` on the
        shards' maps, so the page cache has them when DataLoader workers read them).
        """
        if self._stream_shards is not None:
            return self._stream_shards.prefetcher(ahead)
        table = self.locate()
        if self.stream is not None or not table.located or len(table.maps) < 2:
            return None
        return _WillNeed(table)

    # -- records (read by ImageReads, described by CatalogLookups) --------------------------------
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


class _WillNeed:
    """prefetch(shards) of a local pack: the kernel reads the shards' pages ahead."""

    def __init__(self, table: ImageTable):
        self._table = table

    def __call__(self, shards: list[int]) -> None:
        import mmap

        for shard in shards:
            mapped = self._table.maps[shard]
            if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
                mapped.madvise(mmap.MADV_WILLNEED)


def _moved(catalog_path: Path, identity: tuple) -> bool:
    """Whether `catalog_path` no longer holds the catalog file of `identity`."""
    try:
        return file_identity(os.stat(catalog_path), is_immutable(identity)) != identity
    except OSError:
        return True


def open_pack(
    path: str | os.PathLike,
    rev: str | None = None,
    *,
    stream: bool = False,
    cache_limit: int | str | None = None,
    remote: str | None = None,
) -> Pack:
    """Open a pack read-only, as in the workspace or as of git revision `rev` (through DVC);
    raises PackFormatError/PackCorruptError with a clear message.

    `stream=True` reads it straight from its DVC remote (`remote`: a remote's name, as `dvc pull
    -r` takes), a shard at a time through the machine's shard cache bounded by `cache_limit`;
    `rev=None` then streams the version the workspace's dvc.lock (or .dvc file) records.
    """
    return Pack(path, rev, stream=stream, cache_limit=cache_limit, remote=remote)
