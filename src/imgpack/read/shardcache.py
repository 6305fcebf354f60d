"""The machine's bounded cache of whole shard files fetched from a DVC remote (spec: README.md)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imgpack.errors import InputError, PackCorruptError
from imgpack.read.cachefiles import empty_folder, examine, file_system, lock_file, same_file
from imgpack.read.cachespace import (
    checked_md5,
    entry_path,
    evict,
    is_pinned,
    lock_entry,
    no_room,
    remove_entry,
    scan,
)
from imgpack.read.sizes import exact_size, format_size, parse_size

__all__ = [
    "DEFAULT_LIMIT",
    "CachedShard",
    "ShardCache",
    "stream_cache_root",
]

DEFAULT_LIMIT = 20 * 10**9  # when neither the reader nor an earlier one on this machine set one

_NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs"}
_POLL = (0.02, 0.5)  # first and longest pause between attempts to make room
_WRONG_SIZE = object()  # _pin's answer for an entry whose size is not the one DVC recorded


def stream_cache_root() -> Path:
    """Where streamed shards are cached: the `stream` folder of $IMGPACK_CACHE, else of
    imgpack's folder in the user's cache folder."""
    if os.environ.get("IMGPACK_CACHE"):
        return Path(os.environ["IMGPACK_CACHE"]) / "stream"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgpack" / "stream"


class CachedShard:
    """A complete, verified shard file in the cache, pinned (never evicted) until closed."""

    def __init__(self, path: Path, md5: str, size: int, name: str, fd: int):
        self.path = path
        self.md5 = md5
        self.size = size
        self.name = name
        self._fd: int | None = fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Unpin: the entry may be evicted from now on (it counts as used now)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.utime(fd)
            os.close(fd)  # never LOCK_UN: a forked child's copy of the pin stays its own

    def __enter__(self) -> CachedShard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self):
        raise TypeError(
            "a CachedShard is a pin held by the process that got it; get() the shard in the "
            "process that reads it"
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "pinned"
        return f"<CachedShard {self.name or self.md5} {self.path} {state}>"


_CACHES: weakref.WeakSet[ShardCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._forget_inherited_locks()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ShardCache:
    """The machine's cache of streamed shard files (see the module's documentation)."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        limit: int | str | None = None,
        wait: float = 60.0,
    ):
        self.root = Path(root) if root is not None else stream_cache_root()
        self.wait = float(wait)
        self._limit_given = limit
        self._mutex = threading.Lock()
        self._held: set[int] = set()  # descriptors holding a download or the cache lock
        self._hint_fd: int | None = None
        self._hint_path: Path | None = None
        self._dirs_checked = False
        if limit is None:
            recorded = self._recorded_limit()
            self.limit = recorded or DEFAULT_LIMIT
            self.limit_from = "recorded" if recorded else "default"
        else:
            self.limit = parse_size(limit)
            self.limit_from = "given"
            self._record_limit()
        _CACHES.add(self)

    def __reduce__(self):
        return (type(self), (self.root, self._limit_given, self.wait))

    def __enter__(self) -> ShardCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_hint_fd", None)
        if fd is not None:  # the hint file is removed by the next scan, its lock gone
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the API ---------------------------------------------------------------------------------
    def get(
        self,
        md5: str,
        size: int,
        fetch: Callable[[Path], object],
        name: str = "",
        before_wait: Callable[[], object] | None = None,
    ) -> CachedShard:
        """The complete, verified file of `md5`, pinned; fetched with `fetch(tmp_path)` if absent.

        `before_wait()`, if given, is called once when the entry is not there, before this get
        waits for anything (another process's download, room in the cache): a reader lets go of
        the other shards it holds there, so readers waiting for room never hold it themselves.
        """
        md5 = checked_md5(md5)
        label = name or md5
        self._check_size(size, label)
        self._ensure_dirs()
        found = self._pin(md5, size, name)
        if isinstance(found, CachedShard):
            return found
        if before_wait is not None:
            before_wait()
        with self._download_lock(md5):
            found = self._pin(md5, size, name)  # fetched by the process we waited for
            if isinstance(found, CachedShard):
                return found
            if found is _WRONG_SIZE:
                self._drop_damaged(md5, size, label)
            return self._download(md5, size, fetch, name)

    def prefetch(
        self,
        md5: str,
        size: int,
        fetch: Callable[[Path], object],
        name: str = "",
        patience: float = 0.0,
    ) -> bool:
        """Fetch `md5` into the cache if it is absent, leaving it unpinned (a sampler's background
        fetch of the shards read next). Never waits long: returns False, having fetched nothing,
        when another process is fetching it already or when room cannot be made within `patience`
        seconds (readers' pins fill the cache); the reader then fetches it when it needs it.
        True when the entry is there."""
        md5 = checked_md5(md5)
        label = name or md5
        self._check_size(size, label)
        self._ensure_dirs()
        found = self._pin(md5, size, name)
        if isinstance(found, CachedShard):
            found.close()
            return True
        with self._download_lock(md5, wait=False) as locked:
            if not locked:
                return False
            found = self._pin(md5, size, name)
            if found is _WRONG_SIZE:
                self._drop_damaged(md5, size, label)
            elif found is None:
                found = self._download(md5, size, fetch, name, patience, spare_hinted=True)
            if found is None:
                return False
            found.close()
            return True

    def _check_size(self, size: int, label: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InputError(f"shard {label}: size {size!r} is not a number of bytes")
        if 2 * size > self.limit:
            raise InputError(
                f"cache_limit {exact_size(self.limit)} cannot hold 2 shards of {exact_size(size)}, the "
                f"size of shard {label}; set cache_limit to at least {format_size(2 * size)}, "
                "better a few shards more so readers can work ahead"
            )

    def hint(self, md5s: Sequence[str], after: int = 0) -> None:
        """The shards this process reads next, soonest first: eviction spares them. `after`:
        how many shards others read before the first of these (its rank, counting from 0)."""
        wanted = list(dict.fromkeys(checked_md5(m) for m in md5s))
        if self._hint_fd is None and not wanted:
            return
        self._ensure_dirs()
        # Ranks count every word of the file: "-" words put these `after` others.
        data = ("-\n" * (after if wanted else 0) + "".join(f"{m}\n" for m in wanted)).encode()
        with self._cache_lock():
            if self._hint_fd is None:
                path = self.root / "hints" / f"{os.getpid()}-{secrets.token_hex(4)}"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: ours at once; scans see it live
                self._hint_fd, self._hint_path = fd, path
            os.ftruncate(self._hint_fd, 0)
            os.pwrite(self._hint_fd, data, 0)

    def info(self) -> dict:
        """Entries, their bytes, the pinned ones, the downloads in progress and the limit."""
        shown = {"root": str(self.root), "limit": self.limit, "limit_from": self.limit_from}
        shown.update(entries=0, bytes=0)
        shown.update(pinned=0, pinned_bytes=0, downloads=0, download_bytes=0)
        if not (self.root / "entries").is_dir():
            return shown
        with self._cache_lock():
            state = scan(self.root)
            pinned = {m: s for m, (s, _) in state.entries.items() if is_pinned(self.root, m)}
        shown["entries"] = len(state.entries)
        shown["bytes"] = sum(s for s, _ in state.entries.values())
        shown["pinned"], shown["pinned_bytes"] = len(pinned), sum(pinned.values())
        shown["downloads"] = len(state.downloads)
        shown["download_bytes"] = sum(max(r, w) for r, w in state.downloads.values())
        return shown

    def clear(self) -> int:
        """Remove every entry no reader holds (pinned ones stay); returns how many went."""
        if not (self.root / "entries").is_dir():
            return 0
        removed = 0
        with self._cache_lock():
            for md5 in scan(self.root).entries:
                fd = lock_entry(self.root, md5)
                if fd is not None:
                    remove_entry(self.root, md5, fd)
                    removed += 1
        return removed

    def close(self) -> None:
        """Withdraw this process's hint."""
        fd, path = self._hint_fd, self._hint_path
        if fd is None:
            return
        with self._cache_lock():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)
            self._hint_fd = self._hint_path = None

    # -- entries ---------------------------------------------------------------------------------
    def _entry(self, md5: str) -> Path:
        return entry_path(self.root, md5)

    def _pin(self, md5: str, size: int, name: str):
        """A pinned handle on the entry, None if there is none, _WRONG_SIZE if it is damaged."""
        path = self._entry(md5)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not same_file(fd, path):  # evicted between the open and the lock
                os.close(fd)
                return None
            if os.fstat(fd).st_size != size:
                os.close(fd)
                return _WRONG_SIZE
            with contextlib.suppress(OSError):
                os.utime(fd)  # used now: the mtime orders eviction
        except BaseException:
            os.close(fd)
            raise
        return CachedShard(path, md5, size, name, fd)

    def _drop_damaged(self, md5: str, size: int, label: str) -> None:
        with self._cache_lock():
            fd = lock_entry(self.root, md5)
            if fd is not None:
                remove_entry(self.root, md5, fd)
                return
            path = self._entry(md5)
            if path.exists():
                raise PackCorruptError(
                    f"the cached copy of shard {label} ({path}) is not the {size} bytes DVC "
                    "recorded and a running reader holds it; stop the readers, run "
                    "`imgpack cache clear` and read again"
                )

    # -- downloads -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _download_lock(self, md5: str, wait: bool = True) -> Iterator[bool]:
        """Hold `md5`'s download lock; with `wait=False` yield False at once if another holds it."""
        path = self.root / "locks" / md5
        mode = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fd = self._hold(lock_file(path, mode))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            # Removed while held: a process that opened it meanwhile finds it gone and reopens.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._release(fd)

    def _download(
        self,
        md5: str,
        size: int,
        fetch: Callable,
        name: str,
        patience: float | None = None,
        spare_hinted: bool = False,
    ) -> CachedShard | None:
        """Fetch, check and publish `md5` (its download lock held), returning it pinned; None if
        no room was made within `patience` seconds (when given). With `spare_hinted`, room is
        made by evicting unhinted entries only."""
        label = name or md5
        for stale in (self.root / "tmp").glob(f"{md5}-*"):  # only a holder of the lock downloads
            shutil.rmtree(stale, ignore_errors=True)
        folder = self._reserve(md5, size, label, patience, spare_hinted)
        if folder is None:
            return None
        try:
            part = folder / f"{md5}.part"
            for _attempt in range(2):
                empty_folder(folder)
                fetch(part)
                got_size, got_md5 = examine(part)
                if (got_size, got_md5) == (size, md5):
                    break
                if got_md5 == md5:
                    raise InputError(
                        f"shard {label}: the file with md5 {md5} has {got_size} bytes, not the "
                        f"{size} given: pass the size DVC recorded for it"
                    )
            else:
                raise PackCorruptError(
                    f"shard {label} fetched twice from the DVC remote is {_described(got_size, got_md5)}"
                    f" where DVC recorded {size} bytes with md5 {md5}: the remote copy is "
                    f"damaged; delete files/md5/{md5[:2]}/{md5[2:]} from the remote and "
                    "`dvc push` it again from a machine with a good copy"
                )
            return self._publish(md5, size, name, part, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _publish(self, md5: str, size: int, name: str, part: Path, folder: Path) -> CachedShard:
        os.chmod(part, os.stat(part).st_mode & ~0o222)
        fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)  # pinned before it appears: nobody can evict it first
            with self._cache_lock():
                os.rename(part, self._entry(md5))
                shutil.rmtree(folder, ignore_errors=True)  # no longer reserved
        except BaseException:
            os.close(fd)
            raise
        return CachedShard(self._entry(md5), md5, size, name, fd)

    def _reserve(
        self,
        md5: str,
        size: int,
        label: str,
        patience: float | None = None,
        spare_hinted: bool = False,
    ) -> Path | None:
        """Room for `size` bytes, made by evicting and waiting: the new download's folder; None
        once `patience` seconds (when given) have passed without room."""
        folder = self.root / "tmp" / f"{md5}-{size}-{os.getpid()}"
        pause, seen, since = _POLL[0], None, time.monotonic()
        began = since
        while True:
            with self._cache_lock():
                state = scan(self.root)
                over = state.used + size - self.limit
                if over <= 0 or evict(self.root, state, over, spare_hinted):
                    folder.mkdir(exist_ok=True)
                    return folder
            if patience is not None and time.monotonic() - began >= patience:
                return None
            # Waiting is progress while anything in the cache changes; only a standstill times out.
            now = (
                frozenset(state.entries),
                frozenset(state.pinned),
                frozenset(state.downloads.items()),
            )
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= self.wait:
                raise InputError(no_room(self.root, state, self.limit, self.wait, size, label))
            time.sleep(pause)
            pause = min(2 * pause, _POLL[1])

    # -- the folders, the limit and this process's locks -----------------------------------------
    def _ensure_dirs(self) -> None:
        if self._dirs_checked:
            return
        for sub in ("entries", "tmp", "locks", "hints"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        kind = file_system(self.root)
        if kind in _NETWORK_FILE_SYSTEMS:
            raise InputError(
                f"the shard cache {self.root} is on a network file system ({kind}), where its "
                "locks cannot keep readers apart; set IMGPACK_CACHE to a folder on a local disk"
            )
        self._dirs_checked = True

    def _recorded_limit(self) -> int | None:
        try:
            text = (self.root / "limit").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    def _record_limit(self) -> None:
        if self._recorded_limit() == self.limit:
            return
        self._ensure_dirs()
        tmp = self.root / f".limit.tmp-{os.getpid()}"
        tmp.write_text(f"{self.limit}\n")
        os.replace(tmp, self.root / "limit")

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        fd = self._hold(lock_file(self.root / "lock", fcntl.LOCK_EX))
        try:
            yield
        finally:
            self._release(fd)

    def _hold(self, fd: int) -> int:
        with self._mutex:
            self._held.add(fd)
        return fd

    def _release(self, fd: int) -> None:
        with self._mutex:
            if fd not in self._held:  # closed by a fork's child hook: not ours any more
                return
            self._held.discard(fd)
        os.close(fd)

    def _forget_inherited_locks(self) -> None:
        """In a forked child: the parent's download, cache and hint locks stay the parent's.
        Pinned handles stay open (and pinned) until the child closes them."""
        self._mutex = threading.Lock()
        for fd in self._held:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held = set()
        if self._hint_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._hint_fd)
        self._hint_fd = self._hint_path = None


def _described(size: int | None, md5: str | None) -> str:
    if size is None:
        return "not a file (fetch wrote nothing at the path it was given)"
    return f"{size} bytes with md5 {md5}"
