"""Walk a raw folder and yield every file in record-key order, with file-system problems named."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISLNK, S_ISREG

from imgpack.errors import InputError
from imgpack.ingest.found import MAX_KEY_BYTES, Found, display_path
from imgpack.ingest.remote import walk_url
from imgpack.util.urls import is_url

__all__ = ["walk_sorted", "walk_stat_blocks", "stat_line", "found_at"]


def walk_sorted(
    root: str | Path, exclude: set[str] | None = None, stat: bool = False
) -> Iterator[Found]:
    """Yield every non-folder entry under `root` in ascending key order; memory is one folder listing.

    `stat`: each entry comes with its stat (following a symlink; None when it fails), taken
    relative to its open folder, which spares the kernel the whole path. `root` may be a URL
    (s3://bucket/prefix, ...): then every object under the prefix, with what the listing says.
    """
    if is_url(root):
        yield from walk_url(str(root))
        return
    root_real = _checked_root(root)
    exclude = {os.path.realpath(p) for p in (exclude or ())}
    stack: list[Iterator[tuple[str, str, int]]] = [iter(_listing(root_real))]
    prefixes, folders = [""], [os.path.join(root_real, "")]
    fds: list[int | None] = [_open_folder(root_real)] if stat else []
    try:
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                prefixes.pop()
                folders.pop()
                if stat and (fd := fds.pop()) is not None:
                    os.close(fd)
                continue
            _, name, kind = item
            key, path = prefixes[-1] + name, folders[-1] + name
            if kind == _DIR:
                stack.append(iter(_listing(path)))
                prefixes.append(key + "/")
                folders.append(path + "/")
                if stat:
                    fds.append(_open_folder(path))
                continue
            if path in exclude:
                continue
            yield _classify(
                key, path, kind, root_real, _stat_in(fds[-1], name, path) if stat else None
            )
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


def walk_stat_blocks(
    root: str | Path, exclude: set[str] | None, block: int, pool=None
) -> Iterator[str]:
    """The walk `walk_sorted(root, exclude, stat=True)` gives, as text in blocks of `block` lines
    (the last one shorter, maybe empty): a line per entry, `key NUL problem NUL size NUL mtime NUL
    inode NUL ctime` (`key NUL problem NUL -` when the stat failed). For telling whether anything
    changed at 1-3 us a file: no object per file, and the stat taken within its open folder.
    With a `pool` of worker processes, this process lists the folders and the workers stat their
    files, a run of them at a time (threads would not help: the GIL is held between stats)."""
    from imgpack.parallel.workers import ordered_map

    root_real = _checked_root(root)
    runs = ((None, run) for run in _stat_runs(root_real, exclude))
    pieces: list[str] = []
    held = 0  # lines in `pieces`
    for _, (text, count) in ordered_map(stat_run, runs, pool):
        while held + count >= block:
            cut = _after_line(text, block - held)
            pieces.append(text[:cut])
            yield "".join(pieces)
            text, count, pieces, held = text[cut:], count - (block - held), [], 0
        pieces.append(text)
        held += count
    yield "".join(pieces)


def _after_line(text: str, n: int) -> int:
    """The offset just past the n-th line of `text` (lines are whole entries: no key holds a
    NUL, and each line has two or five)."""
    at = 0
    for _ in range(n):
        at = text.index("\n", at) + 1
    return at


_RUN = 2048  # files stat'ed in one task


def _stat_runs(root_real: str, exclude: set[str] | None) -> Iterator[tuple]:
    """The walk's files in key order, as runs (folder, key prefix, root, names and kinds) of at
    most _RUN files of one folder: the listing, without a stat."""
    exclude = {os.path.realpath(p) for p in (exclude or ())}
    stack = [(iter(_listing(root_real)), "", os.path.join(root_real, ""))]
    run: list[tuple[str, int]] = []
    while stack:
        entries, prefix, folder = stack[-1]
        for _, name, kind in entries:
            if kind == _DIR:
                if run:
                    yield folder, prefix, root_real, run
                    run = []
                path = folder + name
                stack.append((iter(_listing(path)), f"{prefix}{name}/", f"{path}/"))
                break
            if exclude and folder + name in exclude:
                continue
            run.append((name, kind))
            if len(run) >= _RUN:
                yield folder, prefix, root_real, run
                run = []
        else:
            if run:
                yield folder, prefix, root_real, run
                run = []
            stack.pop()


def stat_run(task: tuple) -> tuple[str, int]:
    """The walk's lines of a run of files of one folder (see `_stat_runs`), and how many."""
    folder, prefix, root_real, run = task
    stat, lines = os.stat, []
    fd = _open_folder(folder)
    try:
        for name, kind in run:
            key = prefix + name
            if kind == _FILE and len(key) <= MAX_KEY_BYTES and key.isascii():
                try:  # _classify's common case, inline: the line `stat_line` would give
                    st = stat(name, dir_fd=fd) if fd is not None else stat(folder + name)
                except OSError:
                    lines.append(f"{key}\0None\0-\n")
                else:
                    lines.append(
                        f"{key}\0None\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0"
                        f"{st.st_ctime_ns}\n"
                    )
            else:
                path = folder + name
                found = _classify(key, path, kind, root_real, _stat_in(fd, name, path))
                lines.append(stat_line(found))
    finally:
        if fd is not None:
            os.close(fd)
    return "".join(lines), len(lines)


def stat_line(found: Found) -> str:
    """A found file's line in `walk_stat_blocks`."""
    st = found.stat
    if st is None:
        return f"{found.key}\0{found.problem}\0-\n"
    return f"{found.key}\0{found.problem}\0{st[0]}\0{st[1]}\0{st[2]}\0{st[3]}\n"


def _checked_root(root: str | Path) -> str:
    root_real = os.path.realpath(root)
    if not os.path.isdir(root_real):
        raise InputError(
            f"{root}: raw image folder not found (check the path, or ingest.folder in params.yaml)"
        )
    return root_real


def _open_folder(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None  # gone or replaced since it was listed: its entries are stat'ed by path


def _stat_in(fd: int | None, name: str, path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(name, dir_fd=fd) if fd is not None else os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


_DIR, _LINK, _FILE, _OTHER = range(4)


def _kind(entry: os.DirEntry) -> int:
    try:
        if entry.is_dir(follow_symlinks=False):
            return _DIR
        if entry.is_symlink():
            return _LINK
        return _FILE if entry.is_file(follow_symlinks=False) else _OTHER
    except OSError:
        return _OTHER


def _listing(path: str) -> list[tuple[str, str, int]]:
    """(sort name, name, kind) of every entry, sorted: folders sort as "name/" so that a
    depth-first walk yields full keys in byte order. Tuples, not DirEntry objects: a folder of a
    million files is listed in a third of the memory."""
    try:
        with os.scandir(path) as entries:
            listed = [(_kind(entry), entry.name) for entry in entries]
    except OSError as exc:
        raise InputError(f"{display_path(path)}: cannot list the folder ({exc.strerror})") from None
    listed = [(name + "/" if kind == _DIR else name, name, kind) for kind, name in listed]
    listed.sort()
    return listed


def _classify(key: str, path: str, kind: int, root_real: str, stat=None) -> Found:
    if kind == _FILE and len(key) <= MAX_KEY_BYTES and key.isascii():
        return Found(key, path, None, "", stat)  # the common case: no check can fail
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        return Found(key, path, "bad_path", "path is not valid UTF-8", stat)
    if len(raw) > MAX_KEY_BYTES:
        return Found(key, path, "bad_path", f"key is {len(raw)} bytes, over LMDB's 511", stat)
    if kind == _LINK:
        problem = _symlink_problem(path, root_real)
        if problem:
            return Found(key, path, "bad_symlink", problem, stat)
    elif kind != _FILE:
        return Found(key, path, "not_image", "not a regular file", stat)
    return Found(key, path, None, "", stat)


def _symlink_problem(path: str, root_real: str) -> str | None:
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as exc:
        return "symlink loops" if exc.errno == errno.ELOOP else "symlink target does not exist"
    if os.path.commonpath([target, root_real]) != root_real:
        return "symlink points outside the raw folder"
    if os.path.isdir(target):
        return "symlink to a folder is not followed"
    return None


def found_at(root: str | Path, key: str) -> Found:
    """The file at `key` under `root` as the walk finds it (its stat, any problem), for a run
    that looks again at a few files the walk named."""
    root_real = _checked_root(root)
    path = os.path.join(root_real, key)
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        kind = _FILE  # gone since the walk: reading it will say so
    else:
        kind = _LINK if S_ISLNK(mode) else _FILE if S_ISREG(mode) else _OTHER
    return _classify(key, path, kind, root_real, _stat_in(None, key, path))
