"""Outputs that appear whole: private temporaries beside them, one atomic publish, leftovers of killed runs removed."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from imgpack.errors import output_failed

_TMP_MARK = ".tmp-"


def temporary_path(out: Path) -> Path:
    return out.with_name(f".{out.name}{_TMP_MARK}{os.getpid()}")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temporaries (files or scratch folders) left beside `out` by killed processes."""
    removed = []
    for candidate in sorted(out.parent.glob(f".{out.name}{_TMP_MARK}*")):
        pid_text = candidate.name.rsplit(_TMP_MARK, 1)[1].split(".")[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            _remove(candidate)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def scratch_dir(out: Path) -> Iterator[Path]:
    """A private working folder beside `out` (same file system), removed on exit or by the next run."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    path = out.with_name(f".{out.name}{_TMP_MARK}{os.getpid()}.scratch")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: in use (each creator clears its own exact path before reuse)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_durable(path: Path, error_path: Path) -> None:
    """A closed file's data and size on the disk."""
    try:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    except OSError as exc:
        raise output_failed(error_path, exc) from None


def publish(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` (file or folder) to `out` in one step, replacing what was there."""
    if out.is_dir() and not out.is_symlink() or tmp.is_dir() and out.exists():
        # rename(2) cannot replace a folder, nor a file by a folder: swap the two atomically,
        # then remove the old one, now at `tmp`.
        _exchange(tmp, out)
        _remove(tmp)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.parent)


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2 is not None:
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            error = ctypes.get_errno()
            raise output_failed(b, OSError(error, os.strerror(error)))
    # No atomic exchange on this system or file system: move the old one aside first.
    aside = b.with_name(f".{b.name}{_TMP_MARK}{os.getpid()}.old")
    _remove(aside)
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_errors(scratch: Path):
    """Failed writes of the working files (disk full) name the scratch folder, not a bare errno."""
    try:
        yield
    except sqlite3.Error as exc:
        raise output_failed(scratch, exc) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise output_failed(scratch, exc) from None
        raise
