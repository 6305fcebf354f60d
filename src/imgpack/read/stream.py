"""A pack read straight from its DVC remote, each shard when first needed (spec: README.md)."""

from __future__ import annotations

import collections
import mmap
import os
import threading
import time
import weakref
from array import array
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from imgpack.errors import ImgpackError, InputError, PackCorruptError, PackFormatError
from imgpack.format.codec import CATALOG_FILE, encode_index
from imgpack.format.spans import UnknownLayout
from imgpack.read.handles import MappedImages, map_images, release_env
from imgpack.read.remote_files import RemoteFile, RemotePack
from imgpack.read.shardcache import CachedShard, ShardCache, stream_cache_root
from imgpack.read.shards import open_shard
from imgpack.read.sizes import format_size, parse_size

__all__ = ["KEEP", "ShardPrefetch", "StreamImages", "StreamShards", "StreamSource"]

KEEP = 4  # shards a process holds at once unless a sampler's window says otherwise
IDLE_SECONDS = 1.0  # a process that read nothing for this long (to twice it) lets go of its shards
PREFETCH_PATIENCE = 1.0  # seconds the prefetcher waits for room before leaving a shard to readers


class _Fetch:
    """fetch(tmp_path) for the cache: exactly one object downloaded from the DVC remote (the cache
    checks its size and md5)."""

    def __init__(self, remote: RemotePack, file: RemoteFile):
        self.remote, self.file = remote, file

    def __call__(self, to: Path) -> None:
        self.remote.fetch(self.file, to, verify=False)


class StreamSource:
    """Where a streamed pack comes from: the revision's files on the DVC remote and the cache.

    `path` is the pack's path in the workspace (absolute); `remote` the resolved `RemotePack`;
    `catalog` its catalog file (the pack's one file, for a one-file pack) with its size; the
    cache is `ShardCache(cache_root, cache_limit)` in each process. `keep` is how many shards a
    process holds at once (the sampler sets its window).
    """

    def __init__(
        self,
        path: Path,
        remote: RemotePack,
        catalog: RemoteFile,
        cache_root: Path,
        cache_limit: int | None,
    ):
        self.path = path
        self.remote = remote
        self.catalog = catalog
        self.cache_root = cache_root
        self.cache_limit = cache_limit
        self.keep = KEEP
        self._cache: ShardCache | None = None

    @classmethod
    def resolve(
        cls,
        path: str | os.PathLike,
        rev: str | None = None,
        remote: str | None = None,
        cache_limit: int | str | None = None,
    ) -> StreamSource:
        """The pack at `path` as of `rev` (None: the workspace's dvc.lock or .dvc record) on
        `remote` (None: the output's remote, else the default one); its catalog's size is asked
        of the remote when DVC did not record it (one metadata request)."""
        limit = None if cache_limit is None else parse_size(cache_limit)
        pack = RemotePack.resolve(path, rev, remote)
        if pack.is_folder:
            try:
                catalog = pack.file(CATALOG_FILE)
            except KeyError:
                raise PackFormatError(
                    f"{pack.described} is a DVC-tracked folder without {CATALOG_FILE}: not an "
                    "imgpack pack"
                ) from None
        else:
            catalog = pack.files[0]
        catalog = replace(catalog, size=pack.size_of(catalog))
        return cls(Path(path).absolute(), pack, catalog, stream_cache_root(), limit)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # each process builds its own (its locks and hints are its own)
        return state

    @property
    def is_folder(self) -> bool:
        return self.remote.is_folder

    @property
    def described(self) -> str:
        """`path[@rev] on remote 'name'`: how messages name the streamed pack."""
        return f"{self.remote.described} on remote {self.remote.remote_name!r}"

    def cache(self) -> ShardCache:
        """This process's handle on the machine's shard cache (a forked child keeps its parent's)."""
        if self._cache is None:
            self._cache = ShardCache(self.cache_root, self.cache_limit)
        return self._cache

    def get(self, file: RemoteFile, size: int, before_wait=None) -> CachedShard:
        """`file` from the cache, fetched from the remote if absent; pinned until closed."""
        try:
            return self.cache().get(
                file.md5, size, _Fetch(self.remote, file), file.name, before_wait
            )
        except PackCorruptError as exc:
            raise self._damaged(file, exc) from None

    def prefetch(self, file: RemoteFile, size: int, cache: ShardCache | None = None) -> bool:
        """`file` fetched into the cache unless there, unpinned; False when left to the reader."""
        try:
            return (cache or self.cache()).prefetch(
                file.md5, size, _Fetch(self.remote, file), file.name, PREFETCH_PATIENCE
            )
        except PackCorruptError as exc:
            raise self._damaged(file, exc) from None

    def pin_catalog(self) -> CachedShard:
        return self.get(self.catalog, self.catalog.size)

    def _damaged(self, file: RemoteFile, exc: PackCorruptError) -> PackCorruptError:
        return PackCorruptError(f"{self.described} ({self.remote.url(file)}): {exc}")

    def __repr__(self) -> str:
        return f"StreamSource({self.described}, cache {self.cache_root})"


