"""`imgpack diff`: what changed between two packs, record by record, from their catalogs alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from imgpack.read.pack import Pack

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


def _rows(pack: Pack, columns: list[str]) -> Iterator[tuple]:
    """(key bytes, key, hash, label, the other columns) in key order, a part at a time: memory
    is one part, not the catalog."""
    others = [c for c in columns if c not in _COMPARED]
    for _, table in pack.catalog.tables(columns):
        keys = table.column("key").to_pylist()
        columns = [table.column(c).to_pylist() for c in others]
        rest = zip(*columns, strict=True) if columns else (() for _ in keys)
        yield from zip(
            (k.encode() for k in keys),
            keys,
            table.column("hash").to_pylist(),
            table.column("label").to_pylist(),
            rest,
            strict=True,
        )


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
    # A column on one side only is metadata every common record has changed.
    columns_differ = bool(extra_old or extra_new)
    left, right = _rows(old, shared), _rows(new, shared)
    a, b = next(left, None), next(right, None)
    removed: dict[bytes, list[str]] = {}  # digest -> keys only in old: rename candidates
    added: list[tuple[str, bytes]] = []
    changes = result.changes
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            removed.setdefault(a[2], []).append(a[1])
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            added.append((b[1], b[2]))
            b = next(right, None)
        else:
            if a[2] != b[2]:
                changes["modified"].append(a[1])
            elif a[3] != b[3]:
                changes["relabeled"].append(a[1])
            elif columns_differ or a[4] != b[4]:
                changes["meta_changed"].append(a[1])
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
