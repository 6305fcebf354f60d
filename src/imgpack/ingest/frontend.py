"""Ingest's front end, set up once for the ingest stage and a fresh build: the walk joined with the labels, to read."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpack.ingest.cache import IngestCache
from imgpack.ingest.found import Found
from imgpack.ingest.labelgroups import LabelGroups
from imgpack.ingest.labeljoin import in_split_folders, labelled
from imgpack.ingest.report import Accounting, IngestReport
from imgpack.ingest.walk import walk_sorted
from imgpack.params import IngestParams
from imgpack.util.progress import progress

__all__ = ["Candidate", "FrontEnd", "front_end", "walk_folder"]

Candidate = tuple[Found, str, dict[str, Any]]  # a file to read, its label, its extra columns


def walk_folder(folder: str | Path, labels: str | Path | None) -> Iterator[Found]:
    """Every file under `folder` in key order, but the labels table when it lies there."""
    return walk_sorted(folder, {str(labels)} if labels else set())


@dataclass(slots=True)
class FrontEnd:
    """The files to read, in key order, and where what is learned of them goes."""

    report: IngestReport
    account: Accounting  # skipped files into `report`; offenders of a `fail` policy, for later
    candidates: Iterator[Candidate]
    db: sqlite3.Connection  # scratch: a labels table out of order; `hashes` of the records
    cache: IngestCache | None  # what earlier runs learned of each file (None: read them all)

    def add_hashes(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """(hex digest, key, ordinal) of records, for `report_duplicates`."""
        self.db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", rows)

    def report_duplicates(self) -> Iterator[tuple[int, str]]:
        """Report groups of keys with identical bytes; returns (ordinal, first key) of each later
        copy, in ordinal order, from disk."""
        db = self.db
        db.execute("CREATE INDEX hashes_hash ON hashes (hash, key)")
        db.execute(
            "CREATE TABLE firsts AS SELECT hash, MIN(key) AS first FROM hashes "
            "GROUP BY hash HAVING COUNT(*) > 1"
        )
        group: list[str] = []
        for first, key in db.execute(
            "SELECT f.first, h.key FROM hashes AS h JOIN firsts AS f ON f.hash = h.hash "
            "ORDER BY f.first, h.key"
        ):
            if group and group[0] != first:
                self.report.duplicate_group(group)
                group = []
            group.append(key)
        if group:
            self.report.duplicate_group(group)
        return db.execute(
            "SELECT h.ordinal, f.first FROM hashes AS h JOIN firsts AS f ON f.hash = h.hash "
            "WHERE h.key != f.first ORDER BY h.ordinal"
        )


@contextlib.contextmanager
def front_end(
    folder: str | Path,
    scratch: Path,
    labels: str | Path | None,
    params: IngestParams,
    *,
    found: Iterable[Found] | None = None,
    split_folders: bool = False,
    cache: bool = True,
    walk_progress: str | None = None,
) -> Iterator[FrontEnd]:
    """The front end of `folder` in the scratch folder `scratch`; the ingest cache is closed on exit.

    `found`: the walk when the caller has it already (else `walk_folder`); `walk_progress`: a
    progress bar over the walk under this name. `split_folders` (pack.splits: folders): a file
    whose top folder names no split is accounted for as `unknown_split`. The labels table is read
    whole here, so its errors come before any file is read.
    """
    with contextlib.closing(sqlite3.connect(os.path.join(scratch, "ingest.sqlite"))) as db:
        report = IngestReport(spill=scratch)
        account = Accounting(report, params.on_error)
        # Scratch, thrown away with the folder: nothing to journal or sync.
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE hashes (hash TEXT, key TEXT, ordinal INTEGER)")
        table = LabelGroups(db, labels, params, report, scratch) if labels else None
        if found is None:
            found = walk_folder(folder, labels)
        if walk_progress is not None:
            found = progress(found, walk_progress)
        groups = iter(table) if table else None
        lookup = table.lookup if table else None
        candidates = labelled(found, groups, lookup, params, report, account, str(folder))
        if split_folders:
            candidates = in_split_folders(candidates, account)
        remembered = IngestCache(folder, params.hash, params.max_pixels) if cache else None
        try:
            yield FrontEnd(report, account, candidates, db, remembered)
        finally:
            if remembered is not None:
                remembered.close()
