"""New LMDB files at private temporary paths, published in one rename only when complete."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lmdb
import pyarrow.compute as pc

from imgpack.errors import InputError, OutputError, output_failed
from imgpack.format.codec import SUBDBS
from imgpack.util.outputs import make_durable

__all__ = ["LmdbFileWriter", "check_key"]

_MAX_KEY_BYTES = 511  # LMDB's compiled-in key limit


class LmdbFileWriter:
    """A new single-file LMDB at a private path, filled by appends in batched write transactions."""

    def __init__(
        self,
        path: Path,
        map_size: int,
        error_path: Path,
        batch_bytes: int = 32 << 20,
        batch_records: int = 10_000,
        existing: bool = False,
        check: bool = False,
    ):
        self.path = Path(path)
        self.error_path = error_path  # the output a failed write is reported against
        if not existing:  # else: a private, unpublished file of this build, written further
            self.path.unlink(missing_ok=True)
        self.map_size = map_size
        self.check = check  # read every value back after its transaction and compare
        self.batch_bytes = batch_bytes
        # Small images cost far more memory per record (Python objects, dirty pages) than their
        # bytes, so a transaction is also capped by its record count.
        self.batch_records = batch_records
        # lock=False: the file is private to this process, and no -lock file may be left behind.
        try:
            self.env = lmdb.open(
                str(self.path),
                subdir=False,
                lock=False,
                map_size=map_size,
                max_dbs=len(SUBDBS),
                sync=False,
                metasync=False,
                meminit=True,
                readahead=False,
            )
        except (lmdb.Error, OSError) as exc:
            raise output_failed(error_path, exc) from None
        self.dbs: dict[bytes, Any] = {}
        self._pending: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._pending_bytes = 0
        self._pending_records = 0
        self.grown = 0

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        """Queue `value` under `key` in sub-database `db`; keys must ascend within each db."""
        self._pending.setdefault(db, []).append((key, value))
        self._pending_bytes += len(value) + 64
        self._pending_records += 1
        if self._pending_bytes >= self.batch_bytes or self._pending_records >= self.batch_records:
            self.flush()

    def create(self, db: bytes) -> None:
        """Make sure sub-database `db` exists in the file, even if nothing is put into it."""
        self._pending.setdefault(db, [])

    def flush(self) -> None:
        if not self._pending_records and self._pending.keys() <= self.dbs.keys():
            return
        while True:
            opened = []
            try:
                with self.env.begin(write=True) as txn:
                    for name, items in self._pending.items():
                        if name not in self.dbs:
                            # Created in the same transaction as their first values: fewer
                            # transactions leave fewer recycled page buffers in the file.
                            self.dbs[name] = self.env.open_db(name, txn=txn)
                            opened.append(name)
                        if items:
                            txn.cursor(self.dbs[name]).putmulti(items, append=True)
                break
            except lmdb.MapFullError:
                for name in opened:  # handles from an aborted transaction are not valid
                    del self.dbs[name]
                # The aborted transaction wrote nothing; grow outside any transaction and retry.
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
                self.grown += 1
            except (lmdb.Error, OSError) as exc:
                raise output_failed(self.error_path, exc) from None
        if self.check:
            self._read_back()
        self._pending = {name: [] for name in self._pending}
        self._pending_bytes = self._pending_records = 0

    def _read_back(self) -> None:
        """Every value just committed, read back from the file's pages: a write that went wrong
        (failing memory or disk, a bug) stops the build before anything is published."""
        with self.env.begin() as txn:  # bytes: compared with memcmp, unlike a memoryview
            for name, items in self._pending.items():
                db = self.dbs[name]
                for key, value in items:
                    if txn.get(key, db=db) != value:
                        raise OutputError(
                            f"{self.error_path}: a value read back from {self.path.name} differs "
                            "from what was written (failing disk or memory?); nothing was published"
                        )

    def close(self, durable: bool = True) -> Path:
        """Write what is queued, make the file durable (unless the caller will, with
        `make_durable`) and close it; returns its path."""
        self.flush()
        try:
            self.env.close()  # written with pwrite: the file's fsync below makes it all durable
            self.env = None
        except (lmdb.Error, OSError) as exc:
            raise output_failed(self.error_path, exc) from None
        if durable:
            make_durable(self.path, self.error_path)
        return self.path

    def abort(self) -> None:
        if self.env is not None:
            with contextlib.suppress(lmdb.Error):
                self.env.close()
            self.env = None
        self.path.unlink(missing_ok=True)


def check_keys(keys) -> None:
    """`check_key` of a column of keys at once: the first that fails raises its error."""
    lengths = pc.binary_length(keys)
    if (
        len(keys)
        and not pc.all(
            pc.and_(pc.greater(lengths, 0), pc.less_equal(lengths, _MAX_KEY_BYTES))
        ).as_py()
    ):
        bad = pc.or_(pc.equal(lengths, 0), pc.greater(lengths, _MAX_KEY_BYTES))
        check_key(keys.filter(bad)[0].as_py())


def check_key(key: str) -> bytes:
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"key {key!r} is not valid UTF-8") from None
    if not raw or len(raw) > _MAX_KEY_BYTES:
        raise InputError(f"key {key!r} is {len(raw)} bytes; LMDB keys must be 1 to 511 bytes")
    return raw
