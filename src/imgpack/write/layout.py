"""TODO docstring."""

from __future__ import annotations

import dataclasses
import hashlib
import os

from imgpack.format.codec import (
    SHARD_VERSION,
)
from imgpack.params import PackParams
from imgpack.util.jsonfiles import dumps


def shard_name(sha256_hex: str) -> str:
    """A shard's file name in a folder pack: named by its content, so equal shards share a name."""
    return f"shard-{sha256_hex[:16]}.lmdb"


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


_NOT_RECORDS = ("workers", "scheduler", "incremental", "compact_below")  # not the records


def layout_of(params: PackParams, map_size: int) -> str:
    """The header's `layout_params`: shards carry over only under the same shard layout."""
    return f"{params.shard_bytes}:{map_size}:{params.batch_mb << 20}"


def params_digest(params: PackParams) -> str:
    """Digest of the params that shape the records: an incremental build and a fresh one of the
    same inputs have the same (the header's `layout` and `shards` tell them apart)."""
    shaping = {k: v for k, v in dataclasses.asdict(params).items() if k not in _NOT_RECORDS}
    return hashlib.sha256(dumps(shaping).encode()).hexdigest()
