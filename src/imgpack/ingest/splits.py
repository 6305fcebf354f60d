"""Train/val/test assignment: from a hash of each key (adding images never moves existing ones),
or from the top folder of an ImageFolder tree that already holds its split."""

from __future__ import annotations

import hashlib

__all__ = ["FOLDERS", "assign_split", "split_assigner", "splits_drawn", "folder_split"]

FOLDERS = "folders"  # pack.splits value: the first path component names the split
_FOLDER_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def folder_split(key: str) -> str | None:
    """The split named by `key`'s top folder, or None when it names none."""
    top, sep, _ = key.partition("/")
    return _FOLDER_NAMES.get(top) if sep else None


def assign_split(key: str, seed: int, fractions: dict[str, float] | str) -> str:
    """The split of `key`: its top folder, or a uniform draw from hash(seed, key) against fractions."""
    return split_assigner(seed, fractions)(key)


def _bounds(fractions: dict[str, float]) -> list[tuple[str, float]]:
    """Each split with the running sum of the fractions up to it: a point below it and above
    the one before falls in that split."""
    bounds, cumulative = [], 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        bounds.append((name, cumulative))
    return bounds


def split_assigner(seed: int, fractions: dict[str, float] | str):
    """`assign_split` with the params bound once, for many keys."""
    if fractions == FOLDERS:
        return _by_folder
    prefix = f"{seed}\0".encode()
    bounds = _bounds(fractions)
    last = bounds[-1][0] if bounds else ""
    sha256 = hashlib.sha256

    def assign(key: str) -> str:
        point = int.from_bytes(sha256(prefix + key.encode()).digest()[:8], "big") / 2**64
        for name, bound in bounds:
            if point < bound:
                return name
        return last  # rounding left the last sliver: it belongs to the last split

    return assign


def splits_drawn(keys: list[str], seed: int, fractions: dict[str, float]):
    """`assign_split` of many keys drawn by hash, as an Arrow string column: the same draws,
    compared as one numpy array (a float64 of the 64-bit point divided by 2**64 is the very
    float Python's division gives: scaling by a power of two rounds nothing)."""
    import numpy as np
    import pyarrow as pa

    prefix, sha256 = f"{seed}\0".encode(), hashlib.sha256
    heads = b"".join([sha256(prefix + key.encode()).digest()[:8] for key in keys])
    points = np.frombuffer(heads, ">u8").astype(np.float64) / 2.0**64
    names = list(fractions) or [""]
    bounds = np.array([bound for _, bound in _bounds(fractions)], np.float64)
    # the first bound above the point, as `assign` finds it; past the last: the last split
    chosen = np.minimum(np.searchsorted(bounds, points, "right"), len(names) - 1)
    return pa.DictionaryArray.from_arrays(pa.array(chosen, pa.int32()), names).cast(pa.string())


def _by_folder(key: str) -> str:
    split = folder_split(key)
    if split is None:  # ingest reports and skips (or refuses) such files first
        raise ValueError(f"{key}: no split folder")
    return split
