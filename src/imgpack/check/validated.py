"""The shards this machine validated (by name, digest, size, inode, mtime): carried shards are not hashed again."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from imgpack.ingest.cache import connect_state, state_dir


class ValidatedShards:
    """Shard files checked image by image, by (name, sha256, size, inode, mtime): unchanged ones
    need not be read again by the validate stage."""

    def __init__(self):
        try:
            self.db = connect_state(state_dir() / "validated-shards.sqlite")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS shards (name TEXT, sha256 TEXT, size INT, ino INT, "
                "mtime INT, PRIMARY KEY (name, sha256, size, ino, mtime)) WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError):
            self.db = None

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
        row = self.db.execute(
            "SELECT 1 FROM shards WHERE name=? AND sha256=? AND size=? AND ino=? AND mtime=?",
            identity,
        ).fetchone()
        return row is not None

    def add(self, path: Path, entry: dict[str, Any]) -> None:
        identity = self._identity(path, entry)
        if self.db is not None and identity is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("INSERT OR IGNORE INTO shards VALUES (?, ?, ?, ?, ?)", identity)

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.commit()
            self.db.close()
            self.db = None
