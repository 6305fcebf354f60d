"""Codecs for the columnar values: catalog parts, shard properties and aliases, each one Parquet file."""

from __future__ import annotations

import binascii
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imgpack.errors import PackFormatError

__all__ = [
    "CORE_COLUMNS",
    "LOCATION_COLUMNS",
    "PART_ROWS",
    "catalog_schema",
    "encode_table",
    "decode_table",
    "extra_array",
    "unify_parts",
    "hex_digests",
    "json_columns",
    "numpy_of",
    "bools_of",
    "rising",
]

CORE_COLUMNS = ("key", "label", "split", "format", "width", "height", "size", "hash")
LOCATION_COLUMNS = ("shard", "slot")  # where the record's bytes are: shard number, slot in it
PART_ROWS = 16_384  # catalog rows per Parquet value: bounds the writer's memory and a chunk's
PROPS_COLUMNS = ("hash", "size", "format", "width", "height")
ALIAS_COLUMNS = ("alias", "key")
_JSON_MARK = {b"imgpack": b"json"}  # field metadata of an extra column stored as JSON text
_COMPRESSION = "zstd"


def _core_types(digest_size: int) -> dict[str, pa.DataType]:
    return {
        "key": pa.string(),
        "label": pa.string(),
        "split": pa.string(),
        "format": pa.string(),
        "width": pa.int32(),
        "height": pa.int32(),
        "size": pa.int64(),
        "hash": pa.binary(digest_size),
        "shard": pa.int32(),
        "slot": pa.int32(),
    }


def catalog_schema(digest_size: int | None = None) -> pa.Schema:
    """The fixed columns of every catalog part; extra columns of the labels table follow them.

    Format 3 stores no digest in the catalog (the shards' props hold it, so a new version does not
    rewrite every digest); format 2 did: pass its `digest_size` to read one.
    """
    types = _core_types(digest_size or 1)
    if digest_size is None:
        del types["hash"]
    return pa.schema(list(types.items()))


def props_schema(digest_size: int) -> pa.Schema:
    types = _core_types(digest_size)
    return pa.schema([(name, types[name]) for name in PROPS_COLUMNS])


def alias_schema() -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in ALIAS_COLUMNS])


def extra_array(name: str, values: list[Any]) -> tuple[pa.Field, pa.Array]:
    """An extra column as Arrow when its values round-trip exactly, else as JSON text (marked)."""
    try:
        array = pa.array(values)
        if array.type != pa.null() and array.to_pylist() == values:
            return pa.field(name, array.type), array
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    texts = [None if v is None else json.dumps(v, sort_keys=True) for v in values]
    return pa.field(name, pa.string(), metadata=_JSON_MARK), pa.array(texts, pa.string())


def json_columns(schema: pa.Schema) -> list[str]:
    """Names of extra columns stored as JSON text (their values had no exact Arrow type)."""
    return [f.name for f in schema if f.metadata == _JSON_MARK]