class _Held:
    """A shard this process holds: its pin, and its map with located images (or, for an LMDB
    layout the page walker does not know, its environment, read with plain lookups)."""

    __slots__ = ("pin", "images", "env", "identity", "txn", "dbs")

    def __init__(self, pin: CachedShard, images: MappedImages | None, env=None, identity=None):
        self.pin, self.images, self.env, self.identity = pin, images, env, identity
        self.txn = self.dbs = None
        if env is not None:
            self.dbs = [env.open_db(name, create=False) for name in (b"images", b"props")]
            self.txn = env.begin(buffers=False)

    def read(self, slot: int) -> bytes:
        images = self.images
        if images is not None:
            return images.map[images.starts[slot] : images.ends[slot]]
        value = self.txn.get(encode_index(slot), db=self.dbs[0])
        if value is None:
            raise PackCorruptError(f"{self.pin.name}: image {slot} is missing")
        return value

    def props(self) -> bytes:
        images = self.images
        if images is not None:
            if images.props is None:
                return b""
            start, end = images.props
            return images.map[start:end]
        return self.txn.get(encode_index(0), db=self.dbs[1]) or b""

    def release(self, forked: bool = False) -> None:
        self.images = None  # unmapped when no other Pack of this process maps the file
        if self.txn is not None:
            if not forked:  # a forked child's environments were dropped by handles
                self.txn.abort()
                release_env(self.identity)
            self.txn = self.env = self.dbs = None
        self.pin.close()


