"""Progress bars on a terminal, silence in CI logs and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    if os.environ.get("CI") or not sys.stderr.isatty():
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
    if os.environ.get("CI") or not sys.stderr.isatty():
        return _Silent()
    from tqdm import tqdm

    return tqdm(desc=desc, total=total, unit="img", leave=False)
