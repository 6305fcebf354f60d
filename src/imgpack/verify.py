"""Re-hash every stored image against its shard's digest and the catalog's, shard by shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from imgpack.errors import REFETCH, PackCorruptError, name_offenders
from imgpack.manifest import file_digest
from imgpack.probe import digest
from imgpack.progress import progress
from imgpack.reader import Pack
from imgpack.shards import read_props

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


def verify_pack(path: str | Path, raise_on_error: bool = True) -> VerifyResult:
    """Check every shard file, every image and every catalog digest; raise naming what is bad."""
    result = VerifyResult()
    with Pack(path) as pack:
        pack.locate()  # walks every shard's B-tree: a pack that verifies can train
        algorithm = pack.header["hash_algorithm"]
        for info, shard_path in zip(pack.header["shards"], pack.shard_paths, strict=True):
            result.shards += 1
            if info["sha256"] and file_digest(shard_path) != info["sha256"]:
                result.bad_shards.append(info["name"])
        props = [read_props(p, algorithm) for p in pack.shard_paths]
        for key, expected, shard, slot, data in progress(_records(pack), "verify", len(pack)):
            result.records += 1
            if digest(data, algorithm) != expected.hex() or props[shard][slot] != expected:
                result.bad_keys.append(key)
        if result.records != len(pack):
            raise PackCorruptError(
                f"{pack.path} holds {result.records} records but its header says {len(pack)}"
            )
    if raise_on_error and result.bad_shards:
        raise PackCorruptError(
            f"{path}: shard file digest mismatch in {name_offenders(result.bad_shards)}; "
            f"the pack is damaged: {REFETCH}"
        )
    if raise_on_error and result.bad_keys:
        raise PackCorruptError(
            f"{path}: {algorithm} mismatch in {name_offenders(result.bad_keys)}; "
            f"the pack is damaged: {REFETCH}"
        )
    return result


def _records(pack: Pack):
    """(key, catalog digest, shard, slot, image bytes) of every record, a catalog part at a time."""
    images = pack.iter_data()
    for _, part in pack.catalog.tables(["key", "hash", "shard", "slot"]):
        columns = [part.column(n).to_pylist() for n in ("key", "hash", "shard", "slot")]
        yield from zip(*columns, islice(images, part.num_rows), strict=True)
