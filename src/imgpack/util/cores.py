"""How many worker processes: every core this process may use, or a checked count."""

from __future__ import annotations

import os

from imgpack.errors import InputError


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(value: int | str | None, where: str = "workers") -> int:
    """`0`, `auto` or None mean every core this process may use; otherwise a positive count."""
    if value in (None, 0, "0", "auto"):
        return cores()
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 1:
        raise InputError(f"{where} is {value!r}; use a number of processes, or 0 / auto for all")
    return count
