"""Train/val/test assignment from a hash of each key, so adding images never moves existing ones."""

from __future__ import annotations

import hashlib

__all__ = ["assign_split"]


def assign_split(key: str, seed: int, fractions: dict[str, float]) -> str:
    """The split of `key`: a uniform draw from hash(seed, key) against cumulative fractions."""
    draw = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    point = int.from_bytes(draw[:8], "big") / 2**64
    cumulative = 0.0
    name = ""
    for name, fraction in fractions.items():
        cumulative += fraction
        if point < cumulative:
            return name
    return name  # rounding left the last sliver: it belongs to the last split