_LIVE: weakref.WeakSet[StreamShards] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for shards in list(_LIVE):
        shards._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class StreamShards:
    """One process's shards of a streamed folder pack: fetched on first read, a few held at once.

    `shards` is the header's list (name, count, file_bytes per shard number); each name must be a
    file of the remote's listing. Thread-safe: reads of one process take a lock (a download holds
    it, so other threads of the process wait for it too).
    """

    def __init__(self, source: StreamSource, shards: Sequence[dict[str, Any]], where: str):
        listed = {f.name: f for f in source.remote.files}
        self.files: list[RemoteFile] = []
        self.sizes: list[int] = []
        self.counts: list[int] = []
        for entry in shards:
            file = listed.get(entry["name"])
            if file is None:
                raise PackFormatError(
                    f"{where}: its catalog lists {entry['name']}, which DVC's record of the "
                    "folder does not: the pack pushed is not whole; rebuild it and `dvc push`"
                )
            if file.size is not None and file.size != entry["file_bytes"]:
                raise PackFormatError(
                    f"{where}: {entry['name']} is {file.size} bytes in DVC's record but "
                    f"{entry['file_bytes']} in the catalog; rebuild the pack and `dvc push`"
                )
            self.files.append(file)
            self.sizes.append(int(entry["file_bytes"]))
            self.counts.append(int(entry["count"]))
        self.where = where
        self._source = source
        limit = source.cache().limit
        largest = max(self.sizes, default=0)
        needed = source.catalog.size + 2 * largest
        if needed > limit:
            name = self.files[self.sizes.index(largest)].name
            raise InputError(
                f"cache_limit {format_size(limit)} cannot hold the catalog of {where} "
                f"({format_size(source.catalog.size)}) and 2 shards of {format_size(largest)} "
                f"({largest:,} bytes, its largest: {name}); set cache_limit to at least "
                f"{format_size(needed)}, better a few shards more so readers can work ahead"
            )
        # Shards one process may hold: at most half of what the cache has room for beside the
        # catalog, so another reader (or the prefetcher) always finds room for one more.
        self._room = max(1, (limit - source.catalog.size) // largest // 2) if largest else 1
        self._held: collections.OrderedDict[int, _Held] = collections.OrderedDict()
        # The last `keep`-window distinct shards read (most recent last), hinted to the cache
        # as being read: a prefetch never evicts them, a reader's own fetch evicts them last.
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._spans: dict[int, tuple] = {}  # located once per shard and process
        self._lock = threading.Lock()
        self._reads = 0
        self._janitor = 0  # pid of the process whose idle-release thread runs
        self._closed = False
        _LIVE.add(self)

    @property
    def keep(self) -> int:
        """How many shards this process holds at most: the sampler's window, within the cache."""
        return max(1, min(self._source.keep, self._room))

    @property
    def held(self) -> list[int]:
        """The shard numbers this process holds now, least recently read first."""
        with self._lock:
            return list(self._held)

    # -- reads -----------------------------------------------------------------------------------
    def read(self, shard: int, slot: int) -> bytes:
        with self._lock:
            self._reads += 1
            held = self._held.get(shard)
            if held is None:
                held = self._load(shard)
            else:
                self._held.move_to_end(shard)
            return held.read(slot)

    def read_many(self, shard_of: Sequence[int], slots: Sequence[int], indices) -> list[bytes]:
        out = []
        with self._lock:
            self._reads += 1
            for i in indices:
                shard = shard_of[i]
                held = self._held.get(shard)
                if held is None:
                    held = self._load(shard)
                else:
                    self._held.move_to_end(shard)
                out.append(held.read(slots[i]))
        return out

    def props(self, shard: int) -> bytes:
        """Shard `shard`'s `props` value (its images' digests, sizes, ...): fetches the shard."""
        with self._lock:
            self._reads += 1
            held = self._held.get(shard)
            if held is None:
                held = self._load(shard)
            return held.props()

    def release_pages(self) -> None:
        """Drop the pages read so far from this process's RSS (they stay in the page cache)."""
        with self._lock:
            for held in self._held.values():
                if held.images is not None and hasattr(held.images.map, "madvise"):
                    held.images.map.madvise(mmap.MADV_DONTNEED)

    def check_window(self, window: int) -> None:
        """Refuse a sampler window the cache cannot hold (with one shard more to fetch into):
        its shards, read shuffled together, would be evicted and fetched again and again."""
        limit = self._source.cache().limit
        largest = max(self.sizes, default=0)
        needed = self._source.catalog.size + (window + 1) * largest
        if largest and needed > limit:
            most = (limit - self._source.catalog.size) // largest - 1
            raise InputError(
                f"cache_limit {format_size(limit)} cannot hold a window of {window} shards of "
                f"{self.where} ({format_size(largest)} each, and the catalog, and one shard more "
                f"to fetch into): pass window={max(most, 1)} or less, or set cache_limit to at "
                f"least {format_size(needed)} (better: room for the next window too)"
            )

    def prefetcher(self, ahead: int = 1) -> ShardPrefetch:
        return ShardPrefetch(self._source, self.files, self.sizes, ahead)

    def close(self) -> None:
        """Let go of every shard (unmap, unpin); reads raise from now on."""
        with self._lock:
            self._closed = True
            self._release_all()
            if self._recent:
                self._recent.clear()
                self._source.cache().hint([])

    # -- holding -----------------------------------------------------------------------------------
    def _load(self, shard: int) -> _Held:
        """Fetch (if need be), pin and map `shard`; called with the lock held."""
        if self._closed:
            raise ImgpackError(f"{self.where} was closed; open it again")
        if not 0 <= shard < len(self.files):
            raise PackFormatError(f"{self.where}: no shard {shard}: the pack is damaged")
        while len(self._held) >= self.keep:
            self._release(next(iter(self._held)))
        if shard in self._recent:
            self._recent.move_to_end(shard)
        else:
            self._recent[shard] = None
            while len(self._recent) > self._source.keep:
                self._recent.popitem(last=False)
            self._source.cache().hint([self.files[s].md5 for s in reversed(self._recent)])
        pin = self._source.get(self.files[shard], self.sizes[shard], self._release_all)
        try:
            held = self._map(shard, pin)
        except BaseException:
            pin.close()
            raise
        self._held[shard] = held
        if self._janitor != os.getpid():
            self._janitor = os.getpid()
            threading.Thread(
                target=_let_go_when_idle,
                args=(weakref.ref(self), self._janitor),
                name="imgpack-stream-idle",
                daemon=True,
            ).start()
        return held

    def _map(self, shard: int, pin: CachedShard) -> _Held:
        spans = self._spans.get(shard)
        if spans is not None:  # located before in this process: map it again, no walk
            return _Held(pin, _remap(pin, spans))
        count = self.counts[shard]
        env, identity, _ = open_shard(pin.path, count, immutable=True)
        try:
            with env.begin() as txn:
                record, props = txn.get(b"images"), txn.get(b"props")
            try:
                images = map_images(pin.path, identity, record, env.stat()["psize"], count, props)
            except UnknownLayout:  # plain LMDB reads for this shard, its environment kept
                held, identity = _Held(pin, None, env, identity), None
                return held
            self._spans[shard] = (images.starts, images.ends, images.props)
            return _Held(pin, images)
        finally:
            if identity is not None:
                release_env(identity)

    def _release(self, shard: int) -> None:
        self._held.pop(shard).release()

    def _release_all(self) -> None:
        while self._held:
            self._release(next(iter(self._held)))

    def _idle_tick(self, seen: int) -> int | None:
        """Let go of every shard if nothing was read since the last tick; None once closed."""
        with self._lock:
            if self._closed:
                return None
            if self._reads == seen and self._held:
                self._release_all()
            return self._reads

    def _forked(self) -> None:
        """In a forked child: its own lock, no inherited shards (their pins are the parent's)."""
        self._lock = threading.Lock()
        self._janitor = 0
        self._recent = collections.OrderedDict()  # the parent's; this child hints its own
        held, self._held = self._held, collections.OrderedDict()
        for entry in held.values():
            try:
                entry.release(forked=True)
            except Exception:
                pass


def _let_go_when_idle(ref: weakref.ref, pid: int) -> None:
    """The idle-release thread of one StreamShards in one process."""
    seen = -1
    while True:
        time.sleep(IDLE_SECONDS)
        shards = ref()
        if shards is None or os.getpid() != pid:
            return
        seen = shards._idle_tick(seen)
        del shards
        if seen is None:
            return


def _remap(pin: CachedShard, spans: tuple) -> MappedImages:
    fd = os.open(pin.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size != pin.size:  # pinned entries are never replaced: not expected
            raise PackCorruptError(
                f"{pin.path} is {size} bytes, not the {pin.size} of {pin.name}; run "
                "`imgpack cache clear` and read again"
            )
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return MappedImages(mapped, *spans)


class StreamImages:
    """Record index -> image bytes of a streamed folder pack (`Pack.locate()` of it).

    Each record's shard and slot come from the catalog; the shard is fetched, pinned and mapped
    by `StreamShards` the first time one of its records is read. Nothing is fetched to build it.
    """

    __slots__ = ("shards", "shard_of", "slots", "__weakref__")
    located = True

    def __init__(self, shards: StreamShards, shard_col, slot_col):
        import numpy as np

        shard_col = np.asarray(shard_col, dtype=np.int64)
        slot_col = np.asarray(slot_col, dtype=np.int64)
        counts = np.asarray(shards.counts, dtype=np.int64)
        if len(shard_col) and (
            (shard_col < 0).any()
            or (shard_col >= len(counts)).any()
            or (slot_col < 0).any()
            or (slot_col >= counts[np.clip(shard_col, 0, max(len(counts) - 1, 0))]).any()
        ):
            raise PackCorruptError(
                f"{shards.where}: the catalog points outside its shards; rebuild the pack and "
                "`dvc push`"
            )
        self.shards = shards
        self.shard_of = array("i", shard_col.astype(np.int32).tobytes())
        self.slots = array("q", slot_col.tobytes())

    def read(self, i: int) -> bytes:
        """Image bytes of record `i` (already range-checked)."""
        return self.shards.read(self.shard_of[i], self.slots[i])

    def read_many(self, indices: Sequence[int]) -> list[bytes]:
        return self.shards.read_many(self.shard_of, self.slots, indices)

    def release_pages(self, indices: Sequence[int]) -> None:
        self.shards.release_pages()


class ShardPrefetch:
    """`prefetch(shards)` for `ShardSampler`: hints the shards of the windows ahead of the reader
    to the cache (eviction spares them) and fetches `shards` into it, unpinned.

    A shard the cache has no room for within PREFETCH_PATIENCE seconds (readers' pins fill it),
    that another process is fetching, or whose fetch fails (the network, a damaged copy: the
    reader fetching it then raises the error where it reads) is left to the reader. Picklable.
    """

    def __init__(
        self, source: StreamSource, files: list[RemoteFile], sizes: list[int], ahead: int = 1
    ):
        self._source, self._files, self._sizes = source, files, sizes
        # The window being read and the `ahead` after it: prefetch(w) is called once the reader
        # is `ahead` windows before w. The window being read stays hinted: its shards fetched
        # ahead but not yet opened by a reader are older than those of windows already read
        # (touched when let go), so unhinted they would be evicted first and fetched again.
        self._recent: collections.deque[list[int]] = collections.deque(maxlen=ahead + 1)
        self.fetched = 0  # shards this prefetcher found or put in the cache
        self.left = 0  # shards it left to the readers
        self.failed: list[str] = []  # why fetches failed (the readers meet the same errors)
        self._cache: ShardCache | None = None  # its own: its hint is not the readers'

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __call__(self, shards: Sequence[int]) -> None:
        self._recent.append(list(shards))
        if self._cache is None:
            self._cache = ShardCache(self._source.cache_root, self._source.cache_limit)
        upcoming = [self._files[s].md5 for window in self._recent for s in window]
        self._cache.hint(upcoming, after=self._source.keep)  # after the shards being read
        for shard in shards:
            try:
                fetched = self._source.prefetch(self._files[shard], self._sizes[shard], self._cache)
            except ImgpackError as exc:
                self.failed.append(str(exc))
                fetched = False
            if fetched:
                self.fetched += 1
            else:
                self.left += 1
