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
class Sources:
    """A shard's images in order, as columns: where each one's bytes are (`kinds`, a byte each:
    f a raw file, s ingest's spool, o an older shard; `wheres`: that file's path; `offsets`: the
    spool offset or the older shard's slot, 0 for a raw file) and what they must be."""

    kinds: bytes
    wheres: list[str]
    offsets: list[int]
    sizes: list[int]
    hashes: list[str]  # hex digests the bytes must have
    formats: list[str]
    widths: list[int]
    heights: list[int]

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(frozen=True, slots=True)
class ShardTask:
    path: str  # the finished shard's file; written at a private name first
    hash_algorithm: str
    layout: ShardLayout
    error_path: str
    sources: Sources


_FILE, _SPOOL = ord("f"), ord("s")


class _Reader:
    """Bytes of sources, with spool files and older shards kept open for the task."""

    def __init__(self):
        self.fds: dict[str, int] = {}
        self.envs: dict[str, tuple[lmdb.Environment, lmdb.Transaction, Any]] = {}

    def read(self, kind: int, where: str, offset: int, size: int) -> bytes | None:
        if kind == _FILE:
            from imgpack.ingest.probe import read_file

            try:
                return read_file(where)
            except OSError:
                return None
        if kind == _SPOOL:
            fd = self.fds.get(where)
            if fd is None:
                fd = self.fds[where] = os.open(where, os.O_RDONLY)
            return os.pread(fd, size, offset)
        opened = self.envs.get(where)
        if opened is None:
            # Read-only and lock-free: an older shard may be a DVC cache object itself.
            env = lmdb.open(where, subdir=False, readonly=True, lock=False, max_dbs=8)
            txn = env.begin(buffers=False)
            opened = self.envs[where] = (env, txn, env.open_db(b"images", txn=txn))
        return opened[1].get(encode_index(offset), db=opened[2])

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
    return shard_entry(path, len(task.sources), sum(task.sources.sizes))


def _write(task: ShardTask, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shard = ShardWriter(
        partial, Path(task.error_path), task.layout.map_size, task.layout.batch_bytes
    )
    reader = _Reader()
    try:
        s = task.sources
        columns = (s.kinds, s.wheres, s.offsets, s.sizes, s.hashes, s.formats, s.widths, s.heights)
        for kind, where, offset, size, digest, fmt, width, height in zip(*columns, strict=True):
            data = reader.read(kind, where, offset, size)
            if kind == _FILE and (
                data is None
                or len(data) != size
                or hashlib.new(task.hash_algorithm, data).hexdigest() != digest
            ):
                raise InputError(
                    f"{where} changed since ingest ({task.hash_algorithm} or size "
                    "differs, or it is gone); run ingest again (dvc repro, or the same "
                    "imgpack build): it reads the file anew"
                )
            if data is None or len(data) != size:
                raise InputError(
                    f"{where}: image {offset} is not what the plan expected; "
                    "the older pack or the build's spool is damaged: rebuild from scratch"
                )
            shard.add(data, bytes.fromhex(digest), fmt, width, height)
        shard.seal(task.hash_algorithm)
        shard.file.close()
        os.replace(partial, path)  # only a whole, synced shard ever has the final name
    except BaseException:
        shard.file.abort()
        raise
    finally:
        reader.close()
