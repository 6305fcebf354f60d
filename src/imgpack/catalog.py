"""The catalog of an open pack: Parquet parts read as Arrow tables and pandas frames, keys found by bisection."""

from __future__ import annotations

import bisect
import json
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import lmdb
import numpy as np
import pyarrow as pa

from imgpack.errors import PackFormatError
from imgpack.format import catalog as cat
from imgpack.format.codec import encode_index

__all__ = ["Catalog", "SortedKeys"]

_HIDDEN = set(cat.LOCATION_COLUMNS)


class Catalog:
    """Column reads of the `catalog` sub-database; `txn` must stay open while this is used."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, header: dict[str, Any], where: str):
        self._txn, self._dbs, self.where = txn, dbs, where
        self.parts = header["catalog_parts"]
        self.count = header["count"]
        self.schema = cat.catalog_schema(_digest_size(header["hash_algorithm"]))
        self._columns: list[str] | None = None
        self._json: list[str] = []

    def _raw(self, db: str, number: int) -> bytes:
        raw = self._txn.get(encode_index(number), db=self._dbs[db])
        if raw is None:
            raise PackFormatError(
                f"{self.where}: {db} value {number} is missing: the pack is damaged"
            )
        return raw

    def part(self, number: int, columns: Sequence[str] | None = None) -> pa.Table:
        return cat.decode_table(
            self._raw("catalog", number),
            self.schema,
            f"{self.where} catalog part {number}",
            columns,
        )

    @property
    def columns(self) -> list[str]:
        """Every column a user sees: the core columns, then the labels table's extra columns."""
        if self._columns is None:
            schema = self._part_schema() if self.parts else self.schema
            self._columns = [n for n in schema.names if n not in _HIDDEN]
            self._json = cat.json_columns(schema)
        return self._columns

    def _part_schema(self) -> pa.Schema:
        return cat.read_schema(self._raw("catalog", 0), f"{self.where} catalog part 0")

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.columns if c not in cat.CORE_COLUMNS]

    def _check(self, columns: Sequence[str]) -> None:
        known = set(self.columns) | _HIDDEN
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise KeyError(
                f"no column {', '.join(map(repr, unknown))} in the catalog; "
                f"columns: {', '.join(self.columns)}"
            )

    def table(self, columns: Sequence[str] | None = None, each=None) -> pa.Table:
        """The whole catalog (or some columns) as one Arrow table, row `i` = record `i`;
        `each(part)` transforms every part before they are joined."""
        columns = list(self.columns if columns is None else columns)
        self._check(columns)
        tables = [self.part(n, columns) for n in range(self.parts)]
        if each is not None:
            tables = [each(t) for t in tables]
        if not tables:
            return self.schema.empty_table().select([c for c in columns if c in self.schema.names])
        table = pa.concat_tables(tables)
        if table.num_rows != self.count:
            raise PackFormatError(
                f"{self.where}: the catalog holds {table.num_rows} rows but the header says "
                f"{self.count}: the pack is damaged"
            )
        return table

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first record index, table) of each part, in order."""
        columns = list(self.columns if columns is None else columns)
        self._check(columns)
        start = 0
        for number in range(self.parts):
            table = self.part(number, columns)
            yield start, table
            start += table.num_rows

    def frame(self, table: pa.Table, index) -> Any:
        """A pandas frame of catalog columns: digests as hex text, JSON-text extras decoded."""
        table = self.hexed(table)
        # Arrow buffers are freed column by column as pandas takes them: peak ~ one copy, not two.
        frame = table.to_pandas(self_destruct=True, split_blocks=True, use_threads=False)
        del table
        frame.index = index
        for name in self._json:
            if name in frame.columns:
                frame[name] = frame[name].map(_from_json).astype(object)
        return frame

    @staticmethod
    def hexed(table: pa.Table) -> pa.Table:
        """`table` with its digest column as hex text (each chunk on its own: a small peak)."""
        if "hash" not in table.column_names:
            return table
        column = table.column("hash")
        if column.type == pa.string():
            return table
        chunks = [cat.hex_digests(chunk) for chunk in column.chunks]
        hexed = pa.chunked_array(chunks, pa.string()) if chunks else pa.array([], pa.string())
        return table.set_column(table.column_names.index("hash"), "hash", hexed)

    def row(self, table: pa.Table, i: int) -> dict[str, Any]:
        """Record `i`'s metadata as a dict (the `Record.meta` layout) from a full catalog table."""
        values = {name: table.column(name)[i].as_py() for name in table.column_names}
        return self.meta_dict(values)

    def meta_dict(self, values: dict[str, Any]) -> dict[str, Any]:
        meta = {name: values[name] for name in cat.CORE_COLUMNS}
        meta["hash"] = meta["hash"].hex()
        meta["extra"] = {
            name: _from_json(values[name]) if name in self._json else values[name]
            for name in self.extra_columns
        }
        return meta


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _digest_size(algorithm: str) -> int:
    import hashlib

    try:
        return hashlib.new(algorithm).digest_size
    except ValueError:
        raise PackFormatError(f"unknown hash algorithm {algorithm!r} in the pack header") from None


class SortedKeys:
    """A sorted string column searched by bisection on its UTF-8 bytes: no dict, no str per row."""

    def __init__(self, column: pa.ChunkedArray | pa.Array):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
        column = column.cast(pa.large_string())
        self._n = len(column)
        buffers = column.buffers()
        offsets = np.frombuffer(
            buffers[1], dtype=np.int64, count=self._n + 1, offset=column.offset * 8
        )
        self._offsets = array("q", offsets.tobytes())
        self._data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        return self._data[self._offsets[i] : self._offsets[i + 1]].tobytes()

    def text(self, i: int) -> str:
        return self[i].decode("utf-8")

    def find(self, raw: bytes) -> int | None:
        i = bisect.bisect_left(self, raw)
        return i if i < self._n and self[i] == raw else None
