"""The columnar codecs round-trip: catalog parts, extra columns of every kind, digests as hex."""

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from imgpack.errors import PackFormatError
from imgpack.format import tables as cat


def part(rows: int, extra: dict[str, list] | None = None) -> pa.Table:
    digests = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(rows))
    columns = {
        "key": [f"k{i}" for i in range(rows)],
        "label": ["a"] * rows,
        "split": ["train"] * rows,
        "format": ["PNG"] * rows,
        "width": list(range(rows)),
        "height": [2] * rows,
        "size": [10] * rows,
        "hash": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(32), rows, [None, pa.py_buffer(digests)]
        ),
        "shard": [0] * rows,
        "slot": list(range(rows)),
    }
    table = pa.table(columns, schema=cat.catalog_schema(32))
    for name, values in (extra or {}).items():
        field, array = cat.extra_array(name, values)
        table = table.append_column(field, array)
    return table


def test_a_catalog_part_round_trips_with_identical_bytes_every_time():
    table = part(1000, {"bbox": [[1, 2, 3, 4]] * 1000, "note": ["é"] * 1000})
    raw = cat.encode_table(table)
    assert raw == cat.encode_table(
        part(1000, {"bbox": [[1, 2, 3, 4]] * 1000, "note": ["é"] * 1000})
    )
    back = cat.decode_table(raw, cat.catalog_schema(32), "part")
    assert back.column_names == table.column_names and back.to_pylist() == table.to_pylist()
    assert cat.decode_table(raw, cat.catalog_schema(32), "part", ["width"]).column_names == [
        "width"
    ]


@pytest.mark.parametrize(
    "values, stored",
    [
        ([1, 2, None], "int64"),
        ([0.5, None, 2.0], "double"),
        (["x", None], "string"),
        ([[1, 2], [3]], "list<item: int64>"),
        ([True, False], "bool"),
        ([{"a": 1}, {"b": 2}], "json"),  # as Arrow structs each would gain the other's key
        ([1, "one"], "json"),  # no common type
        ([None, None], "json"),
    ],
)
def test_extra_columns_are_arrow_when_exact_else_json_and_read_back_equal(values, stored):
    field, array = cat.extra_array("c", values)
    if stored == "json":
        assert cat.json_columns(pa.schema([field])) == ["c"]
    else:
        assert str(field.type) == stored and not cat.json_columns(pa.schema([field]))
    table = pa.Table.from_arrays([array], schema=pa.schema([field]))
    back = cat.decode_table(cat.encode_table(table), pa.schema([]), "x")
    assert back.to_pylist() == table.to_pylist()
    assert cat.json_columns(back.schema) == cat.json_columns(table.schema)


def test_parts_whose_extra_types_differ_are_unified_by_widening_or_json():
    ints = part(2, {"n": [1, 2], "t": [1, 2]}).schema
    floats = part(2, {"n": [0.5, 1.5], "t": ["a", "b"]}).schema
    unified = cat.unify_parts([ints, floats])
    assert unified.field("n").type == pa.float64()
    assert cat.json_columns(unified) == ["t"]
    conformed = cat.conform(part(2, {"n": [1, 2], "t": [1, 2]}), unified)
    assert conformed.column("n").to_pylist() == [1.0, 2.0]
    assert conformed.column("t").to_pylist() == ["1", "2"]


def test_digests_become_lowercase_hex_for_any_slice():
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(50)]
    array = pa.array(digests, pa.binary(32))
    assert cat.hex_digests(array).to_pylist() == [d.hex() for d in digests]
    assert cat.hex_digests(array.slice(7, 5)).to_pylist() == [d.hex() for d in digests[7:12]]
    chunked = pa.chunked_array([array.slice(0, 3), array.slice(3, 4)])
    assert cat.hex_digests(chunked).to_pylist() == [d.hex() for d in digests[:7]]


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"not parquet", "not a readable Parquet value"),
        (cat.encode_table(pa.table({"key": ["a"]})), "has no 'label' column"),
        (cat.encode_table(part(1).set_column(4, "width", pa.array(["w"]))), "'width' is string"),
    ],
)
def test_damaged_or_foreign_parts_are_refused(raw, words):
    with pytest.raises(PackFormatError, match=words):
        cat.decode_table(raw, cat.catalog_schema(32), "part")


@pytest.mark.parametrize(
    "kind", [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.uint64(), pa.float32()]
)
def test_numpy_of_equals_arrows_own_conversion_for_every_chunking_and_offset(kind):
    values = pa.array(list(range(7)), kind)
    shapes = {
        "one chunk": pa.chunked_array([values]),
        "chunks": pa.chunked_array([values[:3], values[3:]]),
        "a slice": values[2:6],
        "sliced chunks": pa.chunked_array([values[1:3], values[4:]]),
        "no rows": pa.chunked_array([], kind),
        "an empty chunk": pa.chunked_array([values[:0], values[:2]]),
    }
    for name, column in shapes.items():
        got = cat.numpy_of(column)
        assert got.dtype == column.type.to_pandas_dtype(), name
        assert got.tolist() == column.to_pylist(), name
        assert not got.flags.writeable, name  # a view would write into Arrow's memory


def test_numpy_of_a_column_with_nulls_or_of_text_is_arrows_own_conversion():
    with_nulls = cat.numpy_of(pa.chunked_array([pa.array([1, None, 3], pa.int32())]))
    assert with_nulls[0] == 1 and np.isnan(with_nulls[1]) and with_nulls[2] == 3
    assert cat.numpy_of(pa.array(["a", "b"])).tolist() == ["a", "b"]
