"""The machine's bounded cache of whole shard files fetched from a DVC remote (spec: README.md)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from imgpack.errors import InputError, PackCorruptError
from imgpack.util.text import counted

__all__ = [
    "DEFAULT_LIMIT",
    "CachedShard",
    "ShardCache",
    "format_size",
    "parse_size",
    "stream_cache_root",
]

DEFAULT_LIMIT = 20 * 10**9  # when neither the reader nor an earlier one on this machine set one

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50})
_SIZE_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
_MD5 = re.compile(r"[0-9a-f]{32}")
_DOWNLOAD = re.compile(r"([0-9a-f]{32})-(\d+)-(\d+)")  # tmp/<md5>-<bytes>-<pid>
_NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs"}
_POLL = (0.02, 0.5)  # first and longest pause between attempts to make room
_BLOCK = 1 << 20
_WRONG_SIZE = object()  # _pin's answer for an entry whose size is not the one DVC recorded


def parse_size(value: int | str, what: str = "cache_limit") -> int:
    """Bytes from an int or text: "20GB" = 20 * 10**9, "20GiB" = 20 * 2**30, "1000" = 1000."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _SIZE_TEXT.fullmatch(value)):
        scale = _UNITS.get(match.group(2).lower() or "b")
        if scale is not None and (size := int(Fraction(match.group(1)) * scale)) > 0:
            return size
    raise InputError(
        f'{what} {value!r} is not a size: use bytes (an integer) or text such as "20GB" '
        f'(10^9 bytes each) or "20GiB" (2^30 bytes each)'
    )


def format_size(n: int) -> str:
    """'20.0 GB', '512 bytes': a size for a message, in decimal units."""
    for unit, scale in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1000:.1f} KB" if n >= 1000 else f"{n} bytes"


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


