"""What imgpack remembers between runs, outside the outputs DVC tracks: per-file ingest results, validated shards."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from imgpack.ingest.outcome import Examined, Failed, Outcome
from imgpack.util.projects import dvc_root

__all__ = [
    "state_dir",
    "state_name",
    "IngestCache",
    "FileStat",
    "open_state",
    "is_damaged",
    "warn_rebuilt",
]

# 2: outcome in columns; 3: every PNG chunk's CRC checked (PNGs an earlier version accepted are
# probed again once)
_VERSION = 3
# A file changed within this window of its last check may not show it in mtime (coarse clocks),
# so its result is not remembered: the racy-clean rule git uses for its index.
RACY_NS = 2_000_000_000

FileStat = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def state_dir() -> Path:
    """`$IMGPACK_STATE`, else `.dvc/tmp/imgpack` of the DVC project around the working
    directory (beside DVC's own state), else `~/.cache/imgpack/state`."""
    if os.environ.get("IMGPACK_STATE"):
        return Path(os.environ["IMGPACK_STATE"])
    root = dvc_root(Path.cwd().resolve())
    if root is not None:
        return root / ".dvc" / "tmp" / "imgpack"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "imgpack" / "state"


def state_name(path: str | Path) -> str:
    """The name imgpack's state gives what belongs to the file at `path` (a manifest, a pack):
    a digest of its real path."""
    return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24]


def changed_since(stat: FileStat | None, started: int) -> bool:
    """Whether the file of `stat` was modified or had its inode changed at `started` or later."""
    return stat is not None and (stat[1] >= started or stat[3] >= started)


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


# SQLite's primary result codes for a file that is not (or no longer) a sound database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_damaged(exc: BaseException) -> bool:
    """Whether `exc` says a state file itself is damaged: not a database, or malformed (not a
    lock, a full disk or a missing folder, which rebuilding would not mend)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and code is not None
        and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    )


class _OtherSchema(sqlite3.DatabaseError):
    """The state file is a database, but its table is not the one this imgpack writes."""


def warn_rebuilt(path: Path, what: str, reason: object, cost: str) -> None:
    """The one line saying a damaged state file was made again, and what that costs."""
    reason = " ".join(str(reason).split())
    print(
        f"imgpack: warning: {path}: {what} was damaged ({reason}); rebuilt it ({cost})",
        file=sys.stderr,
        flush=True,
    )


def remove_state(path: Path) -> None:
    """A state database and its WAL, shared-memory and journal files (a stale WAL must never be
    applied to the file made in its place)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        # not there, or no folder to hold it (a state path through a file): nothing to remove
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(f"{path}{suffix}")


def _open_table(path: Path, table: str, create: str) -> sqlite3.Connection:
    db = connect_state(path)
    try:
        found = db.execute(f"PRAGMA table_info({table})").fetchall()
        if found and [row[1:] for row in found] != _declared(table, create):
            names = ", ".join(row[1] for row in found)
            raise _OtherSchema(f"its {table} table has the columns {names}, not this imgpack's")
        db.execute(create)
    except BaseException:
        db.close()
        raise
    return db


