"""Ingest's records of its last run: the walk's lines as Arrow values, written and read back in
batches, and refused when they are not the snapshot's."""

import numpy as np
import pyarrow as pa
import pytest

from imgpack.ingest import records
from imgpack.ingest.records import SCHEMA, RecordsFile, RecordsWriter, lines_of, write_full_run
from imgpack.ingest.walk import walk_stat_blocks
from tests.conftest import png_bytes, write_tree


def test_the_walks_lines_become_one_value_each_without_changing_a_byte(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {f"{d}/{n}.png": png_bytes() for d in "ab" for n in range(5)}
    )
    pieces = [block.encode() for block in walk_stat_blocks(raw, None, 3)]
    lines = lines_of(pieces)
    assert lines.num_chunks == len(pieces)
    assert lines.to_pylist() == b"".join(pieces).splitlines(keepends=True)
    assert records.keys_of(lines).to_pylist()[:2] == [b"a/0.png", b"a/1.png"]


@pytest.mark.parametrize(
    "text",
    [b"a\0None\0-\nb\0None\0-", b"new\nline.png\0None\0-\n", b"a\0None\x001\x002\x003\n"],
    ids=["no final newline", "a name with a newline", "a line of three stats"],
)
def test_text_that_is_not_the_walks_is_refused(text):
    assert lines_of([b"ok\0None\0-\n", text]) is None


def table(n: int, first: int = 0) -> pa.Table:
    keys = [f"k{i:04d}" for i in range(first, first + n)]
    packed = [i % 3 != 0 for i in range(n)]
    return pa.table(
        [
            pa.array([f"{k}\0None\0-\n".encode() for k in keys], pa.large_binary()),
            pa.array(
                [bytes([i % 256]) * 4 if p else None for i, p in enumerate(packed)],
                pa.large_binary(),
            ),
            pa.array([i if p else None for i, p in enumerate(packed)], pa.int64()),
            pa.array([None if p else '["corrupt", "x"]' for p in packed], pa.large_string()),
            pa.array([None] * n, pa.large_string()),
        ],
        schema=SCHEMA,
    )


def test_records_written_in_pieces_are_read_back_in_batches_of_the_set_size(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BATCH", 4)
    path = tmp_path / "records.arrow"
    writer = RecordsWriter(path, "run-1")
    for first, n in ((0, 3), (3, 6), (9, 2)):
        writer.write(table(n, first))
    assert not path.exists()  # not before commit
    writer.commit()

    read = RecordsFile.open(path, "run-1")
    assert len(read) == 11 and read.starts == [0, 4, 8, 11]
    assert read.firsts == [b"k0000", b"k0004", b"k0008"]
    batches = [read.batch(b) for b in range(3)]
    assert pa.Table.from_batches(batches).equals(
        pa.concat_tables([table(3), table(6, 3), table(2, 9)])
    )
    assert [p.name for p in tmp_path.iterdir()] == ["records.arrow"]


def test_records_of_another_run_damaged_or_missing_are_not_read(tmp_path):
    path = tmp_path / "records.arrow"
    writer = RecordsWriter(path, "run-1")
    writer.write(table(10))
    writer.commit()
    assert RecordsFile.open(path, "run-2") is None
    path.write_bytes(path.read_bytes()[:-100])
    assert RecordsFile.open(path, "run-1") is None
    assert RecordsFile.open(tmp_path / "none.arrow", "run-1") is None


def test_abandoned_records_leave_no_file(tmp_path):
    writer = RecordsWriter(tmp_path / "records.arrow", "run-1")
    writer.write(table(5))
    writer.close()
    assert list(tmp_path.iterdir()) == []


def full_run(tmp_path, pieces, sizes, skips, notes=()):
    """The records `write_full_run` writes, or None."""
    out = RecordsWriter(tmp_path / "records.arrow", "run")
    if not write_full_run(out, pieces, b"\1\1\2\2", np.array(sizes), skips, list(notes)):
        out.close()
        return None
    out.commit()
    read = RecordsFile.open(tmp_path / "records.arrow", "run")
    return pa.Table.from_batches([read.batch(b) for b in range(len(read.starts) - 1)])


WALK = [b"a\0None\0-\nb\0None\0-\n", b"c\0None\0-\n"]


def test_a_full_runs_records_put_each_file_where_the_walk_has_it(tmp_path):
    made = full_run(tmp_path, WALK, [10, 20], [("b", "corrupt", "bad")], [("c", {"n": 1})])
    assert made.column("line").to_pylist() == [b"a\0None\0-\n", b"b\0None\0-\n", b"c\0None\0-\n"]
    assert made.column("digest").to_pylist() == [b"\1\1", None, b"\2\2"]
    assert made.column("size").to_pylist() == [10, None, 20]
    assert made.column("skip").to_pylist() == [None, '["corrupt", "bad"]', None]
    assert made.column("note").to_pylist() == [None, None, '{"n": 1}']


@pytest.mark.parametrize(
    "skips, sizes",
    [
        ([], [10, 20]),
        ([("x", "corrupt", "bad")], [10, 20]),
        ([("b", "corrupt", "bad")], [10]),
        (None, [10, 20]),
    ],
    ids=[
        "a file neither packed nor skipped",
        "a skip the walk did not see",
        "a size short",
        "too many skips kept",
    ],
)
def test_a_full_run_that_does_not_add_up_to_its_walk_keeps_no_records(tmp_path, skips, sizes):
    assert full_run(tmp_path, WALK, sizes, skips) is None
    assert list(tmp_path.iterdir()) == []
