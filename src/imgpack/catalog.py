"""The metadata catalog as pandas DataFrames, whole or in bounded chunks, without image bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd

__all__ = ["metadata_frame", "metadata_chunks", "CORE_COLUMNS"]

CORE_COLUMNS = ("key", "label", "split", "format", "width", "height", "size", "hash")


def _row(meta: dict[str, Any], columns: Sequence[str] | None) -> dict[str, Any]:
    flat = {name: meta[name] for name in CORE_COLUMNS}
    flat.update(meta["extra"])
    if columns is None:
        return flat
    return {name: flat.get(name) for name in columns}


def _frame(index: list[int], rows: list[dict[str, Any]], columns) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, index=pd.Index(index, name="index"), columns=columns)
    return frame


def metadata_frame(
    items: Iterable[tuple[int, dict]], columns: Sequence[str] | None
) -> pd.DataFrame:
    index, rows = [], []
    for i, meta in items:
        index.append(i)
        rows.append(_row(meta, columns))
    return _frame(index, rows, list(columns) if columns is not None else None)


def metadata_chunks(
    items: Iterable[tuple[int, dict]], columns: Sequence[str] | None, chunksize: int
) -> Iterator[pd.DataFrame]:
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    index, rows = [], []
    for i, meta in items:
        index.append(i)
        rows.append(_row(meta, columns))
        if len(rows) >= chunksize:
            yield _frame(index, rows, list(columns) if columns is not None else None)
            index, rows = [], []
    if rows:
        yield _frame(index, rows, list(columns) if columns is not None else None)