def unify_parts(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for every part: Arrow types where they agree or widen, JSON text where they do not."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            seen = fields.get(field.name)
            if seen is None or seen.type == pa.null():
                fields[field.name] = field
            elif field.type == pa.null() or field.equals(seen, check_metadata=True):
                continue
            else:
                try:
                    merged = pa.unify_schemas(
                        [pa.schema([seen]), pa.schema([field])], promote_options="permissive"
                    ).field(0)
                    ok = merged.metadata != _JSON_MARK and seen.metadata != _JSON_MARK
                    ok = ok and field.metadata != _JSON_MARK
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    ok = False
                fields[field.name] = (
                    merged if ok else pa.field(field.name, pa.string(), metadata=_JSON_MARK)
                )
    return pa.schema(list(fields.values()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` cast to `schema` (from `unify_parts`): widened types, or JSON text where marked."""
    columns = []
    for field in schema:
        column = table.column(field.name)
        if field.metadata == _JSON_MARK and table.schema.field(field.name).metadata != _JSON_MARK:
            values = column.to_pylist()
            column = pa.array(
                [None if v is None else json.dumps(v, sort_keys=True) for v in values], pa.string()
            )
        elif column.type != field.type:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def encode_table(table: pa.Table) -> bytes:
    """One Parquet file (one row group), deterministic for the same table and pyarrow."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=_COMPRESSION, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


def read_schema(raw: bytes | memoryview, where: str) -> pa.Schema:
    """The Arrow schema of a Parquet value, from its footer alone."""
    try:
        return pq.ParquetFile(pa.BufferReader(raw)).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise PackFormatError(f"{where} is not a readable Parquet value ({exc})") from None


def decode_table(
    raw: bytes | memoryview,
    required: pa.Schema,
    where: str,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """A Parquet value back into a table; every column of `required` must be there with its type."""
    schema = read_schema(raw, where)
    reader = pq.ParquetFile(pa.BufferReader(raw))
    for field in required:
        index = schema.get_field_index(field.name)
        if index < 0:
            raise PackFormatError(f"{where} has no '{field.name}' column: the pack is damaged")
        if schema.field(index).type != field.type:
            raise PackFormatError(
                f"{where} column '{field.name}' is {schema.field(index).type}, "
                f"expected {field.type}: the pack is damaged"
            )
    try:
        # One thread: a part is small, and an idle Arrow thread pool at interpreter exit has been
        # seen to end the process with "terminate called without an active exception".
        columns = list(columns) if columns is not None else None
        return reader.read(columns=columns, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise PackFormatError(f"{where} cannot be decoded ({exc}): the pack is damaged") from None


def hex_digests(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Fixed-size binary digests as lowercase hex text, without a Python object per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    width = column.type.byte_width
    if column.null_count:
        raise PackFormatError("a catalog digest is null: the pack is damaged")
    data = column.buffers()[1]
    start = column.offset * width
    raw = memoryview(data)[start : start + len(column) * width]
    text = pa.py_buffer(binascii.hexlify(raw))
    kind, offset_type = (
        (pa.string(), np.int32) if len(text) < 2**31 else (pa.large_string(), np.int64)
    )
    offsets = np.arange(0, len(text) + 1, 2 * width, dtype=offset_type)
    return pa.Array.from_buffers(kind, len(column), [None, pa.py_buffer(offsets), text])


_NUMPY_TYPES = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint16(): np.uint16,
    pa.uint32(): np.uint32,
    pa.uint64(): np.uint64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def numpy_of(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column without nulls as a read-only numpy array, viewing Arrow's buffers where
    it is one chunk. Not pyarrow's `to_numpy`: its first call imports pandas (0.3 s), which a
    reader's first record would wait for."""
    dtype = _NUMPY_TYPES.get(column.type)
    chunked = isinstance(column, pa.ChunkedArray)
    if dtype is None or column.null_count:
        return column.to_numpy() if chunked else column.to_numpy(zero_copy_only=False)
    chunks = column.chunks if chunked else [column]
    parts = [
        np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype().itemsize)
        for chunk in chunks
        if len(chunk)
    ] or [np.empty(0, dtype)]
    out = np.concatenate(parts) if len(parts) != 1 else parts[0]
    out.flags.writeable = False  # a view may share Arrow's memory (a cached catalog table)
    return out


def bools_of(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column (nulls as False) as a numpy array, without pandas (see `numpy_of`)."""
    import pyarrow.compute as pc

    return numpy_of(pc.cast(column.fill_null(False), pa.int8())).astype(bool)


def rising(keys: pa.Array) -> np.ndarray:
    """For each key but the first, whether it is above the one before it."""
    import pyarrow.compute as pc

    n = len(keys)
    if n < 2:
        return np.ones(0, bool)
    return bools_of(pc.less(keys.slice(0, n - 1), keys.slice(1)))
