"""Sizes in bytes as users write them ("20GB", "20GiB") and as messages show them."""

from __future__ import annotations

import re
from fractions import Fraction

from imgpack.errors import InputError

__all__ = ["parse_size", "format_size", "exact_size", "sizes_summary"]

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50})
_SIZE_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(value: int | str, what: str = "cache_limit") -> int:
    """Bytes from an int or text: "20GB" = 20 * 10**9, "20GiB" = 20 * 2**30, "1000" = 1000."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _SIZE_TEXT.fullmatch(value)):
        scale = _UNITS.get(match.group(2).lower() or "b")
        if scale is not None and (size := int(Fraction(match.group(1)) * scale)) > 0:
            return size
    raise InputError(
        f'{what} {value!r} is not a size: use bytes (an integer) or text such as "20GB" '
        f'(10^9 bytes each) or "20GiB" (2^30 bytes each)'
    )


def format_size(n: int) -> str:
    """'20.0 GB', '512 bytes': a size for a message, in decimal units."""
    for unit, scale in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1000:.1f} KB" if n >= 1000 else f"{n} bytes"


def exact_size(n: int) -> str:
    """'20.0 GB (20,000,000,000 bytes)'."""
    return f"{format_size(n)} ({n:,} bytes)"


def sizes_summary(sizes: list[int], shown: int = 5) -> str:
    """'192.0 MB (64.0 MB, 64.0 MB, 64.0 MB)': a total and its parts, the largest first."""
    if not sizes:
        return "nothing"
    parts = [format_size(s) for s in sorted(sizes, reverse=True)]
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return f"{format_size(sum(sizes))} ({', '.join(parts[:shown])}{more})"
