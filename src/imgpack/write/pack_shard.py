"""One shard of an incremental pack as a worker task: its images from ingest's spool, raw files or an older shard."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import InputError
from imgpack.format.codec import encode_index
from imgpack.write.layout import ShardLayout
from imgpack.write.shard import ShardWriter, shard_entry


@dataclass(frozen=True, slots=True)
class Source:
    """Where one image's bytes are, and what they must be: `kind` is file, spool or shard."""

    kind: str
    where: str  # raw file path, spool file path, or older shard path
    offset: int  # spool offset or older shard's slot; 0 for a raw file
    size: int
    hash: str  # hex digest the bytes must have
    format: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ShardTask:
    path: str  # the finished shard's file; written at a private name first
    hash_algorithm: str
    layout: ShardLayout
    error_path: str
    sources: tuple[Source, ...]


class _Reader:
    """Bytes of sources, with spool files and older shards kept open for the task."""

    def __init__(self):
        self.fds: dict[str, int] = {}
        self.envs: dict[str, tuple[lmdb.Environment, lmdb.Transaction, Any]] = {}

    def read(self, source: Source) -> bytes | None:
        if source.kind == "file":
            from imgpack.ingest.probe import read_file

            try:
                return read_file(source.where)
            except OSError:
                return None
        if source.kind == "spool":
            fd = self.fds.get(source.where)
            if fd is None:
                fd = self.fds[source.where] = os.open(source.where, os.O_RDONLY)
            return os.pread(fd, source.size, source.offset)
        opened = self.envs.get(source.where)
        if opened is None:
            # Read-only and lock-free: an older shard may be a DVC cache object itself.
            env = lmdb.open(source.where, subdir=False, readonly=True, lock=False, max_dbs=8)
            txn = env.begin(buffers=False)
            opened = self.envs[source.where] = (env, txn, env.open_db(b"images", txn=txn))
        return opened[1].get(encode_index(source.offset), db=opened[2])

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        for env, txn, _ in self.envs.values():
            txn.abort()
            env.close()


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write the task's shard unless a finished file of it exists; returns its header entry."""
    path = Path(task.path)
    if not path.exists():
        _write(task, path)
    return shard_entry(path, len(task.sources), sum(s.size for s in task.sources))


def _write(task: ShardTask, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shard = ShardWriter(
        partial, Path(task.error_path), task.layout.map_size, task.layout.batch_bytes
    )
    reader = _Reader()
    try:
        for source in task.sources:
            data = reader.read(source)
            if source.kind == "file" and (
                data is None
                or len(data) != source.size
                or hashlib.new(task.hash_algorithm, data).hexdigest() != source.hash
            ):
                raise InputError(
                    f"{source.where} changed since ingest ({task.hash_algorithm} or size "
                    "differs, or it is gone); rerun the ingest stage"
                )
            if data is None or len(data) != source.size:
                raise InputError(
                    f"{source.where}: image {source.offset} is not what the plan expected; "
                    "the older pack or the build's spool is damaged: rebuild from scratch"
                )
            shard.add(data, bytes.fromhex(source.hash), source.format, source.width, source.height)
        shard.seal(task.hash_algorithm)
        shard.file.close()
        os.replace(partial, path)  # only a whole, synced shard ever has the final name
    except BaseException:
        shard.file.abort()
        raise
    finally:
        reader.close()
