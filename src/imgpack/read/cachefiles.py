"""The shard cache's files: locks that survive a removal race, listings, sizes and md5 checks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

__all__ = [
    "lock_file",
    "try_lock",
    "same_file",
    "examine",
    "empty_folder",
    "listing",
    "disk_bytes",
    "file_system",
]

_BLOCK = 1 << 20


def lock_file(path: Path, mode: int) -> int:
    """A descriptor holding `mode` on the lock file `path` (created if absent), waiting for it;
    never one on a file that was removed while we waited."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, mode)
            if same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def try_lock(path: Path) -> tuple[int | None, bool]:
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


def same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file `fd` has open."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def examine(path: Path) -> tuple[int | None, str | None]:
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


def empty_folder(folder: Path) -> None:
    for item in listing(folder):
        if item.is_dir(follow_symlinks=False):
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.path)


def listing(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder`; none if it is gone."""
    try:
        with os.scandir(folder) as items:
            return list(items)
    except FileNotFoundError:
        return []


def disk_bytes(path: Path) -> int:
    """Bytes of the file at `path`, or of every file under it; what vanishes meanwhile counts 0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    return sum(disk_bytes(Path(item.path)) for item in listing(path))


def file_system(path: Path) -> str:
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
