"""One shard straight from raw files, in one worker: each file read once, hashed, probed, stored and checked.

The task carries the plan (which files, and the sizes their stat gave). When a file does not turn
out as planned (it is no image after all, or its size changed) the shard is not written: the
task returns what it learned of every file, and the build plans that part again (`imgpack.write.onepass`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpack.ingest.cache import IngestCache
from imgpack.ingest.examine import examine
from imgpack.ingest.splits import split_assigner
from imgpack.write.layout import ShardLayout
from imgpack.write.shard import ShardWriter, open_sealing, shard_entry

__all__ = ["FreshShardTask", "write_fresh_shard", "accepted", "finish"]


@dataclass(frozen=True, slots=True)
class FreshShardTask:
    attempt: int  # names the partial file: a shard planned again is a new attempt
    folder: str
    keys: tuple[str, ...]
    sizes: tuple[int, ...]  # what the plan expects each file to hold
    stats: tuple  # each file's FileStat at planning, for the ingest cache
    store: str  # the resume folder: finished shards are named there by what they hold
    out: str  # the output a failed write is reported against
    algorithm: str
    max_pixels: int
    layout: ShardLayout
    split_seed: int
    splits: Any  # pack.splits: fractions, or "folders"
    cache: str  # the ingest cache's file ("" for none)
    started: int  # the build's start, for the ingest cache's racy-clean rule


def write_fresh_shard(task: FreshShardTask) -> dict[str, Any]:
    """Read, check and store every file of the task; returns the shard's entry and columns, or
    with `broken` set the outcomes that differ from the plan (and no shard)."""
    outcomes: list[list] = []
    broken: list[tuple[int, list]] = []
    partial = Path(task.store) / f".fresh-{task.attempt}.partial-{os.getpid()}"
    shard = None
    trailing = []
    new_hash = getattr(hashlib, task.algorithm)  # sha256 or blake2b: faster than hashlib.new
    prefix = task.folder + os.sep
    try:
        for index, key in enumerate(task.keys):
            outcome = examine(prefix + key, new_hash, task.max_pixels, task.sizes[index])
            data, digest = (outcome.pop(), outcome.pop()) if outcome[0] == "ok" else (b"", b"")
            outcomes.append(outcome)  # now as the ingest cache keeps it: no bytes
            if outcome[0] != "ok" or outcome[1] != task.sizes[index]:
                broken.append((index, outcome))
                if shard is not None:
                    shard.file.abort()
                    shard = None
            if broken:
                continue  # go on learning what the others are; the plan will be redone
            if shard is None:
                # check: each value read back after its transaction, the build's validation
                # of what it wrote (the bytes were hashed as they were read)
                shard = ShardWriter(
                    partial, Path(task.out), task.layout.map_size, task.layout.batch_bytes, True
                )
            shard.add(data, digest, outcome[3], outcome[4], outcome[5])
            if outcome[6]:
                trailing.append((index, outcome[6]))
        _remember(task, outcomes)
        if broken:
            return {"broken": broken}
        path = task.layout.resume_path(
            task.store, task.algorithm, ((o[2], o[1], o[3], o[4], o[5]) for o in outcomes)
        )
        # Sealed, synced, digested and named by the build's own process (`finish`), which has
        # little else to do while the workers write; so workers never import Arrow.
        shard.file.close(durable=False)
        written, shard = shard, None
    finally:
        if shard is not None:
            shard.file.abort()
    result = accepted(
        str(partial),
        list(task.sizes),
        bytes(written.digests),
        written.formats,
        written.widths.tolist(),
        written.heights.tolist(),
        list(map(split_assigner(task.split_seed, task.splits), task.keys)),
        trailing,
        digest=False,
    )
    result["named"] = path
    result["unsealed"] = (written.file.map_size, task.layout.batch_bytes, task.algorithm)
    return result


def finish(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """A written shard's file sealed, made durable, digested and given its name in the resume
    folder (only a whole, checked, synced shard gets the name); a resumed shard has it already."""
    named = result.pop("named", None)
    if named is None:
        return result
    partial = Path(result["path"])
    map_size, batch_bytes, algorithm = result.pop("unsealed")
    sealing = open_sealing(
        partial,
        out,
        map_size,
        batch_bytes,
        True,
        algorithm,
        result["digests"],
        result["sizes"],
        result["formats"],
        result["widths"],
        result["heights"],
    )
    try:
        sealing.close()
    except BaseException:
        sealing.abort()
        raise
    result["entry"] = shard_entry(partial, len(result["sizes"]), sum(result["sizes"]))
    if os.path.exists(named):  # written by an earlier run or attempt: the same bytes
        partial.unlink()
    else:
        os.replace(partial, named)
    result["path"] = named
    return result


def accepted(
    path, sizes, digests, formats, widths, heights, splits, trailing, resumed=False, digest=True
):
    """A finished shard's result: its header entry (without its file's size and digest unless
    `digest`: an unsealed shard's are set by `finish`) and its records' columns."""
    return {
        "broken": [],
        "path": path,
        # an unsealed shard's entry is made by `finish`
        "entry": shard_entry(path, len(sizes), sum(sizes)) if digest else None,
        "sizes": sizes,
        "digests": digests,
        "formats": formats,
        "widths": widths,
        "heights": heights,
        "splits": splits,
        "trailing": trailing,
        "resumed": resumed,
    }


_caches: dict[str, IngestCache] = {}


def _remember(task: FreshShardTask, outcomes: list[list]) -> None:
    """Into the ingest cache, committed now: a build killed later keeps what this task learned."""
    if not task.cache:
        return
    cache = _caches.get(task.cache)
    if cache is None:
        cache = _caches[task.cache] = IngestCache.at(Path(task.cache))
    cache.started = task.started
    cache.remember(zip(task.keys, task.stats, outcomes, strict=True))
    cache.commit()
