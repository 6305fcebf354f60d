"""Write a new pack at a temporary path and publish it with os.replace only when it is complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import InputError, output_failed
from imgpack.format.codec import HEADER_KEY, SUBDBS, encode_header, encode_index, encode_meta

__all__ = ["PackWriter", "estimate_map_size", "remove_stale_temporaries", "scratch_dir"]

_TMP_MARK = ".tmp-"
_MAX_KEY_BYTES = 511  # LMDB's compiled-in key limit


def temporary_path(out: Path) -> Path:
    return out.with_name(f".{out.name}{_TMP_MARK}{os.getpid()}")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temporaries (files or scratch folders) left beside `out` by killed processes."""
    removed = []
    for candidate in sorted(out.parent.glob(f".{out.name}{_TMP_MARK}*")):
        pid_text = candidate.name.rsplit(_TMP_MARK, 1)[1].split(".")[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
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


def estimate_map_size(total_bytes: int, count: int) -> int:
    """Map size from the input: values rounded up to whole pages, plus B-tree and index overhead."""
    page = 4096
    per_record = 3 * 256  # meta value, key entry, branch-page share
    data = total_bytes + count * (page // 2)
    return max(1 << 20, int((data + count * per_record) * 1.25) + (8 << 20))


class PackWriter:
    """Append records in key order into a fresh LMDB file; `publish()` moves it to `out` atomically."""

    def __init__(
        self, out: Path, map_size: int, batch_bytes: int = 32 << 20, batch_records: int = 10_000
    ):
        self.out = Path(out)
        self.tmp = temporary_path(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        self.tmp.unlink(missing_ok=True)
        self.map_size = map_size
        self.batch_bytes = batch_bytes
        # Small images cost far more memory per record (Python objects, dirty pages) than their
        # bytes, so a transaction is also capped by its record count.
        self.batch_records = batch_records
        # lock=False: the temporary is private to this process, and no -lock file may be left behind.
        self.env = lmdb.open(
            str(self.tmp),
            subdir=False,
            lock=False,
            map_size=map_size,
            max_dbs=len(SUBDBS),
            sync=False,
            metasync=False,
            meminit=True,
            readahead=False,
        )
        self.dbs = {name.decode(): self.env.open_db(name) for name in SUBDBS}
        self._pending: dict[str, list[tuple[bytes, bytes]]] = {n: [] for n in self.dbs}
        self._pending_bytes = 0
        self.count = 0
        self.aliases = 0
        self.grown = 0

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.env is not None:
            self.abort()

    def add(self, key: str, data: bytes, meta: dict[str, Any]) -> int:
        """Add the next record; keys must arrive in ascending order."""
        raw_key = _check_key(key)
        index = self.count
        packed_index = encode_index(index)
        self._pending["images"].append((packed_index, data))
        self._pending["meta"].append((packed_index, encode_meta(meta)))
        self._pending["keys"].append((raw_key, packed_index))
        self.count += 1
        self._pending_bytes += len(data) + 256
        if (
            self._pending_bytes >= self.batch_bytes
            or len(self._pending["keys"]) >= self.batch_records
        ):
            self.flush()
        return index

    def add_alias(self, alias: str, canonical_key: str) -> None:
        """Record `alias` as another key for the record stored under `canonical_key` (same bytes)."""
        self._pending["aliases"].append((_check_key(alias), _check_key(canonical_key)))
        self.aliases += 1

    def flush(self) -> None:
        if not any(self._pending.values()):
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for name, items in self._pending.items():
                        if items:
                            txn.cursor(self.dbs[name]).putmulti(items, append=True)
                break
            except lmdb.MapFullError:
                # The aborted transaction wrote nothing; grow outside any transaction and retry.
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
                self.grown += 1
            except (lmdb.Error, OSError) as exc:
                raise output_failed(self.out, exc) from None
        self._pending = {n: [] for n in self.dbs}
        self._pending_bytes = 0

    def publish(
        self, header: dict[str, Any], before_publish: Callable[[Path], None] | None = None
    ) -> Path:
        """Write the header, make the file durable, run `before_publish(tmp)`, move it into place."""
        self.flush()
        self._pending["header"].append((HEADER_KEY, encode_header(header)))
        self.flush()
        try:
            self.env.sync(True)
            self.env.close()
            self.env = None
            with open(self.tmp, "rb") as handle:
                os.fsync(handle.fileno())
        except (lmdb.Error, OSError) as exc:
            raise output_failed(self.out, exc) from None
        if before_publish is not None:
            before_publish(self.tmp)
        os.replace(self.tmp, self.out)
        _fsync_dir(self.out.parent)
        return self.out

    def abort(self) -> None:
        if self.env is not None:
            with contextlib.suppress(lmdb.Error):
                self.env.close()
            self.env = None
        self.tmp.unlink(missing_ok=True)


def _check_key(key: str) -> bytes:
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"key {key!r} is not valid UTF-8") from None
    if not raw or len(raw) > _MAX_KEY_BYTES:
        raise InputError(f"key {key!r} is {len(raw)} bytes; LMDB keys must be 1 to 511 bytes")
    return raw


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)
