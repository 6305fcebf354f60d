"""What imgpack remembers between runs, outside the outputs DVC tracks: per-file ingest results, validated shards."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from imgpack.ingest.outcome import Examined, Failed, Outcome

__all__ = ["state_dir", "IngestCache", "FileStat"]

_VERSION = 2  # 2: outcome in columns
# A file changed within this window of its last check may not show it in mtime (coarse clocks),
# so its result is not remembered: the racy-clean rule git uses for its index.
RACY_NS = 2_000_000_000

FileStat = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def state_dir() -> Path:
    """`$IMGPACK_STATE`, else `.dvc/tmp/imgpack` of the DVC project around the working
    directory (beside DVC's own state), else `~/.cache/imgpack/state`."""
    if os.environ.get("IMGPACK_STATE"):
        return Path(os.environ["IMGPACK_STATE"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder / ".dvc" / "tmp" / "imgpack"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "imgpack" / "state"


def file_stat(path: str) -> FileStat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def connect_state(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class IngestCache:
    """Per raw folder: key -> (stat, what ingest learned); a file whose stat is unchanged is not read.

    A file rewritten with the same size and its mtime put back still changes ctime; a file
    replaced by another changes the inode: both are read again.
    """

    def __init__(
        self, folder: str | Path, algorithm: str, max_pixels: int, path: Path | None = None
    ):
        if path is None:
            real = str(folder) if "://" in str(folder) else os.path.realpath(folder)
            key = f"{_VERSION}\0{real}\0{algorithm}\0{max_pixels}"
            path = state_dir() / f"ingest-{hashlib.sha256(key.encode()).hexdigest()[:24]}.sqlite"
        self.path = path
        self.started = time.time_ns()
        try:
            self.db = connect_state(self.path)
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, size INT, mtime INT, "
                "ino INT, ctime INT, status TEXT, a, b, c, d, e, f) WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError):
            self.db = None  # no place to remember: every file is read, as without a cache
        self.seen = 0
        self.hits = 0

    def lookup(self, keys: Sequence[str], stats: Sequence[FileStat | None]) -> list[Outcome | None]:
        """The remembered outcome of each key whose stat is unchanged, else None."""
        self.seen += len(keys)
        if self.db is None or not keys:
            return [None] * len(keys)
        marks = ",".join("?" * len(keys))
        rows = {
            row[0]: row
            for row in self.db.execute(
                f"SELECT key, size, mtime, ino, ctime, status, a, b, c, d, e, f FROM files "
                f"WHERE key IN ({marks})",
                list(keys),
            )
        }
        out = []
        for key, stat in zip(keys, stats, strict=True):
            row = rows.get(key)
            if row is None or stat is None or row[1:5] != stat:
                out.append(None)
            else:
                self.hits += 1
                out.append(_outcome(row[5:12]))
        return out

    @classmethod
    def at(cls, path: Path) -> IngestCache:
        """The cache in file `path` (another process's `.path`): for workers that remember."""
        return cls("", "", 0, path)

    def commit(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.commit()

    def remember(self, items: Iterable[tuple[str, FileStat | None, Outcome]]) -> None:
        """Keep each (key, stat, outcome) whose file was not changed within the racy window."""
        if self.db is None:
            return
        fresh = self.started - RACY_NS
        rows = [
            (key, *stat, *_columns(outcome))
            for key, stat, outcome in items
            if stat is not None and stat[1] < fresh and stat[3] < fresh
        ]
        with contextlib.suppress(sqlite3.Error):
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def close(self, keep: Iterable[str] | None = None) -> None:
        """Commit; forget files no longer in the folder when they are many (`keep`: every key seen)."""
        if self.db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            total = self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            if keep is not None and total > 2 * self.seen + 1000:
                self.db.execute("CREATE TEMP TABLE keep (key TEXT PRIMARY KEY)")
                self.db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((k,) for k in keep))
                self.db.execute("DELETE FROM files WHERE key NOT IN (SELECT key FROM keep)")
            self.db.commit()
        self.db.close()
        self.db = None


# The columns status, a, b, c, d, e, f: "ok" and an Examined's fields but `spooled` (a spool
# belongs to one run), or "fail" and a Failed's kind and detail.


def _columns(outcome: Outcome) -> tuple:
    if outcome.ok:
        return (
            "ok",
            outcome.size,
            outcome.digest_hex,
            outcome.format,
            outcome.width,
            outcome.height,
            outcome.trailing,
        )
    return ("fail", outcome.kind, outcome.detail, None, None, None, None)


def _outcome(columns: tuple) -> Outcome:
    status, a, b, c, d, e, f = columns
    if status == "ok":
        return Examined(size=a, digest_hex=b, format=c, width=d, height=e, trailing=f)
    return Failed(kind=a, detail=b)
