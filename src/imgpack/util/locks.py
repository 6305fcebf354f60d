"""One writer per output: a lock beside it that a second build finds held, and says so."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from imgpack.errors import OutputError

__all__ = ["writer_lock", "lock_path"]

_HELD: dict[str, list[int]] = {}  # lock path -> [fd, depth]: build() holds it, pack() again


def _drop_in_child() -> None:
    # A flock belongs to the open file, which a forked worker shares: closing the child's copy
    # leaves the build's lock held, and the lock goes the moment the build process ends, not
    # when its last worker has finished dying.
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


def lock_path(out: Path) -> Path:
    """`.<name>.lock` beside `out`: beside it, so every process writing `out` finds the same
    file whatever its working directory; outside it, so DVC never sees it in the output."""
    out = Path(out).absolute()
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold the lock on writing `out`, or fail at once if another process holds it."""
    path = lock_path(out)
    key = str(path)
    if key in _HELD:
        held = _HELD[key]
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, owner = _acquire(path, out), os.getpid()
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        if os.getpid() == owner:  # not a forked child unwinding: its copy went at the fork
            _HELD.pop(key, None)
            # Removed while still held: a process that opened it meanwhile finds it gone.
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)


def _acquire(path: Path, out: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"another build is writing {out} (it holds {path}); wait for it to finish, "
                "then run again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed it as we opened it: take the new one
