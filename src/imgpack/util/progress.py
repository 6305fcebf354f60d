"""Progress bars on a terminal, silence in CI logs and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _silent() -> bool:
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    if _silent():
        return iter(items)
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, total=total, unit="img", leave=False))


class _Silent:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def counter(desc: str, total: int | None = None):
    """A bar advanced by `update(count)` (records a block at a time); silent where `progress` is."""
    if _silent():
        return _Silent()
    from tqdm import tqdm

    return tqdm(desc=desc, total=total, unit="img", leave=False)
