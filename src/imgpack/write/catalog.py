"""The catalog being written: rows gathered in columns and encoded as Parquet parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from imgpack.format import tables as cat

CATALOG_BATCH = 4 << 20  # bytes per write transaction of the catalog


class CatalogRows:
    """Catalog rows of the current part, as Arrow tables of the core columns or, for rows that
    come as Python values (extra columns among them), column by column; every PART_ROWS rows
    make a Parquet file, however they came."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: list[Path] = []
        self.schemas: list[pa.Schema] = []
        self.tables: list[pa.Table] = []
        self.held = 0  # rows in `tables`
        self._reset()

    def _reset(self) -> None:
        self.columns: list[list] = [[] for _ in cat.catalog_schema()]
        self.extras: list[dict[str, Any]] = []

    def append(self, row: tuple, extra: dict[str, Any]) -> None:
        self._as_lists()
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)
        self.extras.append(extra)
        if len(self.extras) >= cat.PART_ROWS:
            self.flush()

    def extend(self, columns: list, extras: list[dict[str, Any]]) -> None:
        self._as_lists()
        taken = 0
        while taken < len(extras):
            room = cat.PART_ROWS - len(self.extras)
            for held, values in zip(self.columns, columns, strict=True):
                held.extend(values[taken : taken + room])
            self.extras.extend(extras[taken : taken + room])
            taken += room
            if len(self.extras) >= cat.PART_ROWS:
                self.flush()

    def extend_table(self, table: pa.Table) -> None:
        """Rows as a table of the core columns (`cat.catalog_schema()`), no extra columns."""
        at = 0
        while at < table.num_rows:
            room = cat.PART_ROWS - self.held - len(self.extras)
            piece = table.slice(at, room)
            at += piece.num_rows
            if self.extras:  # rows that came as values are earlier: the piece joins them
                values = piece.to_pydict()
                self.extend([values[f.name] for f in cat.catalog_schema()], [{}] * piece.num_rows)
                continue
            self.tables.append(piece)
            self.held += piece.num_rows
            if self.held >= cat.PART_ROWS:
                self.flush()

    def _as_lists(self) -> None:
        """Rows held as tables moved to the lists, which rows given as values join."""
        if self.tables:
            values = pa.concat_tables(self.tables).to_pydict()
            self.tables, self.held = [], 0
            self.extend([values[f.name] for f in cat.catalog_schema()], [{}] * len(values["key"]))

    def flush(self) -> None:
        if self.tables:
            self._write(pa.concat_tables(self.tables).combine_chunks())
            self.tables, self.held = [], 0
            return
        count = len(self.extras)
        if not count:
            return
        schema = cat.catalog_schema()
        arrays = [
            pa.array(values, field.type) for values, field in zip(self.columns, schema, strict=True)
        ]
        fields = list(schema)
        for name in sorted({k for extra in self.extras for k in extra}):
            field, values = cat.extra_array(name, [extra.get(name) for extra in self.extras])
            fields.append(field)
            arrays.append(values)
        self._write(pa.Table.from_arrays(arrays, schema=pa.schema(fields)))
        self._reset()

    def _write(self, table: pa.Table) -> None:
        path = self.folder / f"part-{len(self.parts):06d}.parquet"
        path.write_bytes(cat.encode_table(table))
        self.parts.append(path)
        self.schemas.append(table.schema)

    def encoded_parts(self):
        """Every part as Parquet bytes, cast to one schema shared by all parts."""
        self.flush()
        unified = cat.unify_parts(self.schemas)
        full = cat.catalog_schema()
        for path, schema in zip(self.parts, self.schemas, strict=True):
            raw = path.read_bytes()
            if not schema.equals(unified, check_metadata=True):
                table = cat.decode_table(raw, full, str(path))
                for field in unified:
                    if field.name not in table.column_names:
                        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
                raw = cat.encode_table(cat.conform(table, unified))
            yield raw
