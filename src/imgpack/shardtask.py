"""One shard as one unit of work: its images from raw files, a spool or an older shard, written and sealed.

A task is plain data, so a worker process (or a cluster worker) can run it, and its finished file
is named by what it holds: a rerun after a crash finds the shards already written and keeps them.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from imgpack.errors import InputError
from imgpack.format.codec import SHARD_FORMAT, SHARD_VERSION, encode_index, encode_shard_header
from imgpack.manifest import file_digest
from imgpack.writer import LmdbFileWriter

__all__ = [
    "ShardTask",
    "Source",
    "write_shard",
    "check_shard",
    "ShardWriter",
    "open_sealing",
    "task_id",
    "shard_path",
]

_ONLY = encode_index(0)
_SHARD_HEADER_KEY = b"shard"


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
    map_size: int
    batch_bytes: int
    error_path: str
    sources: tuple[Source, ...]


def task_id(hash_algorithm: str, map_size: int, batch_bytes: int, images) -> str:
    """A digest of everything that decides the shard's bytes (not where the bytes come from):
    `images` gives (hex digest, size, format, width, height) of each image in order."""
    sha = hashlib.sha256(f"{SHARD_VERSION}:{hash_algorithm}:{map_size}:{batch_bytes}".encode())
    for digest, size, fmt, width, height in images:
        sha.update(f"\n{digest}:{size}:{fmt}:{width}:{height}".encode())
    return sha.hexdigest()


def shard_path(store: str, algorithm: str, map_size: int, batch_bytes: int, images) -> str:
    """Where the finished shard of `images` (as `task_id` takes them) lives in the resume folder."""
    name = task_id(algorithm, map_size, batch_bytes, images)
    return os.path.join(store, f"{name[:32]}.lmdb")


class ShardWriter:
    """One shard: images under their slot, and their properties (digest, size, format, w, h)."""

    def __init__(
        self,
        path: Path,
        error_path: Path,
        map_size: int,
        batch_bytes: int,
        check: bool = False,
    ):
        self.file = LmdbFileWriter(path, map_size, error_path, batch_bytes, check=check)
        self.file.create(b"images")
        self.count = 0
        self.image_bytes = 0
        self.digests = bytearray()
        self.sizes = array("q")
        self.widths = array("i")
        self.heights = array("i")
        self.formats: list[str] = []

    def add(self, data: bytes, digest: bytes, fmt: str, width: int, height: int) -> int:
        slot = self.count
        self.file.put(b"images", encode_index(slot), data)
        self.digests += digest
        self.sizes.append(len(data))
        self.widths.append(width)
        self.heights.append(height)
        self.formats.append(fmt)
        self.count += 1
        self.image_bytes += len(data)
        return slot

    def seal(self, hash_algorithm: str) -> None:
        """Commit the images and close the file, then queue the shard's header and property
        table in the file opened again (`open_sealing`); the caller closes it."""
        self.file.close(durable=False)
        images = self.file
        self.file = open_sealing(
            images.path,
            images.error_path,
            images.map_size,
            images.batch_bytes,
            images.check,
            hash_algorithm,
            bytes(self.digests),
            self.sizes,
            self.formats,
            self.widths,
            self.heights,
        )
        self.file.grown = images.grown


def open_sealing(
    path, error_path, map_size, batch_bytes, check, hash_algorithm, digests, sizes, formats, w, h
) -> LmdbFileWriter:
    """A shard whose images are committed and whose file is closed, opened again with its
    property table and header queued: the caller closes it.

    Sealing is a transaction of its own in a file opened anew, so a shard has the same bytes
    whether the process that wrote its images seals it or another does: a fresh build's workers
    write images only (no Arrow to import) and its own process seals.
    """
    import pyarrow as pa

    from imgpack.format import catalog as cat

    digest_size = hashlib.new(hash_algorithm).digest_size
    count = len(sizes)
    props = pa.table(
        [
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(digest_size), count, [None, pa.py_buffer(digests)]
            ),
            pa.array(sizes, pa.int64()),
            pa.array(formats, pa.string()),
            pa.array(w, pa.int32()),
            pa.array(h, pa.int32()),
        ],
        schema=cat.props_schema(digest_size),
    )
    header = {
        "format": SHARD_FORMAT,
        "format_version": SHARD_VERSION,
        "count": count,
        "hash_algorithm": hash_algorithm,
        "image_bytes": sum(sizes),
    }
    file = LmdbFileWriter(path, map_size, error_path, batch_bytes, existing=True, check=check)
    try:
        file.put(b"props", _ONLY, cat.encode_table(props))
        file.put(b"shard", _SHARD_HEADER_KEY, encode_shard_header(header))
    except BaseException:
        file.abort()
        raise
    return file


class _Reader:
    """Bytes of sources, with spool files and older shards kept open for the task."""

    def __init__(self):
        self.fds: dict[str, int] = {}
        self.envs: dict[str, tuple[lmdb.Environment, lmdb.Transaction, Any]] = {}

    def read(self, source: Source) -> bytes | None:
        if source.kind == "file":
            from imgpack.probe import read_file

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
    return {
        "count": len(task.sources),
        "image_bytes": sum(s.size for s in task.sources),
        "file_bytes": path.stat().st_size,
        "sha256": file_digest(path),
    }


def _write(task: ShardTask, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shard = ShardWriter(partial, Path(task.error_path), task.map_size, task.batch_bytes)
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


def check_shard(task: tuple[str, str]) -> list[int]:
    """Hash every image of the shard at `task[0]` again (`task[1]`: the algorithm); returns the
    slots whose bytes do not match the digest its props recorded, or are missing."""
    path, algorithm = task
    from imgpack.handles import acquire_env, release_env
    from imgpack.shards import read_props

    digests = read_props(Path(path), algorithm)
    env, _ = acquire_env(Path(path))  # shared: this process may have the pack open already
    try:
        with env.begin(buffers=True) as txn:
            images = env.open_db(b"images", txn=txn, create=False)
            bad, seen = [], 0
            new_hash = getattr(hashlib, algorithm)  # sha256 or blake2b: faster than hashlib.new
            for raw_slot, data in txn.cursor(images):
                slot = int.from_bytes(raw_slot, "big")
                if slot >= len(digests) or new_hash(data).digest() != digests[slot]:
                    bad.append(slot)
                seen += 1
            if seen != len(digests):
                bad.extend(range(seen, len(digests)))
            return bad
    finally:
        release_env(Path(path))


def verify_shard(task: tuple[str, str, str]) -> tuple[list[int], bool]:
    """(slots whose bytes miss their digest, whether the file's sha256 is `task[2]`) of one shard
    (`task`: path, hash algorithm, expected file sha256 or "" for a one-file pack)."""
    path, algorithm, sha256 = task
    file_ok = not sha256 or file_digest(Path(path)) == sha256
    return check_shard((path, algorithm)), file_ok
