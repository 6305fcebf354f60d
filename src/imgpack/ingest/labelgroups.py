"""A labels table's rows grouped by path, in key order, in bounded memory: streamed if sorted, else via SQLite."""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgpack

from imgpack.ingest.labels import read_label_rows
from imgpack.ingest.report import IngestReport
from imgpack.params import IngestParams
from imgpack.util.jsonfiles import dumps

__all__ = ["LabelGroups"]

Group = tuple[str, list[str], dict, int]  # path, its distinct labels (sorted), extra, first row

_GROUPS = (
    "SELECT g.path, g.labels, l.extra, g.first FROM "
    "(SELECT path, json_group_array(DISTINCT label) AS labels, MIN(row) AS first "
    " FROM labels {where} GROUP BY path) AS g JOIN labels AS l ON l.path = g.path AND l.row = g.first "
    "ORDER BY g.path"
)
_EMPTY: dict = {}  # shared, never modified: most tables have no extra columns


class LabelGroups:
    """The groups of a labels table, read whole on construction (its errors come first).

    Most tables list their paths in order (a sorted listing, an earlier export): their chunks go
    to a spill file as they are and come back in one pass. A table out of order goes into SQLite,
    which sorts and groups it. Either way a group's labels are its rows' distinct labels, sorted,
    and its extra columns and row number are those of its first row.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        table: str | Path,
        params: IngestParams,
        report: IngestReport,
        scratch: Path,
    ):
        self.db, self.table, self.params, self.report = db, table, params, report
        self.in_sqlite = False
        self.spill_path = Path(scratch) / "labels.msgpack"
        self.spilled = 0
        self.last: list = []  # the last chunk, kept in memory while the table is in order
        rows = self._rows()
        previous = ""
        with open(self.spill_path, "wb") as spill:
            while chunk := list(itertools.islice(rows, params.chunksize)):
                report.label_rows += len(chunk)
                if not self.in_sqlite and _ascending(chunk, previous):
                    previous = chunk[-1][0]
                    for row in self.last:
                        spill.write(msgpack.packb(row))
                    self.spilled += len(self.last)
                    self.last = chunk
                    continue
                if not self.in_sqlite:
                    spill.close()
                    self._to_sqlite(self._spilled_rows())
                    self._to_sqlite(self.last)
                    self.last, self.in_sqlite = [], True
                self._to_sqlite(chunk)
        if self.in_sqlite:
            self.spill_path.unlink()
            db.execute("CREATE INDEX labels_path ON labels (path, row)")

    def _rows(self) -> Iterator[list]:
        """[path, label, extra as canonical JSON ("" for none), row number] of each row."""
        params = self.params
        for path, label, extra, number in read_label_rows(
            self.table,
            params.path_column,
            params.label_column,
            params.chunksize,
            list(params.columns),
        ):
            yield [path, label, dumps(extra) if extra else "", number]

    def _to_sqlite(self, rows) -> None:
        if not self.in_sqlite:
            self.db.execute("CREATE TABLE labels (path TEXT, label TEXT, extra TEXT, row INTEGER)")
            self.in_sqlite = True
        self.db.executemany(
            "INSERT INTO labels VALUES (?, ?, ?, ?)",
            ((p, lab, e or "{}", n) for p, lab, e, n in rows),
        )

    def _spilled_rows(self) -> Iterator[list]:
        with open(self.spill_path, "rb") as spill:
            yield from msgpack.Unpacker(spill, use_list=True)

    def __iter__(self) -> Iterator[Group]:
        if self.in_sqlite:
            return self._sqlite_groups()
        return self._streamed_groups()

    def _streamed_groups(self) -> Iterator[Group]:
        """Rows in order, runs of one path merged into one group."""
        rows = iter(self._chain())
        group = next(rows, None)
        labels: set[str] = set()
        for row in rows:
            if row[0] == group[0]:
                labels.add(row[1])
                continue
            yield _group(group, labels)
            group, labels = row, set()
        if group is not None:
            yield _group(group, labels)

    def _chain(self) -> Iterator[list]:
        yield from self._spilled_rows()
        yield from self.last

    def _sqlite_groups(self) -> Iterator[Group]:
        cursor = self.db.cursor()
        cursor.execute(_GROUPS.format(where=""))
        for path, labels_json, extra_json, first in cursor:
            extra = _EMPTY if extra_json == "{}" else json.loads(extra_json)
            yield path, _labels(labels_json), extra, first

    def lookup(self, path: str) -> Group | None:
        """The group of one table path, for the rare file whose name is not NFC."""
        if not self.in_sqlite:  # the table was streamed: put it where a path can be found
            self._to_sqlite(self._chain())
            self.db.execute("CREATE INDEX labels_path ON labels (path, row)")
        row = self.db.execute(_GROUPS.format(where="WHERE path = ?"), (path,)).fetchone()
        if row is None:
            return None
        return row[0], sorted(json.loads(row[1])), json.loads(row[2]), row[3]


def _ascending(chunk: list, previous: str) -> bool:
    """Whether the chunk's paths never go down, from `previous` (the last chunk's last) on."""
    last = previous
    for row in chunk:
        if row[0] < last:
            return False
        last = row[0]
    return True


def _group(first: list, more: set[str]) -> Group:
    extra = json.loads(first[2]) if first[2] else _EMPTY
    if more:
        return first[0], sorted(more | {first[1]}), extra, first[3]
    return first[0], _one(first[1]), extra, first[3]


@functools.lru_cache(maxsize=4096)
def _one(label: str) -> list[str]:
    """A one-label group's labels (read-only: shared between groups)."""
    return [label]


@functools.lru_cache(maxsize=4096)
def _labels(labels_json: str) -> list[str]:
    """The group's distinct labels, sorted (read-only: shared between groups)."""
    return sorted(json.loads(labels_json))
