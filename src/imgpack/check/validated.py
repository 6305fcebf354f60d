"""The shards this machine validated (by name, digest, size, inode, mtime): carried shards are not hashed again."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from imgpack.ingest.cache import is_damaged, open_state, remove_state, state_dir, warn_rebuilt

_WHAT = "the record of validated shards"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS shards (name TEXT, sha256 TEXT, size INT, ino INT, "
    "mtime INT, PRIMARY KEY (name, sha256, size, ino, mtime)) WITHOUT ROWID"
)


class ValidatedShards:
    """Shard files checked image by image, by (name, sha256, size, inode, mtime): unchanged ones
    need not be read again by the validate stage. A damaged record file is rebuilt, with one
    warning: the shards it named are then hashed again once."""

    def __init__(self):
        self.path = state_dir() / "validated-shards.sqlite"
        self.db = self._open()

    def _open(self) -> sqlite3.Connection | None:
        try:
            return open_state(
                self.path, "shards", _CREATE, _WHAT, "every shard is hashed again once"
            )
        except (sqlite3.Error, OSError):
            return None

    def _rebuild(self, exc: sqlite3.Error) -> None:
        """Found damaged while in use: warned about, deleted and made again, empty."""
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        remove_state(self.path)
        self.db = self._open()
        warn_rebuilt(self.path, _WHAT, exc, "every shard is hashed again once")

    @staticmethod
    def _identity(path: Path, entry: dict[str, Any]) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return entry["name"], entry["sha256"], st.st_size, st.st_ino, st.st_mtime_ns

    def checked(self, path: Path, entry: dict[str, Any]) -> bool:
        identity = self._identity(path, entry)
        if self.db is None or identity is None or identity[2] != entry["file_bytes"]:
            return False
        try:
            row = self.db.execute(
                "SELECT 1 FROM shards WHERE name=? AND sha256=? AND size=? AND ino=? AND mtime=?",
                identity,
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            self._rebuild(exc)
            return False
        return row is not None

    def add(self, path: Path, entry: dict[str, Any]) -> None:
        identity = self._identity(path, entry)
        for _ in range(2):  # once more into a record rebuilt because it was found damaged
            if self.db is None or identity is None:
                return
            try:
                self.db.execute("INSERT OR IGNORE INTO shards VALUES (?, ?, ?, ?, ?)", identity)
                return
            except sqlite3.Error as exc:
                if not is_damaged(exc):
                    return  # locked or no space: this shard is hashed again next time
                self._rebuild(exc)

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.commit()
            self.db.close()
            self.db = None
