"""Process-wide handles on pack files: one LMDB environment and one read-only map of each file."""

from __future__ import annotations

import mmap
import os
import weakref
from array import array
from pathlib import Path

import lmdb

from imgpack.errors import REFETCH, PackChangedError, PackCorruptError, PackFormatError
from imgpack.format.codec import SUBDBS

__all__ = [
    "IMMUTABLE",
    "MappedImages",
    "acquire_env",
    "check_pack_file",
    "file_identity",
    "forget_envs",
    "is_immutable",
    "map_images",
    "mapped_props",
    "release_env",
]

_MIN_PAGES = 2  # LMDB's two meta pages
_OS_PAGE = 4096
_ATTEMPTS = 3  # opens of a path that a publish replaced between two steps of the open
# In an identity's mtime place: a file never modified (a shard cache entry, whose mtime the cache
# touches to order its evictions), known by device, inode and size alone.
IMMUTABLE = -1

# One environment per file per process (LMDB must not open a file twice in a process), shared by
# every Pack on it. Keyed by the file's identity, not its path: after a publish the path names
# another version, while a Pack opened before keeps reading the file it opened. Each entry holds
# a descriptor on its file, so the file (and its identity) lives as long as the entry even once
# it is renamed or deleted, and the images are mapped from that very file.
# identity -> [environment, number of users, descriptor, path it was opened by]
_ENVS: dict[tuple, list] = {}
# path -> identity of the environment last acquired by it (for callers that release by path)
_LAST: dict[str, tuple] = {}


def check_pack_file(path: Path) -> int:
    """Raise a clear error for a missing, empty or undersized file before LMDB maps it."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise PackFormatError(f"{path}: no such pack file") from None
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the pack file ({exc.strerror})") from None
    _check_size(path, size)
    return size


def _check_size(path: Path, size: int) -> None:
    if size < _MIN_PAGES * _OS_PAGE:
        raise PackCorruptError(
            f"{path} is {size} bytes, too small for an LMDB file: the pack is truncated "
            f"or not a pack; {REFETCH}"
        )


def file_identity(st: os.stat_result, immutable: bool = False) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime) of a file; with `immutable`, IMMUTABLE in the mtime's place."""
    return st.st_dev, st.st_ino, st.st_size, IMMUTABLE if immutable else st.st_mtime_ns


def is_immutable(identity: tuple | None) -> bool:
    """Whether `identity` is of a file opened as immutable (see IMMUTABLE)."""
    return identity is not None and identity[3] == IMMUTABLE


def changed_file(path: Path) -> PackChangedError:
    return PackChangedError(
        f"{path} changed since its pack was opened (another version was published, or "
        "dvc checkout replaced it); open the pack again"
    )


def acquire_env(
    path: Path, expected: tuple | None = None, immutable: bool = False
) -> tuple[lmdb.Environment, tuple]:
    """The shared read-only environment of `path` and the identity of the file it opened.

    With `expected` (the identity seen when the pack was opened) only that file will do: the one
    this process still holds, or `path` if it is that file still; else PackChangedError.
    `immutable` (or an immutable `expected`): the file is never modified, only its mtime touched
    (a shard cache entry), so its identity leaves the mtime out.
    """
    if expected is not None and expected in _ENVS:
        return _use(path, expected)
    immutable = immutable or is_immutable(expected)
    for _ in range(_ATTEMPTS):
        fd = _open_file(path, expected)
        try:
            identity = file_identity(os.fstat(fd), immutable)
            if expected is not None and identity != expected:
                raise changed_file(path)
            if identity in _ENVS:
                os.close(fd)
                return _use(path, identity)
            env = _open_env(path, identity)
        except BaseException:
            _close_quietly(fd)
            raise
        if env is not None:
            _ENVS[identity] = [env, 1, fd, str(path)]
            _LAST[str(path)] = identity
            return env, identity
        os.close(fd)  # `path` was replaced between the two opens: open what it is now
        if expected is not None:
            raise changed_file(path)
    raise changed_file(path)


