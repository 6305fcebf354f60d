"""Re-hash every stored image against the hash recorded beside it in the pack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgpack.errors import PackCorruptError, name_offenders
from imgpack.probe import digest
from imgpack.progress import progress
from imgpack.reader import Pack

__all__ = ["VerifyResult", "verify_pack"]


@dataclass
class VerifyResult:
    records: int = 0
    bad_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_keys


def verify_pack(path: str | Path, raise_on_error: bool = True) -> VerifyResult:
    """Check every record's bytes against its stored hash; raise PackCorruptError naming bad keys."""
    result = VerifyResult()
    with Pack(path) as pack:
        pack.locate()  # random reads walk the images B-tree's pages: a pack that verifies can train
        algorithm = pack.header["hash_algorithm"]
        for record in progress(pack, "verify", len(pack)):
            result.records += 1
            if digest(record.data, algorithm) != record.meta["hash"]:
                result.bad_keys.append(record.key)
        if result.records != len(pack):
            raise PackCorruptError(
                f"{pack.path} holds {result.records} records but its header says {len(pack)}"
            )
    if raise_on_error and result.bad_keys:
        raise PackCorruptError(
            f"{path}: {algorithm} mismatch in {name_offenders(result.bad_keys)}; "
            "the pack is damaged: fetch it again (dvc pull) or rebuild it"
        )
    return result
