"""Read a labels table (CSV/TSV, JSON Lines, Parquet) in chunks as normalised (path, label, extra) rows."""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import math
import posixpath
import re
import unicodedata
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
_IM2REC = {".lst", ".ctl"}  # MXNet im2rec: index TAB label(s) TAB path, no header
_CAFFE = {".txt"}  # Caffe/ImageNet: path, whitespace, label; no header
LIST_INDEX = "index"  # the numbering column of list formats: not metadata, dropped


def normalise_path(text: str) -> str:
    """A table path as a record key: NFC, POSIX separators, no leading ./, no redundant parts."""
    text = text.strip().replace("\\", "/")
    if not text.isascii():  # ASCII is NFC already
        text = unicodedata.normalize("NFC", text)
    if text and (_REDUNDANT.search(text) or text in (".", "..")):
        return posixpath.normpath(text)
    return text  # as normpath would leave it: no empty, "." or ".." part


# Where normpath would change a path: an empty part (//, a leading or trailing /), "." or "..".
_REDUNDANT = re.compile(r"//|^/|/$|(?:^|/)\.\.?(?:/|$)")


def read_label_rows(
    table: str | Path,
    path_column: str,
    label_column: str,
    chunksize: int,
    columns: list[str] | None = None,
) -> Iterator[LabelRow]:
    """Yield every row of the table; memory is one chunk whatever the table's length.

    `columns` names the columns of a table without a header line, in order; a column named
    `index` (a list's own numbering) is dropped.
    """
    table = Path(table)
    if not table.is_file():
        raise InputError(
            f"{table}: labels table not found (check the path, or ingest.labels in params.yaml)"
        )
    suffix = table.suffix.lower()
    columns = list(columns) if columns else None
    # A headerless list's numbering is not metadata.
    drop = {LIST_INDEX} if columns or suffix in _IM2REC | _CAFFE else set()
    chunks = _chunks(table, suffix, path_column, label_column, chunksize, columns)
    row_number = 0
    checked = False
    for names, rows in chunks:
        if not checked:
            _check_columns(table, [c for c in names if c not in drop], path_column, label_column)
            checked = True
        if rows and type(rows[0]) is list:  # a CSV/TSV chunk: fields as text, in `names` order
            at_path, at_label = names.index(path_column), names.index(label_column)
            others = [
                (i, n)
                for i, n in enumerate(names)
                if i not in (at_path, at_label) and n not in drop
            ]
            for fields in rows:
                row_number += 1
                path = fields[at_path]
                if not path.strip():
                    raise InputError(f"{table}: row {row_number} has an empty '{path_column}'")
                extra = {n: fields[i] for i, n in others} if others else {}
                yield normalise_path(path), fields[at_label], extra, row_number
            continue
        for row in rows:
            row_number += 1
            path, label = row.get(path_column), row.get(label_column)
            if path is None or not str(path).strip():
                raise InputError(f"{table}: row {row_number} has an empty '{path_column}'")
            extra = {
                k: _plain(v)
                for k, v in row.items()
                if k not in (path_column, label_column) and k not in drop
            }
            label_text = "" if label is None else str(label)
            yield normalise_path(str(path)), label_text, extra, row_number


def _chunks(
    table: Path,
    suffix: str,
    path_column: str,
    label_column: str,
    chunksize: int,
    columns: list[str] | None,
):
    """(column names, rows) of each chunk of the table, read as its suffix says."""
    if suffix in _IM2REC:
        return _list_chunks(
            table, "\t", columns, [LIST_INDEX, label_column, path_column], chunksize
        )
    if suffix in _CAFFE:
        return _list_chunks(table, None, columns, [path_column, label_column], chunksize)
    if suffix in _DELIMITED:
        return _delimited_chunks(table, _DELIMITED[suffix], chunksize, columns)
    if suffix in _JSONL:
        return _jsonl_chunks(table, chunksize)
    if suffix in _PARQUET:
        return _parquet_chunks(table, chunksize)
    raise InputError(
        f"{table}: unknown labels table type {suffix!r}; use .csv, .tsv, .jsonl, .parquet, "
        "or a .lst/.ctl (im2rec) or .txt (Caffe) list"
    )


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


def _delimited_chunks(table: Path, sep: str, chunksize: int, columns: list[str] | None):
    """Rows of a CSV/TSV table as text (no type inference: it could differ between chunks)."""
    with open(table, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep, strict=True)
        try:
            names = columns or next(reader, None)
            if names is None:
                raise InputError(f"{table}: the labels table is empty (no header line)")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise InputError(f"{table}: column(s) {', '.join(repeated)} appear twice")
            yield names, []  # the columns are checked before any row
            rows: list[list[str]] = []
            width = len(names)
            for fields in reader:
                if len(fields) != width:
                    if not fields:  # a blank line
                        continue
                    raise InputError(
                        f"{table}:{reader.line_num}: {len(fields)} fields, expected {width} "
                        f"({', '.join(names)})"
                    )
                rows.append(fields)
                if len(rows) >= chunksize:
                    yield names, rows
                    rows = []
            yield names, rows
        except csv.Error as exc:
            raise InputError(
                f"{table}:{reader.line_num}: cannot parse the labels table ({exc})"
            ) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{table}: not UTF-8 text ({exc})") from None


def _list_chunks(table: Path, sep: str | None, columns, default: list[str], chunksize: int):
    """Rows of a headerless list: split on `sep` (or, for Caffe lists, on the last whitespace)."""
    rows: list[dict[str, Any]] = []
    names = columns or default
    with open(table, encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                # A Caffe list's path may hold spaces: split at the last whitespace.
                caffe = sep is None and not columns
                fields = line.strip().rsplit(None, 1) if caffe else line.split(sep)
                if columns is None and sep == "\t" and len(fields) > 3:  # im2rec: several labels
                    names = [
                        LIST_INDEX,
                        default[1],
                        *(f"label_{k}" for k in range(1, len(fields) - 2)),
                        default[2],
                    ]
                if len(fields) != len(names):
                    raise InputError(
                        f"{table}:{number}: {len(fields)} fields, expected {len(names)} "
                        f"({', '.join(names)}); name them with ingest.columns / --columns"
                    )
                rows.append(dict(zip(names, fields, strict=True)))  # names may grow mid-list
                if len(rows) >= chunksize:
                    yield names, rows
                    rows = []
        except UnicodeDecodeError as exc:
            raise InputError(f"{table}: not UTF-8 text ({exc})") from None
    yield names, rows


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
