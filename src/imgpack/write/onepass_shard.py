"""One shard straight from raw files, in one worker: each file read once, hashed, probed, stored and checked."""

# The task carries the plan (which files, and the sizes their stat gave). When a file does not turn
# out as planned (it is no image after all, or its size changed) the shard is not written: the task
# returns what it learned of every file, and the build plans that part again
# (`imgpack.write.onepass_plan`).

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.ingest.cache import IngestCache
from imgpack.ingest.examine import examine
from imgpack.ingest.outcome import Examined, Outcome
from imgpack.ingest.splits import split_assigner
from imgpack.params import IngestParams, PackParams
from imgpack.write.layout import ShardLayout
from imgpack.write.shard import ShardProps, ShardWriter, open_sealing, shard_entry

__all__ = [
    "FreshBuild",
    "FreshShardTask",
    "ShardResult",
    "write_fresh_shard",
    "finish",
    "resume_path",
]


@dataclass(frozen=True, slots=True)
class FreshBuild:
    """What every shard task of one fresh build shares."""

    folder: str  # the raw folder, absolute
    store: str  # the resume folder: finished shards are named there by what they hold
    out: str  # the output a failed write is reported against
    algorithm: str  # hashlib's name of the hash (ingest.hash)
    max_pixels: int
    layout: ShardLayout
    split_seed: int
    splits: Any  # pack.splits: fractions, or "folders"
    cache: str  # the ingest cache's file ("" for none)
    started: int  # the build's start, for the ingest cache's racy-clean rule

    @classmethod
    def of(
        cls,
        folder: str,
        store: Path,
        out: Path,
        ingest: IngestParams,
        params: PackParams,
        cache: IngestCache,
    ) -> FreshBuild:
        """The build of `folder` into `out`, its finished shards kept in `store` until published."""
        return cls(
            folder=folder,
            store=str(store),
            out=str(out),
            algorithm=ingest.hash,
            max_pixels=ingest.max_pixels,
            layout=ShardLayout.of(params),
            split_seed=params.split_seed,
            splits=params.splits,
            cache=str(cache.path) if cache.db is not None else "",
            started=cache.started,
        )

    def splits_of(self, keys: Iterable[str]) -> list[str]:
        """The split of each key."""
        return list(map(split_assigner(self.split_seed, self.splits), keys))


@dataclass(frozen=True, slots=True)
class FreshShardTask:
    """The files of one shard as planned, for a worker to read and store."""

    build: FreshBuild
    attempt: int  # names the partial file: a shard planned again is a new attempt
    keys: tuple[str, ...]
    sizes: tuple[int, ...]  # what the plan expects each file to hold
    stats: tuple  # each file's FileStat at planning, for the ingest cache


@dataclass(slots=True)
class ShardResult:
    """What a shard task comes back with. Accepted: the shard's file and its records' columns.
    Broken (`broken` not empty): no shard, only the outcomes that differ from the plan."""

    broken: list[tuple[int, Outcome]] = field(default_factory=list)  # (index in the task, outcome)
    path: str = ""  # the shard's file: a partial one until `finish` names it
    props: ShardProps | None = None
    splits: list[str] = field(default_factory=list)
    trailing: list[tuple[int, int]] = field(default_factory=list)  # (index, bytes after the image)
    resumed: bool = False  # written by an earlier run and found by its name: none of it read now
    entry: dict[str, Any] | None = None  # the pack header's entry; `finish` makes a new shard's
    # A shard written now, for `finish`: its name once sealed, and its file's map size (more
    # than the layout's when it grew).
    named: str | None = None
    map_size: int = 0


def resume_path(build: FreshBuild, images: Iterable[Examined]) -> str:
    """Where the finished shard of `images` waits in the resume folder, named by what it holds."""
    return build.layout.resume_path(
        build.store,
        build.algorithm,
        ((i.digest_hex, i.size, i.format, i.width, i.height) for i in images),
    )


def write_fresh_shard(task: FreshShardTask) -> ShardResult:
    """Read, check and store every file of the task; returns the shard's file and columns, or
    with `broken` set the outcomes that differ from the plan (and no shard)."""
    build = task.build
    outcomes: list[Outcome] = []
    broken: list[tuple[int, Outcome]] = []
    partial = Path(build.store) / f".fresh-{task.attempt}.partial-{os.getpid()}"
    shard = None
    trailing = []
    new_hash = getattr(hashlib, build.algorithm)  # sha256 or blake2b: faster than hashlib.new
    prefix = build.folder + os.sep
    try:
        for index, key in enumerate(task.keys):
            outcome, digest, data = examine(
                prefix + key, new_hash, build.max_pixels, task.sizes[index]
            )
            outcomes.append(outcome)
            if not outcome.ok or outcome.size != task.sizes[index]:
                broken.append((index, outcome))
                if shard is not None:
                    shard.file.abort()
                    shard = None
            if broken:
                continue  # go on learning what the others are; the plan will be redone
            if shard is None:
                # check: each value read back after its transaction, the build's validation
                # of what it wrote (the bytes were hashed as they were read)
                layout = build.layout
                shard = ShardWriter(
                    partial, Path(build.out), layout.map_size, layout.batch_bytes, True
                )
            shard.add(data, digest, outcome.format, outcome.width, outcome.height)
            if outcome.trailing:
                trailing.append((index, outcome.trailing))
        _remember(task, outcomes)
        if broken:
            return ShardResult(broken=broken)
        named = resume_path(build, outcomes)
        # Sealed, synced, digested and named by the build's own process (`finish`), which has
        # little else to do while the workers write; so workers never import Arrow.
        shard.file.close(durable=False)
        written, shard = shard, None
    finally:
        if shard is not None:
            shard.file.abort()
    return ShardResult(
        path=str(partial),
        props=written.props.as_lists(),
        splits=build.splits_of(task.keys),
        trailing=trailing,
        named=named,
        map_size=written.file.map_size,
    )


def finish(result: ShardResult, build: FreshBuild) -> ShardResult:
    """A written shard's file sealed, made durable, digested and given its name in the resume
    folder (only a whole, checked, synced shard gets the name); a resumed shard has it already."""
    if result.named is None:
        return result
    partial = Path(result.path)
    sealing = open_sealing(
        partial,
        result.props,
        build.algorithm,
        error_path=build.out,
        map_size=result.map_size,
        batch_bytes=build.layout.batch_bytes,
        check=True,
    )
    try:
        sealing.close()
    except BaseException:
        sealing.abort()
        raise
    sizes = result.props.sizes
    result.entry = shard_entry(partial, len(sizes), sum(sizes))
    # An earlier run's or attempt's file of that name is replaced, never kept: this one was just
    # read back (the build records it as validated), the other one may have rotted since.
    os.replace(partial, result.named)
    result.path, result.named = result.named, None
    return result


_caches: dict[str, IngestCache] = {}


def _remember(task: FreshShardTask, outcomes: list[Outcome]) -> None:
    """Into the ingest cache, committed now: a build killed later keeps what this task learned
    (but a failure the operating system caused, `Failed.transient`, which the cache never keeps)."""
    build = task.build
    if not build.cache:
        return
    cache = _caches.get(build.cache)
    if cache is None:
        cache = _caches[build.cache] = IngestCache.at(Path(build.cache))
    cache.started = build.started
    cache.remember(zip(task.keys, task.stats, outcomes, strict=True))
    cache.commit()
