"""Write every record of a pack back to DIR/<key>, refusing keys that would land outside DIR."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imgpack.errors import InputError, UnsafeKeyError
from imgpack.read.pack import Pack
from imgpack.util.progress import progress

__all__ = ["export_pack", "safe_target", "check_key_text"]


def check_key_text(key: str) -> list[str]:
    """The key's parts, or UnsafeKeyError when the text alone could escape the export folder."""
    parts = key.split("/")
    if (
        not key
        or "\0" in key
        or key.startswith("/")
        or "\\" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise UnsafeKeyError(f"refusing to export key {key!r}: absolute, empty, '..', '\\' or NUL")
    return parts


def safe_target(root: Path, key: str) -> Path:
    """The path for `key` under `root`, or UnsafeKeyError when the key could escape it."""
    parts = check_key_text(key)
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise UnsafeKeyError(
                f"refusing to export key {key!r}: {current} is a symlink or not a folder"
            )
    return root / key


def export_pack(pack_path: str | Path, out_dir: str | Path) -> int:
    """Export records and aliases byte for byte; returns the number of files written."""
    root = Path(out_dir)
    written = 0
    with Pack(pack_path) as pack:
        # Every key is checked before the first file is written: a refusal writes nothing.
        for key in pack.keys():
            check_key_text(key)
        for alias, _ in pack.aliases():
            check_key_text(alias)
        root.mkdir(parents=True, exist_ok=True)
        for record in progress(pack, "export", len(pack)):
            _write(safe_target(root, record.key), record.data)
            written += 1
        for alias, key in pack.aliases():
            _write(safe_target(root, alias), pack.get(key).data)
            written += 1
    return written


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
