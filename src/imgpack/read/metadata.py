"""`Pack.metadata()`: catalog columns as pandas frames, whole or in chunks, optionally filtered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imgpack.read.catalog import Catalog

__all__ = ["metadata_frame", "metadata_chunks"]

_INDEX = "__imgpack_index__"


def _expression(filters: Any) -> pc.Expression | None:
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(filters)


def _filter_columns(filters: Any) -> list[str]:
    """Columns a DNF filter list names (an Expression is read against every column)."""
    if filters is None:
        return []
    if isinstance(filters, pc.Expression):
        return []
    terms = [t for group in filters for t in group] if isinstance(filters[0], list) else filters
    return [t[0] for t in terms]


def _parts(
    catalog: Catalog, columns: Sequence[str] | None, filters: Any
) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    """(table of `columns`, record indices or None for a contiguous run) per catalog part."""
    wanted = list(catalog.columns if columns is None else columns)
    expression = _expression(filters)
    if expression is None:
        for start, table in catalog.tables(wanted):
            yield table, np.arange(start, start + table.num_rows)
        return
    extra = [c for c in _filter_columns(filters) if c not in wanted]
    if isinstance(filters, pc.Expression):
        extra = [c for c in catalog.columns if c not in wanted]
    for start, table in catalog.tables(wanted + extra):
        table = table.append_column(_INDEX, pa.array(np.arange(start, start + table.num_rows)))
        table = table.filter(expression)
        yield table.select(wanted), table.column(_INDEX).to_numpy()


def metadata_frame(catalog: Catalog, columns: Sequence[str] | None, filters: Any) -> pd.DataFrame:
    """The whole catalog (or the rows `filters` selects) as one frame indexed by record index."""
    if filters is None:
        # Digests become hex part by part, so the bytes and the text of all of them never coexist.
        table = catalog.table(columns, each=catalog.hexed)
        return catalog.frame(table, pd.RangeIndex(table.num_rows, name="index"))
    tables, indices = [], []
    for table, index in _parts(catalog, columns, filters):
        tables.append(table)
        indices.append(index)
    if not tables:
        return catalog.frame(catalog.table(columns), pd.RangeIndex(0, name="index"))
    index = pd.Index(np.concatenate(indices), name="index")
    return catalog.frame(pa.concat_tables(tables), index)


def metadata_chunks(
    catalog: Catalog, columns: Sequence[str] | None, filters: Any, chunksize: int
) -> Iterator[pd.DataFrame]:
    """Frames of exactly `chunksize` rows (the last may be shorter); one catalog part in memory."""
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    pending: list[tuple[pa.Table, np.ndarray]] = []
    held = 0
    for table, index in _parts(catalog, columns, filters):
        pending.append((table, index))
        held += table.num_rows
        while held >= chunksize:
            frame, pending = _take(catalog, pending, chunksize)
            held -= chunksize
            yield frame
    if held:
        yield _take(catalog, pending, held)[0]


def _take(catalog: Catalog, pending, n: int):
    tables, indices, rest = [], [], []
    need = n
    for table, index in pending:
        if need == 0:
            rest.append((table, index))
            continue
        used = min(need, table.num_rows)
        tables.append(table.slice(0, used))
        indices.append(index[:used])
        if used < table.num_rows:
            rest.append((table.slice(used), index[used:]))
        need -= used
    frame = catalog.frame(pa.concat_tables(tables), pd.Index(np.concatenate(indices), name="index"))
    return frame, rest
