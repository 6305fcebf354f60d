"""`imgpack diff`: what changed between two packs, record by record, from their catalogs alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from imgpack.reader import Pack

__all__ = ["KINDS", "PackDiff", "diff_packs"]

KINDS = ("added", "removed", "modified", "renamed", "relabeled", "meta_changed")
_COMPARED = ("key", "hash", "label")  # meta_changed compares every other column too


@dataclass
class PackDiff:
    """Keys per kind of change; `renamed` holds [old key, new key] pairs."""

    old: dict[str, Any]
    new: dict[str, Any]
    changes: dict[str, list] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    @property
    def any(self) -> bool:
        return any(self.changes.values())

    def as_dict(self, limit: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            kind: {"count": len(keys), "keys": keys[:limit] if limit else keys}
            for kind, keys in self.changes.items()
        }
        out["old"], out["new"] = self.old, self.new
        return out


def _rows(pack: Pack, columns: list[str]) -> Iterator[dict[str, Any]]:
    """Catalog rows in key order, a part at a time: memory is one part, not the catalog."""
    for _, table in pack.catalog.tables(columns):
        yield from table.to_pylist()


def diff_packs(old: Pack, new: Pack, old_name: str, new_name: str) -> PackDiff:
    """Compare two packs by key, stored digest, label and metadata; image bytes are never read."""
    result = PackDiff({"name": old_name, "count": len(old)}, {"name": new_name, "count": len(new)})
    if old.header["hash_algorithm"] != new.header["hash_algorithm"]:
        from imgpack.errors import InputError

        raise InputError(
            f"{old_name} hashes with {old.header['hash_algorithm']} and {new_name} with "
            f"{new.header['hash_algorithm']}: their digests cannot be compared"
        )
    shared = [c for c in old.catalog.columns if c in new.catalog.columns]
    extra_old = [c for c in old.catalog.columns if c not in shared]
    extra_new = [c for c in new.catalog.columns if c not in shared]
    left, right = _rows(old, shared + extra_old), _rows(new, shared + extra_new)
    a, b = next(left, None), next(right, None)
    removed: dict[bytes, list[str]] = {}  # digest -> keys only in old: rename candidates
    added: list[tuple[str, bytes]] = []
    changes = result.changes
    while a is not None or b is not None:
        if b is None or (a is not None and a["key"].encode() < b["key"].encode()):
            removed.setdefault(a["hash"], []).append(a["key"])
            a = next(left, None)
        elif a is None or b["key"].encode() < a["key"].encode():
            added.append((b["key"], b["hash"]))
            b = next(right, None)
        else:
            if a["hash"] != b["hash"]:
                changes["modified"].append(a["key"])
            elif a["label"] != b["label"]:
                changes["relabeled"].append(a["key"])
            elif extra_old or extra_new or any(a[c] != b[c] for c in shared if c not in _COMPARED):
                changes["meta_changed"].append(a["key"])
            a, b = next(left, None), next(right, None)
    for key, digest in added:  # in key order: the first removed key with those bytes pairs up
        candidates = removed.get(digest)
        if candidates:
            changes["renamed"].append([candidates.pop(0), key])
        else:
            changes["added"].append(key)
    changes["removed"] = sorted((k for keys in removed.values() for k in keys), key=str.encode)
    changes["renamed"].sort(key=lambda pair: pair[0].encode())
    return result