@functools.cache
def _declared(table: str, create: str) -> list[tuple]:
    """The columns (name, type, not null, default, key) `create` makes, as SQLite lists them."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute(create)
        return [row[1:] for row in db.execute(f"PRAGMA table_info({table})")]


def open_state(
    path: Path, table: str, create: str, what: str, cost: str, repair: bool = True
) -> sqlite3.Connection:
    """The state database at `path`, its table made by `create` if new. A file that is no
    database, is malformed or holds another table of that name is deleted and made again, with
    one warning (`what` names the file for the user, `cost` says what rebuilding costs);
    `repair=False` (another process's file) raises instead. Other errors (a lock, no space, no
    such folder) are raised."""
    try:
        return _open_table(path, table, create)
    except sqlite3.DatabaseError as exc:
        if not repair or not (isinstance(exc, _OtherSchema) or is_damaged(exc)):
            raise
        reason = exc
    remove_state(path)
    db = _open_table(path, table, create)
    warn_rebuilt(path, what, reason, cost)
    return db


def _cache_file(version: int, real: str, algorithm: str, max_pixels: int) -> Path:
    key = f"{version}\0{real}\0{algorithm}\0{max_pixels}"
    return state_dir() / f"ingest-{hashlib.sha256(key.encode()).hexdigest()[:24]}.sqlite"


class IngestCache:
    """Per raw folder: key -> (stat, what ingest learned); a file whose stat is unchanged is not read.

    A file rewritten with the same size and its mtime put back still changes ctime; a file
    replaced by another changes the inode: both are read again. A failure the operating system
    caused (`Failed.transient`: permission denied, an I/O error) is not the file's and is never
    kept. A damaged cache file is rebuilt, with one warning (`repair`; not by `at`, whose file
    another process owns).
    """

    def __init__(
        self,
        folder: str | Path,
        algorithm: str,
        max_pixels: int,
        path: Path | None = None,
        repair: bool = True,
    ):
        if path is None:
            real = str(folder) if "://" in str(folder) else os.path.realpath(folder)
            path = _cache_file(_VERSION, real, algorithm, max_pixels)
            if not path.exists():  # the file of the version before, if any, is of no more use
                remove_state(_cache_file(_VERSION - 1, real, algorithm, max_pixels))
        self.path = path
        self.started = time.time_ns()
        self.repair = repair
        self.db = self._open()
        self.seen = 0
        self.hits = 0

    def _open(self) -> sqlite3.Connection | None:
        try:
            return open_state(
                self.path, "files", _CREATE, _WHAT, "this run reads every file once", self.repair
            )
        except (sqlite3.Error, OSError):
            return None  # no place to remember: every file is read, as without a cache

    def _rebuild(self, exc: sqlite3.Error, cost: str) -> None:
        """The cache found damaged while in use: warned about, deleted and made again, empty."""
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        self.db = None
        if not self.repair:
            return  # another process's file: it is theirs to mend; this one remembers nothing
        remove_state(self.path)
        self.db = self._open()
        warn_rebuilt(self.path, _WHAT, exc, cost)

    def lookup(self, keys: Sequence[str], stats: Sequence[FileStat | None]) -> list[Outcome | None]:
        """The remembered outcome of each key whose stat is unchanged, else None."""
        self.seen += len(keys)
        if self.db is None or not keys:
            return [None] * len(keys)
        marks = ",".join("?" * len(keys))
        try:
            rows = {
                row[0]: row
                for row in self.db.execute(
                    f"SELECT key, size, mtime, ino, ctime, status, a, b, c, d, e, f FROM files "
                    f"WHERE key IN ({marks})",
                    list(keys),
                )
            }
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            self._rebuild(exc, "this run reads every file not yet looked up")
            return [None] * len(keys)
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
        return cls("", "", 0, path, repair=False)

    def commit(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.commit()

    def remember(self, items: Iterable[tuple[str, FileStat | None, Outcome]]) -> None:
        """Keep each (key, stat, outcome) whose file was not changed within the racy window; an
        outcome the operating system caused (`transient`) is not the file's: never kept."""
        if self.db is None:
            return
        fresh = self.started - RACY_NS
        rows = [
            (key, *stat, *_columns(outcome))
            for key, stat, outcome in items
            if stat is not None and not changed_since(stat, fresh) and not outcome.transient
        ]
        for _ in range(2):  # once more into a cache rebuilt because it was found damaged
            try:
                self.db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                return
            except sqlite3.Error as exc:
                if not is_damaged(exc):
                    return  # locked or no space: this run's results are not kept, as before
                self._rebuild(exc, "what this run learned is kept from here on")
                if self.db is None:
                    return

    def close(self, keep: Iterable[str] | None = None) -> None:
        """Commit; forget files no longer in the folder when they are many (`keep`: every key seen)."""
        if self.db is None:
            return
        try:
            total = self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            if keep is not None and total > 2 * self.seen + 1000:
                self.db.execute("CREATE TEMP TABLE keep (key TEXT PRIMARY KEY)")
                self.db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((k,) for k in keep))
                self.db.execute("DELETE FROM files WHERE key NOT IN (SELECT key FROM keep)")
            self.db.commit()
        except sqlite3.Error as exc:
            if is_damaged(exc):
                self._rebuild(exc, "the next run reads every file once")
        if self.db is not None:
            self.db.close()
        self.db = None


_WHAT = "ingest's cache"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, size INT, mtime INT, "
    "ino INT, ctime INT, status TEXT, a, b, c, d, e, f) WITHOUT ROWID"
)

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
