"""The catalog of an open pack: Parquet parts read as Arrow tables and pandas frames, keys found by bisection."""

from __future__ import annotations

import bisect
import json
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pyarrow as pa

from imgpack.errors import PackFormatError
from imgpack.format import tables as cat
from imgpack.format.codec import encode_index

__all__ = ["Catalog", "SortedKeys"]

_HIDDEN = set(cat.LOCATION_COLUMNS)


class Catalog:
    """Column reads of the `catalog` sub-database; `txn` must stay open while this is used."""

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: dict,
        header: dict[str, Any],
        where: str,
        shard_paths: Sequence[Path] = (),
        shard_identities: Sequence[tuple] | None = None,
        shard_props: Callable[[int], bytes] | None = None,
    ):
        self._txn, self._dbs, self.where = txn, dbs, where
        self.parts = header["catalog_parts"]
        self.count = header["count"]
        self.algorithm = header["hash_algorithm"]
        self.digest_size = _digest_size(self.algorithm)
        # Format 2 kept each record's digest in the catalog; format 3 reads it from the shards.
        self.stores_hash = header["format_version"] == 2
        self.schema = cat.catalog_schema(self.digest_size if self.stores_hash else None)
        self._shard_paths = list(shard_paths)
        # The shard files the pack was opened with: digests never come from a newer version's.
        self._shard_identities = shard_identities or [None] * len(self._shard_paths)
        # A streamed pack's shards are no local files: `shard_props(n)` gives shard n's props value.
        self._shard_props = shard_props
        self._shard_count = len(header["shards"])
        self._props: dict[int, np.ndarray] = {}
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
        where = f"{self.where} catalog part {number}"
        raw = self._raw("catalog", number)
        if self.stores_hash or (columns is not None and "hash" not in columns):
            return cat.decode_table(raw, self.schema, where, columns)
        stored = cat.read_schema(raw, where).names if columns is None else list(columns)
        wanted = [c for c in stored if c != "hash"]
        read = wanted + [c for c in cat.LOCATION_COLUMNS if c not in wanted]
        table = cat.decode_table(raw, self.schema, where, read)
        digests = self.digests(
            cat.numpy_of(table.column("shard")), cat.numpy_of(table.column("slot"))
        )
        table = table.select(wanted)
        at = stored.index("hash") if "hash" in stored else _hash_position(wanted)
        return table.add_column(at, pa.field("hash", digests.type), digests)

    def digests(self, shards: np.ndarray, slots: np.ndarray) -> pa.Array:
        """The digests the shards' props record for these (shard, slot) places."""
        width = self.digest_size
        out = np.empty((len(shards), width), dtype=np.uint8)
        for shard in np.unique(shards):
            props = self._shard_digests(int(shard))
            mask = shards == shard
            chosen = slots[mask]
            if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(props)):
                raise PackFormatError(
                    f"{self.where}: the catalog points outside shard {shard}: the pack is damaged"
                )
            out[mask] = props[chosen]
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), len(shards), [None, pa.py_buffer(out)]
        )

    def _shard_digests(self, shard: int) -> np.ndarray:
        props = self._props.get(shard)
        if props is None:
            from imgpack.read.shards import props_digests, read_props

            if not 0 <= shard < self._shard_count:
                raise PackFormatError(
                    f"{self.where}: the catalog names shard {shard}, which the header does not "
                    "list: the pack is damaged"
                )
            if self._shard_props is not None:
                where = f"{self.where} shard {shard}"
                raw = props_digests(self._shard_props(shard), self.algorithm, where).tobytes()
            else:
                path, identity = self._shard_paths[shard], self._shard_identities[shard]
                raw = read_props(path, self.algorithm, identity).tobytes()
            props = np.frombuffer(raw, dtype=np.uint8).reshape(-1, self.digest_size)
            self._props[shard] = props
        return props

    def aliases(self) -> pa.Table:
        """The `aliases` sub-database's table (alias, key of the stored record); empty if none."""
        raw = self._txn.get(encode_index(0), db=self._dbs["aliases"])
        return cat.decode_table(raw or b"", cat.alias_schema(), f"{self.where} aliases")

    @property
    def columns(self) -> list[str]:
        """Every column a user sees: the core columns, then the labels table's extra columns."""
        if self._columns is None:
            schema = self._part_schema() if self.parts else self.schema
            names = [n for n in schema.names if n not in _HIDDEN]
            if "hash" not in names:
                names.insert(_hash_position(names), "hash")
            self._columns = names
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
        cached = set(self._props)
        tables = []
        for number in range(self.parts):
            table = self.part(number, columns)
            tables.append(each(table) if each is not None else table)
        # A whole-catalog read needs every shard's digests once: keeping them all would add their
        # size to the table's own (the cache is for reads of a few records).
        for shard in set(self._props) - cached:
            del self._props[shard]
        if not tables:
            empty = cat.catalog_schema(self.digest_size).empty_table()
            return empty.select([c for c in columns if c in empty.column_names])
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


def _hash_position(names: Sequence[str]) -> int:
    """Where the digest column goes among `names`: after the core columns before it."""
    before = cat.CORE_COLUMNS[: cat.CORE_COLUMNS.index("hash")]
    return max((i + 1 for i, n in enumerate(names) if n in before), default=0)


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
