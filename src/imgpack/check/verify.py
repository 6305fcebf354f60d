"""Re-hash every stored image against its shard's digest and the catalog's, a shard per worker task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgpack.check.shards import verify_shard
from imgpack.errors import PackCorruptError, name_offenders
from imgpack.parallel.workers import ordered_map, worker_pool
from imgpack.read.pack import Pack
from imgpack.read.revisions import refetch_remedy
from imgpack.util.cores import resolve_workers
from imgpack.util.progress import progress

__all__ = ["VerifyResult", "verify_pack"]


@dataclass
class VerifyResult:
    records: int = 0
    shards: int = 0
    bad_keys: list[str] = field(default_factory=list)
    bad_shards: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_keys and not self.bad_shards


def verify_pack(
    path: str | Path,
    raise_on_error: bool = True,
    workers: int | str = 0,
    scheduler: str | None = None,
) -> VerifyResult:
    """Check every shard file, every image and every catalog digest; raise naming what is bad.

    Shards are checked one per task: in `workers` local processes, or on the Dask cluster at
    `scheduler` (every worker must reach the pack's path).
    """
    result = VerifyResult()
    with Pack(path) as pack:
        pack.locate()  # walks every shard's B-tree: a pack that verifies can train
        algorithm = pack.header["hash_algorithm"]
        entries = pack.header["shards"]
        tasks = [
            (number, (str(Path(shard_path).absolute()), algorithm, info["sha256"]))
            for number, (info, shard_path) in enumerate(zip(entries, pack.shard_paths, strict=True))
        ]
        damaged: set[tuple[int, int]] = set()
        with worker_pool(min(resolve_workers(workers), len(tasks)), scheduler) as pool:
            for number, (bad, file_ok) in ordered_map(
                verify_shard, progress(tasks, "verify"), pool
            ):
                result.shards += 1
                if not file_ok:
                    result.bad_shards.append(entries[number]["name"])
                damaged.update((number, slot) for slot in bad)
        catalog = pack.catalog
        for _, part in catalog.tables(["key", "hash", "shard", "slot"]):
            shards, slots = part.column("shard").to_numpy(), part.column("slot").to_numpy()
            recorded = catalog.digests(shards, slots).to_pylist()  # the shards' props
            for key, expected, place, stored in zip(
                part.column("key").to_pylist(),
                part.column("hash").to_pylist(),
                zip(shards.tolist(), slots.tolist(), strict=True),
                recorded,
                strict=True,
            ):
                result.records += 1
                if place in damaged or stored != expected:  # format 2: the catalog's own digest
                    result.bad_keys.append(key)
        if result.records != len(pack):
            raise PackCorruptError(
                f"{pack.path} holds {result.records} records but its header says {len(pack)}"
            )
    if raise_on_error and result.bad_shards:
        raise PackCorruptError(
            f"{path}: shard file digest mismatch in {name_offenders(result.bad_shards)}; "
            f"the pack is damaged: {refetch_remedy(path)}"
        )
    if raise_on_error and result.bad_keys:
        raise PackCorruptError(
            f"{path}: {algorithm} mismatch in {name_offenders(result.bad_keys)}; "
            f"the pack is damaged: {refetch_remedy(path)}"
        )
    return result
