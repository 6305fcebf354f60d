"""Pack: a manifest's records into shards (new, or carried over from the previous version) and a catalog."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from imgpack.ingest.manifest import read_manifest
from imgpack.parallel.workers import ordered_map, release_freed_memory, worker_pool
from imgpack.params import PackParams
from imgpack.util.cores import resolve_workers
from imgpack.util.locks import writer_lock
from imgpack.util.outputs import scratch_dir
from imgpack.util.text import counted
from imgpack.util.urls import is_url
from imgpack.write.assembler import PackAssembler
from imgpack.write.dedupe import AliasCheck
from imgpack.write.layout import ShardLayout, params_digest
from imgpack.write.pack_plan import Planner, damaged_shards, load_previous, match_previous
from imgpack.write.pack_shard import write_shard
from imgpack.write.pack_walk import plan_records
from imgpack.write.shard import ENTRY_FIELDS


def pack(
    manifest: str | Path,
    folder: str | Path,
    out: str | Path,
    params: PackParams | None = None,
    before_publish: Callable[[Path], None] | None = None,
    spool: Path | None = None,
) -> dict[str, Any]:
    """Write the pack for `manifest` (images read from `folder`) to `out`; returns its header.

    With `pack.incremental`, the pack already at `out` is the previous version: its shards are
    carried over as they are where they can be (see `imgpack.write.pack_plan`). Shards are written by worker
    processes; a killed run leaves its finished shards in `.<out>.resume/` for the next run.
    `before_publish(tmp)` may check the finished pack and raise to keep it from being published.
    The returned header also says how many shards were carried, new and compacted.
    """
    with writer_lock(Path(out)):
        return _pack(manifest, folder, Path(out), params or PackParams(), before_publish, spool)


def _pack(manifest, folder, out: Path, params: PackParams, before_publish, spool) -> dict[str, Any]:
    # Paths in tasks are absolute: any worker may run them.
    folder = str(folder) if is_url(folder) else str(Path(folder).absolute())
    header, _ = read_manifest(Path(manifest))
    algorithm = header["hash_algorithm"]
    layout = ShardLayout.of(params)
    store = out.absolute().with_name(f".{out.name}.resume")
    with (
        scratch_dir(out.with_name(out.name + "-plan")) as scratch,
        contextlib.closing(sqlite3.connect(scratch / "plan.sqlite")) as db,
    ):
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        previous, match = _previous_version(
            out, Path(manifest), algorithm, layout, params, (db, scratch)
        )
        release_freed_memory()  # matching's columns: the walk's peak is its own
        to_write = (header["total_bytes"], header["count"])
        if match is not None:
            to_write = match.to_write(previous.kept)
        # A worker costs a process start: no more of them than there are new shards to write.
        workers = min(resolve_workers(params.workers, "pack.workers"), layout.shards_for(*to_write))
        store.mkdir(parents=True, exist_ok=True)
        spool = Path(spool).absolute() if spool is not None else None
        planner = Planner(out, folder, algorithm, params, layout, store, previous, spool)
        try:
            with (
                PackAssembler(out, algorithm, params.batch_mb << 20) as assembler,
                worker_pool(workers, params.scheduler or None) as pool,
                contextlib.closing(planner),
            ):
                _carry_over(previous, assembler)
                claims = match.claim_array() if match is not None else np.zeros((0, 3), np.int64)
                aliases = AliasCheck(params.splits)
                splits = _previous_splits(previous, match, params)
                planned = plan_records(
                    Path(manifest),
                    header["count"],
                    planner,
                    (assembler, aliases),
                    claims,
                    params,
                    splits,
                )
                for task, entry in ordered_map(write_shard, planned, pool):
                    assembler.add_shard(Path(task.path), entry)
                aliases.refuse_conflicts(Path(manifest))
                written = assembler.publish(
                    before_publish,
                    params_digest=params_digest(params),
                    layout_params=layout.params_text,
                )
        except BaseException:
            # Whole shards stay for the next run to reuse; an empty store goes.
            with contextlib.suppress(OSError):
                store.rmdir()
            raise
    shutil.rmtree(store, ignore_errors=True)
    compacted = len(previous.entries) - len(previous.kept) if previous else 0
    return {
        **written,
        "carried_shards": len(previous.kept) if previous else 0,
        "new_shards": planner.new_shards,
        "compacted_shards": compacted,
    }


def _previous_version(out: Path, manifest: Path, algorithm: str, layout, params, workspace):
    """The version at `out` whose shards may carry over, and each record's claim on its images;
    (None, None) for a fresh layout (no folder pack there, other params, damaged shards).
    `workspace`: the plan's (sqlite db, scratch folder) that matching spills to."""
    if not params.incremental:
        return None, None
    previous = load_previous(out, algorithm, layout.params_text)
    if previous is None:
        return None, None
    damaged = damaged_shards(previous.shard_paths, previous.entries)
    if damaged:
        # Never carried into the next version: every record is stored again from the raw folder.
        print(
            f"imgpack: {out}: {counted(len(damaged), 'shard')} of the previous version "
            f"{'is' if len(damaged) == 1 else 'are'} damaged ({', '.join(damaged[:3])}"
            f"{', ...' if len(damaged) > 3 else ''}: its bytes differ from the digest its name "
            "records); building every shard again from the raw folder",
            file=sys.stderr,
        )
        return None, None
    dedupe = params.duplicates == "dedupe"
    match = match_previous(previous, manifest, dedupe, params.compact_below, *workspace)
    return (previous, match) if match is not None else (None, None)


def _previous_splits(previous, match, params: PackParams):
    """The split each manifest row's key had in the previous version (null where it had none),
    when that version was built with the same params: a key's split is a function of them."""
    if previous is None or match is None or match.previous_rows is None:
        return None
    if previous.params_digest != params_digest(params):
        return None
    from imgpack.read.pack import Pack

    with Pack(previous.path) as opened:
        parts = [part.column("split") for _, part in opened.catalog.tables(["split"])]
    old = pa.chunked_array([c for part in parts for c in part.chunks], pa.string())
    rows = match.previous_rows
    return old.combine_chunks().take(pa.array(rows, mask=rows < 0))


def _carry_over(previous, assembler: PackAssembler) -> None:
    """The previous version's kept shards into the new one, linked as they are."""
    if previous is None:
        return
    for old in previous.kept:  # in their old order: new numbers ascend with it
        entry = {k: previous.entries[old][k] for k in ENTRY_FIELDS}
        assembler.add_shard(previous.shard_paths[old], entry, carried=True)
