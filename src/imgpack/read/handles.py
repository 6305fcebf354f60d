"""Process-wide handles on pack files: one LMDB environment and one read-only map of each file."""

from __future__ import annotations

import mmap
import os
import weakref
from array import array
from pathlib import Path

import lmdb

from imgpack.errors import REFETCH, PackCorruptError, PackFormatError
from imgpack.format.codec import SUBDBS

__all__ = [
    "MappedImages",
    "acquire_env",
    "check_pack_file",
    "forget_envs",
    "map_images",
    "release_env",
]

_MIN_PAGES = 2  # LMDB's two meta pages
_OS_PAGE = 4096

# One environment per file per process (LMDB refuses a second open of the same file), shared by
# every Pack on it: real path -> [environment, number of packs using it, identity of the file].
_ENVS: dict[str, list] = {}


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
            f"or not a pack; {REFETCH}"
        )
    return size


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def acquire_env(path: Path) -> tuple[lmdb.Environment, tuple]:
    """The shared read-only environment of `path` and the identity of the file it opened."""
    entry = _ENVS.get(str(path))
    if entry is not None:
        entry[1] += 1
        return entry[0], entry[2]
    check_pack_file(path)
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
    identity = file_identity(os.stat(path))
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if needed > identity[2]:
        env.close()
        raise PackCorruptError(
            f"{path} is {identity[2]} bytes but its database needs {needed}: the pack is truncated; "
            f"{REFETCH}"
        )
    _ENVS[str(path)] = [env, 1, identity]
    return env, identity


def release_env(path: Path) -> None:
    entry = _ENVS.get(str(path))
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            del _ENVS[str(path)]
            entry[0].close()


def sole_user(path: Path) -> bool:
    entry = _ENVS.get(str(path))
    return entry is not None and entry[1] == 1


def forget_envs() -> None:
    """In a forked child: close the inherited environments (maps stay valid and are kept)."""
    for env, _, _ in _ENVS.values():
        env.close()
    _ENVS.clear()


class MappedImages:
    """The pack file mapped read-only, with the byte range of every record's image in it."""

    __slots__ = ("map", "starts", "ends", "__weakref__")

    def __init__(self, mapped: mmap.mmap, starts: array, ends: array):
        self.map, self.starts, self.ends = mapped, starts, ends


# Every Pack on the same file shares one map and one table (16 bytes a record); gone with the last.
_MAPPED: weakref.WeakValueDictionary[tuple, MappedImages] = weakref.WeakValueDictionary()


def map_images(
    path: Path, identity: tuple, db_record: bytes, page_size: int, count: int
) -> MappedImages:
    """Map `path` read-only and locate every image in it, once per process and file."""
    cached = _MAPPED.get(identity)
    if cached is not None:
        return cached
    # Imported here: numpy's start-up is paid only by processes that read images.
    from imgpack.format.spans import locate_images

    with open(path, "rb") as handle:
        if file_identity(os.fstat(handle.fileno())) != identity:
            raise PackFormatError(
                f"{path} was replaced while open (e.g. by dvc checkout): close every Pack and "
                "ImageDataset on it and open it again"
            )
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        starts, ends = locate_images(mapped, db_record, page_size, count, str(path))
    except BaseException:
        mapped.close()
        raise
    if hasattr(mapped, "madvise"):
        # The walk touched every leaf page, which for small images is the whole file: let those
        # pages leave this process's RSS (they stay in the page cache for the reads to come).
        mapped.madvise(mmap.MADV_DONTNEED)
    images = MappedImages(mapped, starts, ends)
    _MAPPED[identity] = images
    return images
