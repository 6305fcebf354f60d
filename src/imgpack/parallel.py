"""An ordered map over batches on worker threads, with a bounded number of batches in flight."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["batched", "ordered_batch_map"]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_batch_map(
    fn: Callable[[list[T]], list[R]], items: Iterable[T], workers: int, batch: int = 256
) -> Iterator[tuple[T, R]]:
    """Yield (item, fn-result) in input order; file reads and hashing release the GIL, so threads help.

    Unlike Executor.map, the input is consumed lazily: memory is `2 * workers` batches at most.
    """
    batches = batched(items, batch)
    if workers <= 1:
        for chunk in batches:
            yield from zip(chunk, fn(chunk), strict=True)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for chunk in batches:
            pending.append((chunk, pool.submit(fn, chunk)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield from zip(done, future.result(), strict=True)
        while pending:
            done, future = pending.popleft()
            yield from zip(done, future.result(), strict=True)
