"""Read a labels table (CSV/TSV, JSON Lines, Parquet) in chunks as normalised (path, label, extra) rows."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgpack.errors import InputError

__all__ = ["LabelRow", "read_label_rows", "normalise_path", "RESERVED_COLUMNS"]

LabelRow = tuple[str, str, dict[str, Any], int]  # path, label, extra columns, 1-based row number
RESERVED_COLUMNS = {"index", "key", "label", "hash", "size", "format", "width", "height", "split"}
_DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSONL = {".jsonl", ".ndjson"}
_PARQUET = {".parquet", ".pq"}


def normalise_path(text: str) -> str:
    """A table path as a record key: POSIX separators, no leading ./, no redundant parts."""
    text = text.strip().replace("\\", "/")
    return posixpath.normpath(text) if text else text


def read_label_rows(
    table: str | Path, path_column: str, label_column: str, chunksize: int
) -> Iterator[LabelRow]:
    """Yield every row of the table; memory is one chunk whatever the table's length."""
    table = Path(table)
    if not table.is_file():
        raise InputError(
            f"{table}: labels table not found (check the path, or ingest.labels in params.yaml)"
        )
    suffix = table.suffix.lower()
    if suffix in _DELIMITED:
        chunks = _delimited_chunks(table, _DELIMITED[suffix], chunksize)
    elif suffix in _JSONL:
        chunks = _jsonl_chunks(table, chunksize)
    elif suffix in _PARQUET:
        chunks = _parquet_chunks(table, chunksize)
    else:
        raise InputError(
            f"{table}: unknown labels table type {suffix!r}; use .csv, .tsv, .jsonl or .parquet"
        )
    row_number = 0
    checked = False
    for columns, rows in chunks:
        if not checked:
            _check_columns(table, columns, path_column, label_column)
            checked = True
        for row in rows:
            row_number += 1
            path, label = row.get(path_column), row.get(label_column)
            if path is None or not str(path).strip():
                raise InputError(f"{table}: row {row_number} has an empty '{path_column}'")
            extra = {k: _plain(v) for k, v in row.items() if k not in (path_column, label_column)}
            label_text = "" if label is None else str(label)
            yield normalise_path(str(path)), label_text, extra, row_number


def _check_columns(table: Path, columns: list[str], path_column: str, label_column: str) -> None:
    for name, param in ((path_column, "path_column"), (label_column, "label_column")):
        if name not in columns:
            raise InputError(
                f"{table}: no column '{name}' (columns: {', '.join(map(str, columns))}); "
                f"set ingest.{param} in params.yaml"
            )
    clashes = sorted(RESERVED_COLUMNS & (set(columns) - {path_column, label_column}))
    if clashes:
        raise InputError(
            f"{table}: column(s) {', '.join(clashes)} clash with fields imgpack computes; rename them"
        )


def _delimited_chunks(table: Path, sep: str, chunksize: int):
    import pandas as pd

    try:
        # dtype=str: type inference per chunk could disagree between chunks and break determinism.
        reader = pd.read_csv(table, sep=sep, dtype=str, keep_default_na=False, chunksize=chunksize)
        with reader:
            for frame in reader:
                yield list(frame.columns), frame.to_dict("records")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{table}: cannot parse the labels table ({exc})".replace("\n", " ")
        ) from None


def _jsonl_chunks(table: Path, chunksize: int):
    rows: list[dict[str, Any]] = []
    columns: list[str] | None = None
    with open(table, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{table}:{line_number}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise InputError(f"{table}:{line_number}: expected a JSON object per line")
            columns = columns or list(row)
            rows.append(row)
            if len(rows) >= chunksize:
                yield columns, rows
                rows = []
    if rows or columns is None:
        yield columns or [], rows


def _parquet_chunks(table: Path, chunksize: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(table)
        columns = parquet.schema_arrow.names
        for batch in parquet.iter_batches(batch_size=chunksize):
            yield columns, batch.to_pylist()
        if parquet.metadata.num_rows == 0:
            yield columns, []
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{table}: cannot read the Parquet table ({exc})") from None


def _plain(value: Any) -> Any:
    """A value as JSON and msgpack can both carry it, the same way every run."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return str(value)