def _open_file(path: Path, expected: tuple | None) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if expected is not None:
            raise changed_file(path) from None
        raise PackFormatError(f"{path}: no such pack file") from None
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the pack file ({exc.strerror})") from None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # closed already, on the way to the error being raised


def _open_env(path: Path, identity: tuple) -> lmdb.Environment | None:
    """LMDB's environment on `path`, if `path` is still the file of `identity`."""
    _check_size(path, identity[2])
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
    try:  # LMDB opened the path by name
        same = file_identity(os.stat(path), is_immutable(identity)) == identity
    except OSError:
        same = False
    if not same:
        env.close()
        return None
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if needed > identity[2]:
        env.close()
        raise PackCorruptError(
            f"{path} is {identity[2]} bytes but its database needs {needed}: the pack is truncated; "
            f"{REFETCH}"
        )
    return env


def _use(path: Path, identity: tuple) -> tuple[lmdb.Environment, tuple]:
    entry = _ENVS[identity]
    entry[1] += 1
    _LAST[str(path)] = identity
    return entry[0], identity


def release_env(key: tuple | Path) -> None:
    """Release an environment by the identity `acquire_env` returned (or the path it was given)."""
    identity = _LAST.get(str(key)) if isinstance(key, (str, os.PathLike)) else key
    entry = _ENVS.get(identity)
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            del _ENVS[identity]
            if _LAST.get(entry[3]) == identity:
                del _LAST[entry[3]]
            entry[0].close()
            os.close(entry[2])


def forget_envs() -> None:
    """In a forked child: close the inherited environments (maps stay valid and are kept)."""
    for env, _, fd, _ in _ENVS.values():
        env.close()
        _close_quietly(fd)
    _ENVS.clear()
    _LAST.clear()


class MappedImages:
    """The pack file mapped read-only, with the byte range of every record's image in it (and of
    its `props` value, so the digests of a version stay readable once its files are deleted)."""

    __slots__ = ("map", "starts", "ends", "props", "__weakref__")

    def __init__(self, mapped: mmap.mmap, starts: array, ends: array, props=None):
        self.map, self.starts, self.ends = mapped, starts, ends
        self.props: tuple[int, int] | None = props


# Every Pack on the same file shares one map and one table (16 bytes a record); gone with the last.
_MAPPED: weakref.WeakValueDictionary[tuple, MappedImages] = weakref.WeakValueDictionary()


def map_images(
    path: Path,
    identity: tuple,
    db_record: bytes,
    page_size: int,
    count: int,
    props_record: bytes | None = None,
) -> MappedImages:
    """Map the file of `identity` (its environment acquired by the caller) read-only and locate
    every image in it, and its `props` value (`props_record`: that sub-database's MDB_db entry),
    once per process and file."""
    cached = _MAPPED.get(identity)
    if cached is not None:
        return cached
    # Imported here: numpy's start-up is paid only by processes that read images.
    from imgpack.format.spans import locate_images

    # The environment's own descriptor: the file it read, even if `path` now names another.
    mapped = mmap.mmap(_ENVS[identity][2], 0, access=mmap.ACCESS_READ)
    try:
        starts, ends = locate_images(mapped, db_record, page_size, count, str(path))
        props = None
        if props_record is not None:  # one value, under index 0, like an image's
            first, last = locate_images(mapped, props_record, page_size, 1, f"{path} props")
            props = (first[0], last[0])
    except BaseException:
        mapped.close()
        raise
    if hasattr(mapped, "madvise"):
        # The walk touched every leaf page, which for small images is the whole file: let those
        # pages leave this process's RSS (they stay in the page cache for the reads to come).
        mapped.madvise(mmap.MADV_DONTNEED)
    images = MappedImages(mapped, starts, ends, props)
    _MAPPED[identity] = images
    return images


def mapped_props(identity: tuple) -> bytes | None:
    """The `props` value of the file of `identity`, if this process maps it, else None."""
    images = _MAPPED.get(identity)
    if images is None or images.props is None:
        return None
    start, end = images.props
    return images.map[start:end]
