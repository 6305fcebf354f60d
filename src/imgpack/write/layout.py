"""The shard layout, written once: how records are cut into shards, their map and transaction sizes, their names."""

# Every writer (pack, one pass, compact, convert) cuts with `ShardLayout.full`, so a pack's bytes
# are the same whichever path built it.

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from imgpack.format.codec import SHARD_IMAGES, SHARD_VERSION
from imgpack.params import PackParams, shard_bytes_of
from imgpack.util.jsonfiles import dumps

__all__ = [
    "ShardLayout",
    "default_map_size",
    "shard_name",
    "task_id",
    "resume_at",
    "image_text",
    "params_digest",
]

_DEFAULT_SHARD_BYTES = 64 << 20
_DEFAULT_BATCH_BYTES = 32 << 20


def default_map_size(shard_bytes: int) -> int:
    """A shard's starting map size, from the params alone so the bytes never depend on the input.

    LMDB records the map size in its meta pages; it is address space, not disk, so a generous
    value costs nothing, and a shard that outgrows it doubles it deterministically.
    """
    return max(8 << 20, 2 * shard_bytes + (16 << 20))


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """What decides how records fall into shards and how each shard file is written."""

    shard_bytes: int  # image bytes per shard, about: a shard is cut before it would exceed it
    map_size: int  # each shard file's starting LMDB map size
    batch_bytes: int  # bytes per write transaction

    @classmethod
    def of(cls, params: PackParams) -> ShardLayout:
        """The layout `pack.*` params ask for."""
        shard_bytes = params.shard_bytes
        map_size = (params.initial_map_size_mb << 20) or default_map_size(shard_bytes)
        return cls(shard_bytes, map_size, params.batch_mb << 20)

    @classmethod
    def recorded(cls, header: dict[str, Any]) -> ShardLayout:
        """The layout a pack's header records (its `layout_params`), or the defaults."""
        try:
            shard_bytes, map_size, batch_bytes = map(int, header["layout_params"].split(":"))
        except (KeyError, ValueError):
            shard_bytes, map_size, batch_bytes = _DEFAULT_SHARD_BYTES, 0, _DEFAULT_BATCH_BYTES
        return cls(shard_bytes, map_size or default_map_size(shard_bytes), batch_bytes)

    @classmethod
    def for_shard_mb(cls, shard_mb: float, batch_bytes: int) -> ShardLayout:
        shard_bytes = shard_bytes_of(shard_mb)
        return cls(shard_bytes, default_map_size(shard_bytes), batch_bytes)

    @property
    def params_text(self) -> str:
        """The header's `layout_params`: shards carry over only under the same layout."""
        return f"{self.shard_bytes}:{self.map_size}:{self.batch_bytes}"

    def full(self, count: int, image_bytes: int, next_size: int) -> bool:
        """The cut rule: a shard holding `count` images of `image_bytes` in all is closed before
        an image of `next_size` bytes when that would take it over `shard_bytes`, or when it
        holds `SHARD_IMAGES` already. A shard always takes its first image, however big."""
        return count > 0 and (count >= SHARD_IMAGES or image_bytes + next_size > self.shard_bytes)

    def shards_for(self, image_bytes: int, count: int) -> int:
        """How many shards `count` images of `image_bytes` in all fill, at least (never 0)."""
        return max(1, -(-image_bytes // self.shard_bytes), -(-count // SHARD_IMAGES))

    def task_id(self, hash_algorithm: str, images: Iterable[tuple]) -> str:
        return task_id(hash_algorithm, self.map_size, self.batch_bytes, images)

    def task_hash(self, hash_algorithm: str):
        """`task_id`'s running digest before any image: each image's text (`image_text`) is
        added in order, and `resume_at` names the finished shard by it."""
        return _task_hash(hash_algorithm, self.map_size, self.batch_bytes)

    def resume_path(self, store: str, hash_algorithm: str, images: Iterable[tuple]) -> str:
        """Where the finished shard of `images` (as `task_id` takes them) waits in the resume
        folder `store` for a run killed before its publish."""
        return resume_at(store, self.task_id(hash_algorithm, images))


def resume_at(store: str, task: str) -> str:
    """The resume folder's file of the shard whose `task_id` is `task`."""
    return os.path.join(str(store), f"{task[:32]}.lmdb")


def image_text(digest: str, size: int, fmt: str, width: int, height: int) -> str:
    """What an image adds to its shard's task id."""
    return f"\n{digest}:{size}:{fmt}:{width}:{height}"


def shard_name(sha256_hex: str) -> str:
    """A shard's file name in a folder pack: named by its content, so equal shards share a name."""
    return f"shard-{sha256_hex[:16]}.lmdb"


def task_id(hash_algorithm: str, map_size: int, batch_bytes: int, images) -> str:
    """A digest of everything that decides the shard's bytes (not where the bytes come from):
    `images` gives (hex digest, size, format, width, height) of each image in order."""
    sha = _task_hash(hash_algorithm, map_size, batch_bytes)
    for digest, size, fmt, width, height in images:  # each `image_text`, inlined: per record
        sha.update(f"\n{digest}:{size}:{fmt}:{width}:{height}".encode())
    return sha.hexdigest()


def _task_hash(hash_algorithm: str, map_size: int, batch_bytes: int):
    return hashlib.sha256(f"{SHARD_VERSION}:{hash_algorithm}:{map_size}:{batch_bytes}".encode())


_NOT_RECORDS = ("workers", "scheduler", "incremental", "compact_below")  # not the records


def params_digest(params: PackParams) -> str:
    """Digest of the params that shape the records: an incremental build and a fresh one of the
    same inputs have the same (the header's `layout` and `shards` tell them apart)."""
    shaping = {k: v for k, v in dataclasses.asdict(params).items() if k not in _NOT_RECORDS}
    return hashlib.sha256(dumps(shaping).encode()).hexdigest()