@dataclass
class _State:
    """What the cache holds, counted from its folders under the cache lock."""

    entries: dict[str, tuple[int, int]]  # md5 -> (bytes, mtime_ns)
    downloads: dict[str, tuple[int, int]]  # tmp folder -> (bytes reserved, bytes written)
    other: int  # bytes of files imgpack did not put there
    hints: dict[str, int]  # md5 -> how soon a live process needs it (0: next)
    pinned: dict[str, int] = field(default_factory=dict)  # md5 -> bytes, found while evicting

    @property
    def used(self) -> int:
        reserved = sum(max(r, w) for r, w in self.downloads.values())
        return sum(size for size, _ in self.entries.values()) + reserved + self.other


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
        md5 = _checked_md5(md5)
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
        md5 = _checked_md5(md5)
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
                f"cache_limit {_exact(self.limit)} cannot hold 2 shards of {_exact(size)}, the "
                f"size of shard {label}; set cache_limit to at least {format_size(2 * size)}, "
                "better a few shards more so readers can work ahead"
            )

    def hint(self, md5s: Sequence[str], after: int = 0) -> None:
        """The shards this process reads next, soonest first: eviction spares them. `after`:
        how many shards others read before the first of these (its rank, counting from 0)."""
        wanted = list(dict.fromkeys(_checked_md5(m) for m in md5s))
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
            state = self._scan()
            pinned = {m: s for m, (s, _) in state.entries.items() if self._is_pinned(m)}
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
            for md5 in self._scan().entries:
                fd = self._lock_entry(md5)
                if fd is not None:
                    self._remove_entry(md5, fd)
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
        return self.root / "entries" / md5

    def _pin(self, md5: str, size: int, name: str):
        """A pinned handle on the entry, None if there is none, _WRONG_SIZE if it is damaged."""
        path = self._entry(md5)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not _same_file(fd, path):  # evicted between the open and the lock
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

    def _lock_entry(self, md5: str) -> int | None:
        """The entry's file locked exclusively, or None if a reader has it pinned (or it is gone)."""
        path = self._entry(md5)
        fd, _ = _try_lock(path)
        if fd is not None and not _same_file(fd, path):
            os.close(fd)
            return None
        return fd

    def _is_pinned(self, md5: str) -> bool:
        fd = self._lock_entry(md5)
        if fd is None:
            return self._entry(md5).exists()
        os.close(fd)
        return False

    def _remove_entry(self, md5: str, fd: int) -> None:
        """Delete the entry whose exclusive lock `fd` holds (under the cache lock)."""
        try:
            os.unlink(self._entry(md5))
        finally:
            os.close(fd)

    def _drop_damaged(self, md5: str, size: int, label: str) -> None:
        with self._cache_lock():
            fd = self._lock_entry(md5)
            if fd is not None:
                self._remove_entry(md5, fd)
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
            fd = self._hold(_lock_file(path, mode))
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
                _empty(folder)
                fetch(part)
                got_size, got_md5 = _examine(part)
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
                state = self._scan()
                over = state.used + size - self.limit
                if over <= 0 or self._evict(state, over, spare_hinted):
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
                raise InputError(self._too_small(state, size, label))
            time.sleep(pause)
            pause = min(2 * pause, _POLL[1])

    def _evict(self, state: _State, over: int, spare_hinted: bool = False) -> bool:
        """Delete unpinned entries in eviction order until `over` bytes are freed; if they
        cannot be, delete none (state.pinned then names the pinned ones). `spare_hinted`: a
        prefetch, which never evicts what a reader needs soon."""

        def order(md5: str):
            soon = state.hints.get(md5)
            return (0, state.entries[md5][1], md5) if soon is None else (1, -soon, md5)

        taken: list[tuple[str, int]] = []
        freed = 0
        try:
            for md5 in sorted(state.entries, key=order):
                if spare_hinted and md5 in state.hints:
                    break  # the hinted come last in the order
                fd = self._lock_entry(md5)
                if fd is None:
                    state.pinned[md5] = state.entries[md5][0]
                    continue
                taken.append((md5, fd))
                freed += state.entries[md5][0]
                if freed >= over:
                    break
            if freed < over:
                return False
            while taken:
                md5, fd = taken.pop()
                self._remove_entry(md5, fd)
            return True
        finally:
            for _, fd in taken:
                os.close(fd)

    def _too_small(self, state: _State, size: int, label: str) -> str:
        pinned = list(state.pinned.values())
        downloads = [max(r, w) for r, w in state.downloads.values()]
        held = [
            f"held by readers: {counted(len(pinned), 'shard')}, {_sizes(pinned)}",
            f"downloading: {counted(len(downloads), 'shard')}, {_sizes(downloads)}",
        ]
        if state.other:
            held.append(f"other files: {format_size(state.other)}")
        return (
            f"cache_limit {format_size(self.limit)} is too small for the shards being read at "
            f"once: shard {label} ({format_size(size)}) waited {self.wait:g} s for room in "
            f"{self.root} ({'; '.join(held)}); raise cache_limit to hold every reader's shards "
            "at once plus one each, or read with fewer processes"
        )

    # -- what the folders hold -------------------------------------------------------------------
    def _scan(self) -> _State:
        """Count entries and downloads (under the cache lock), removing killed processes' leftovers."""
        entries: dict[str, tuple[int, int]] = {}
        other = 0
        for item in _listing(self.root / "entries"):
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if _MD5.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                entries[item.name] = (st.st_size, st.st_mtime_ns)
            else:
                other += _disk_bytes(Path(item.path))
        downloads: dict[str, tuple[int, int]] = {}
        for item in _listing(self.root / "tmp"):
            match = _DOWNLOAD.fullmatch(item.name)
            if match is None:
                other += _disk_bytes(Path(item.path))
            elif self._downloading(match.group(1)):
                downloads[item.name] = (int(match.group(2)), _disk_bytes(Path(item.path)))
            else:  # its process was killed: the reservation is free again
                shutil.rmtree(item.path, ignore_errors=True)
        return _State(entries, downloads, other, self._read_hints())

    def _downloading(self, md5: str) -> bool:
        """Whether a live process holds the download lock of `md5`."""
        path = self.root / "locks" / md5
        fd, held = _try_lock(path)
        if fd is None:
            return held
        try:
            if _same_file(fd, path):
                os.unlink(path)  # a killed downloader's: whoever waits on it opens a new one
            return False
        finally:
            os.close(fd)

    def _read_hints(self) -> dict[str, int]:
        soon: dict[str, int] = {}
        for item in _listing(self.root / "hints"):
            try:
                fd = os.open(item.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # its process holds it: alive
                    text = os.pread(fd, os.fstat(fd).st_size, 0).decode("ascii", "replace")
                else:
                    os.unlink(item.path)  # a dead process's
                    continue
            finally:
                os.close(fd)
            for rank, line in enumerate(text.split()):
                if _MD5.fullmatch(line):
                    soon[line] = min(rank, soon.get(line, rank))
        return soon

    # -- the folders, the limit and this process's locks -----------------------------------------
    def _ensure_dirs(self) -> None:
        if self._dirs_checked:
            return
        for sub in ("entries", "tmp", "locks", "hints"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        kind = _file_system(self.root)
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
        fd = self._hold(_lock_file(self.root / "lock", fcntl.LOCK_EX))
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


# -- helpers -------------------------------------------------------------------------------------
def _checked_md5(md5: str) -> str:
    text = str(md5).lower()
    if not _MD5.fullmatch(text):
        raise InputError(f"{md5!r} is not the md5 DVC records for a file (32 hex digits)")
    return text


def _exact(n: int) -> str:
    return f"{format_size(n)} ({n:,} bytes)"


def _sizes(sizes: list[int], shown: int = 5) -> str:
    """'192.0 MB (64.0 MB, 64.0 MB, 64.0 MB)': a total and its parts, the largest first."""
    if not sizes:
        return "nothing"
    parts = [format_size(s) for s in sorted(sizes, reverse=True)]
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return f"{format_size(sum(sizes))} ({', '.join(parts[:shown])}{more})"


def _described(size: int | None, md5: str | None) -> str:
    if size is None:
        return "not a file (fetch wrote nothing at the path it was given)"
    return f"{size} bytes with md5 {md5}"


def _lock_file(path: Path, mode: int) -> int:
    """A descriptor holding `mode` on the lock file `path` (created if absent), waiting for it;
    never one on a file that was removed while we waited."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, mode)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _try_lock(path: Path) -> tuple[int | None, bool]:
    """(a descriptor of the existing file `path` locked exclusively, without waiting, or None;
    whether another process holds its lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, True
    return fd, False


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _examine(path: Path) -> tuple[int | None, str | None]:
    """Size and md5 of the regular file at `path`; (None, None) if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None, None
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, None
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _empty(folder: Path) -> None:
    for item in _listing(folder):
        if item.is_dir(follow_symlinks=False):
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.path)


def _listing(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as items:
            return list(items)
    except FileNotFoundError:
        return []


def _disk_bytes(path: Path) -> int:
    """Bytes of the file at `path`, or of every file under it; what vanishes meanwhile counts 0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    return sum(_disk_bytes(Path(item.path)) for item in _listing(path))


def _file_system(path: Path) -> str:
    """The type of the file system holding `path` (Linux's mount table), or ""."""
    try:
        table = Path("/proc/self/mounts").read_text()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind
