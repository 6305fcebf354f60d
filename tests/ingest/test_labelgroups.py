"""A labels table grouped by path: a sorted table streamed, any other through SQLite, the same groups either way."""

import csv
import json
import random
import sqlite3

import pytest

from imgpack.errors import InputError
from imgpack.ingest.labelgroups import LabelGroups
from imgpack.ingest.report import IngestReport
from imgpack.params import IngestParams


def write_table(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "note"])
        writer.writerows(rows)
    return path


def expected_groups(rows):
    """Groups as the format defines them, from the rows: distinct labels sorted, the extra columns
    and row number of the path's first row."""
    groups = {}
    for number, (path, label, note) in enumerate(rows, 1):
        group = groups.setdefault(path, [set(), {"note": note}, number])  # CSV: text, even ""
        group[0].add(label)
    return [(p, sorted(g[0]), g[1], g[2]) for p, g in sorted(groups.items())]


def grouped(tmp_path, table, chunksize):
    (tmp_path / "scratch").mkdir(exist_ok=True)
    report = IngestReport()
    groups = LabelGroups(
        sqlite3.connect(":memory:"),
        table,
        IngestParams(chunksize=chunksize),
        report,
        tmp_path / "scratch",
    )
    return groups, list(groups), report


def some_rows(count, seed=0):
    rng = random.Random(seed)
    rows = [
        (f"{n % 7}/{n:05d}.png", str(n % 7), rng.choice(["", "blurry", "x,y"]))
        for n in range(count)
    ]
    rows[10:10] = [(rows[10][0], "other", "again")]  # a path twice, with two labels
    rows[20:20] = [(rows[20][0], rows[20][1], "")]  # a path twice, with one label
    return rows


@pytest.mark.parametrize("chunksize", [3, 50, 10_000])
def test_a_sorted_table_is_streamed_and_grouped_as_the_format_says(tmp_path, chunksize):
    rows = sorted(some_rows(200), key=lambda r: r[0])
    groups, got, report = grouped(tmp_path, write_table(tmp_path / "t.csv", rows), chunksize)
    assert not groups.in_sqlite
    assert got == expected_groups(rows)
    assert report.label_rows == len(rows)


@pytest.mark.parametrize("where", [0, 1, 150, 200])  # the first chunk, a spilled one, the last
def test_a_table_out_of_order_anywhere_goes_through_sqlite_with_every_row(tmp_path, where):
    rows = sorted(some_rows(200), key=lambda r: r[0])
    rows.insert(where, ("0/zzz-late.png", "0", "moved"))
    groups, got, report = grouped(tmp_path, write_table(tmp_path / "t.csv", rows), 16)
    assert groups.in_sqlite
    assert got == expected_groups(rows)
    assert report.label_rows == len(rows)


def test_a_shuffled_table_and_its_sorted_copy_give_the_same_labels_and_extras(tmp_path):
    rows = some_rows(300, seed=1)
    shuffled = rows[:]
    random.Random(2).shuffle(shuffled)
    _, from_sqlite, _ = grouped(tmp_path, write_table(tmp_path / "s.csv", shuffled), 64)
    _, streamed, _ = grouped(tmp_path, write_table(tmp_path / "t.csv", rows), 64)
    assert [g[:2] for g in from_sqlite] == [g[:2] for g in streamed]
    assert from_sqlite == expected_groups(shuffled)


def test_one_path_is_found_in_a_streamed_table_too(tmp_path):
    rows = sorted(some_rows(100), key=lambda r: r[0])
    groups, got, _ = grouped(tmp_path, write_table(tmp_path / "t.csv", rows), 8)
    assert not groups.in_sqlite
    for group in (got[0], got[37], got[-1]):
        assert groups.lookup(group[0]) == group
    assert groups.lookup("no/such.png") is None


def test_a_bad_row_late_in_a_sorted_table_is_refused_before_any_group_is_given(tmp_path):
    rows = sorted(some_rows(100), key=lambda r: r[0])
    table = write_table(tmp_path / "t.csv", rows)
    with open(table, "a") as handle:
        handle.write("9/late.png,9,note,one too many\n")
    with pytest.raises(InputError, match=rf"t.csv:{len(rows) + 2}: 4 fields, expected 3"):
        grouped(tmp_path, table, 8)


def test_extras_come_back_as_the_manifest_writes_them(tmp_path):
    table = tmp_path / "t.jsonl"
    rows = [
        {"path": "a.png", "label": "x", "z": 1, "a": {"b": [1, 2.5]}},
        {"path": "b.png", "label": "y"},
    ]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, got, _ = grouped(tmp_path, table, 1)
    assert got == [("a.png", ["x"], {"a": {"b": [1, 2.5]}, "z": 1}, 1), ("b.png", ["y"], {}, 2)]
