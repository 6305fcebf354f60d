"""What the shard cache holds and who needs it: entries, downloads and hints counted, and eviction."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from imgpack.errors import InputError
from imgpack.read.cachefiles import disk_bytes, listing, same_file, try_lock
from imgpack.read.sizes import format_size, sizes_summary
from imgpack.util.text import counted

__all__ = [
    "CacheState",
    "checked_md5",
    "entry_path",
    "lock_entry",
    "is_pinned",
    "remove_entry",
    "scan",
    "evict",
    "no_room",
]

_MD5 = re.compile(r"[0-9a-f]{32}")
_DOWNLOAD = re.compile(r"([0-9a-f]{32})-(\d+)-(\d+)")  # tmp/<md5>-<bytes>-<pid>


@dataclass
class CacheState:
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


def checked_md5(md5: str) -> str:
    text = str(md5).lower()
    if not _MD5.fullmatch(text):
        raise InputError(f"{md5!r} is not the md5 DVC records for a file (32 hex digits)")
    return text


def entry_path(root: Path, md5: str) -> Path:
    return root / "entries" / md5


def lock_entry(root: Path, md5: str) -> int | None:
    """The entry's file locked exclusively, or None if a reader has it pinned (or it is gone)."""
    path = entry_path(root, md5)
    fd, _ = try_lock(path)
    if fd is not None and not same_file(fd, path):
        os.close(fd)
        return None
    return fd


def is_pinned(root: Path, md5: str) -> bool:
    fd = lock_entry(root, md5)
    if fd is None:
        return entry_path(root, md5).exists()
    os.close(fd)
    return False


def remove_entry(root: Path, md5: str, fd: int) -> None:
    """Delete the entry whose exclusive lock `fd` holds (under the cache lock)."""
    try:
        os.unlink(entry_path(root, md5))
    finally:
        os.close(fd)


def scan(root: Path) -> CacheState:
    """Count entries and downloads (under the cache lock), removing killed processes' leftovers."""
    entries: dict[str, tuple[int, int]] = {}
    other = 0
    for item in listing(root / "entries"):
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if _MD5.fullmatch(item.name) and item.is_file(follow_symlinks=False):
            entries[item.name] = (st.st_size, st.st_mtime_ns)
        else:
            other += disk_bytes(Path(item.path))
    downloads: dict[str, tuple[int, int]] = {}
    for item in listing(root / "tmp"):
        match = _DOWNLOAD.fullmatch(item.name)
        if match is None:
            other += disk_bytes(Path(item.path))
        elif _downloading(root, match.group(1)):
            downloads[item.name] = (int(match.group(2)), disk_bytes(Path(item.path)))
        else:  # its process was killed: the reservation is free again
            shutil.rmtree(item.path, ignore_errors=True)
    return CacheState(entries, downloads, other, _read_hints(root))


def _downloading(root: Path, md5: str) -> bool:
    """Whether a live process holds the download lock of `md5`."""
    path = root / "locks" / md5
    fd, held = try_lock(path)
    if fd is None:
        return held
    try:
        if same_file(fd, path):
            os.unlink(path)  # a killed downloader's: whoever waits on it opens a new one
        return False
    finally:
        os.close(fd)


def _read_hints(root: Path) -> dict[str, int]:
    soon: dict[str, int] = {}
    for item in listing(root / "hints"):
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


def evict(root: Path, state: CacheState, over: int, spare_hinted: bool = False) -> bool:
    """Delete unpinned entries in eviction order until `over` bytes are freed; if they cannot
    be, delete none (state.pinned then names the pinned ones). `spare_hinted`: a prefetch,
    which never evicts what a reader needs soon."""

    def order(md5: str):
        soon = state.hints.get(md5)
        return (0, state.entries[md5][1], md5) if soon is None else (1, -soon, md5)

    taken: list[tuple[str, int]] = []
    freed = 0
    try:
        for md5 in sorted(state.entries, key=order):
            if spare_hinted and md5 in state.hints:
                break  # the hinted come last in the order
            fd = lock_entry(root, md5)
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
            remove_entry(root, md5, fd)
        return True
    finally:
        for _, fd in taken:
            os.close(fd)


def no_room(root: Path, state: CacheState, limit: int, wait: float, size: int, label: str) -> str:
    """The message for a shard that waited `wait` seconds for room in vain."""
    pinned = list(state.pinned.values())
    downloads = [max(r, w) for r, w in state.downloads.values()]
    held = [
        f"held by readers: {counted(len(pinned), 'shard')}, {sizes_summary(pinned)}",
        f"downloading: {counted(len(downloads), 'shard')}, {sizes_summary(downloads)}",
    ]
    if state.other:
        held.append(f"other files: {format_size(state.other)}")
    return (
        f"cache_limit {format_size(limit)} is too small for the shards being read at "
        f"once: shard {label} ({format_size(size)}) waited {wait:g} s for room in "
        f"{root} ({'; '.join(held)}); raise cache_limit to hold every reader's shards "
        "at once plus one each, or read with fewer processes"
    )
