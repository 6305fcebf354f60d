"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from imgpack.errors import output_failed
from imgpack.ingest.cache import IngestCache, file_stat
from imgpack.ingest.examine import ExamineTask, examine_files
from imgpack.ingest.labelgroups import LabelGroups
from imgpack.ingest.labeljoin import in_split_folders, labelled
from imgpack.ingest.manifest import row_text, write_manifest
from imgpack.ingest.report import Accounting, IngestReport, trailing_note
from imgpack.ingest.snapshot import InputSnapshot
from imgpack.ingest.spool import INDEX_FILE, entry_of, spool_file
from imgpack.ingest.walk import walk_sorted
from imgpack.parallel.workers import batched, ordered_map, worker_pool
from imgpack.params import IngestParams
from imgpack.util.cores import resolve_workers
from imgpack.util.outputs import scratch_dir
from imgpack.util.progress import progress
from imgpack.util.urls import is_url


def ingest(
    folder: str | Path,
    manifest_out: str | Path,
    report_out: str | Path | None = None,
    labels: str | Path | None = None,
    params: IngestParams | None = None,
    split_folders: bool = False,
    spool: Path | None = None,
    cache: bool = True,
    reuse_unchanged: bool = False,
) -> IngestReport:
    """Build the manifest of `folder`; labels from `labels` or, without a table, from folder names.

    `split_folders` (pack.splits: folders): a file whose top folder names no split is accounted
    for as `unknown_split`. Files whose stat is unchanged since an earlier run are not read again
    (see `imgpack.ingest.cache`); `spool`: a folder where the bytes read are kept for the pack.
    `reuse_unchanged`: when no file's stat, nor the labels table, nor the params changed since
    the run that wrote `manifest_out` and `report_out` (and they are as it left them), they are
    left as they are and nothing is read (see `imgpack.ingest.snapshot`).
    """
    params = params or IngestParams()
    snapshot = None
    exclude = {str(labels)} if labels else set()
    found_files = walk_sorted(folder, exclude)
    if reuse_unchanged and cache and not is_url(folder):
        outputs = Path(manifest_out), report_out and Path(report_out)
        snapshot = InputSnapshot(*outputs, folder, labels, params, split_folders)
        totals = snapshot.unchanged()
        if totals is not None:
            return IngestReport.from_totals(totals)
        found_files = snapshot.files()  # the walk, its stats also taken for the next run
    with (
        # First, before any handle or thread: workers forked from this process need no imports.
        worker_pool(
            resolve_workers(params.workers, "ingest.workers"), params.scheduler or None, fork=True
        ) as pool,
        scratch_dir(Path(manifest_out)) as scratch,
        _scratch_errors(scratch),
        contextlib.closing(sqlite3.connect(os.path.join(scratch, "ingest.sqlite"))) as db,
    ):
        report = IngestReport(spill=scratch)
        account = Accounting(report, params.on_error)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE hashes (hash TEXT, key TEXT, ordinal INTEGER)")
        table = LabelGroups(db, labels, params, report, scratch) if labels else None
        groups = iter(table) if table else None
        lookup = table.lookup if table else None
        candidates = labelled(found_files, groups, lookup, params, report, account, str(folder))
        if split_folders:
            candidates = in_split_folders(candidates, account)
        remembered = IngestCache(folder, params.hash, params.max_pixels) if cache else None
        spool_index = open(spool / INDEX_FILE, "wb") if spool is not None else None  # noqa: SIM115
        staged = os.path.join(scratch, "rows.jsonl")
        total_bytes = 0
        seen_keys = os.path.join(scratch, "seen.txt")
        try:
            with (
                open(staged, "w", encoding="utf-8", newline="\n") as rows,
                open(seen_keys, "w", encoding="utf-8", errors="surrogateescape") as seen,
            ):
                tasks = _tasks(progress(candidates, "ingest"), params, remembered, spool, seen)
                examined = ordered_map(examine_files, tasks, pool, local=_nothing_to_read)
                for (batch, known, stats), fresh in examined:
                    outcomes = _merge(known, fresh)
                    if remembered is not None:
                        remembered.remember(
                            (found.key, stat, outcome[:7])
                            for (found, _, _), stat, outcome, cached in zip(
                                batch, stats, outcomes, known, strict=True
                            )
                            if cached is None
                        )
                    report.read += len(fresh)
                    hashes, texts, packed = [], [], report.packed
                    for (found, label, extra), outcome in zip(batch, outcomes, strict=True):
                        if outcome[0] == "fail":
                            account(found, outcome[1], outcome[2])
                            continue
                        _, size, hash_hex, fmt, width, height, trailing = outcome[:7]
                        if trailing:
                            report.note(trailing_note(found.key, trailing, fmt))
                        texts.append(
                            row_text(found.key, size, hash_hex, fmt, width, height, label, extra)
                        )
                        if spool_index is not None:
                            spool_index.write(
                                entry_of(tuple(outcome[7:9]) if len(outcome) > 7 else None)
                            )
                        hashes.append((hash_hex, found.key, packed))
                        packed += 1
                        total_bytes += size
                    if texts:
                        rows.write("\n".join(texts) + "\n")
                    report.packed = packed
                    db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", hashes)
            if remembered is not None:
                with open(seen_keys, encoding="utf-8", errors="surrogateescape") as keys:
                    remembered.close(line.rstrip("\n") for line in keys)
        finally:
            if remembered is not None:
                remembered.close()
            if spool_index is not None:
                spool_index.close()
        account.check(folder)
        db.execute("CREATE INDEX hashes_hash ON hashes (hash, key)")
        duplicate_of = report_duplicates(db, report)
        header = {"hash_algorithm": params.hash, "count": report.packed, "total_bytes": total_bytes}
        write_manifest(Path(manifest_out), header, _final_rows(staged, duplicate_of))
        if report_out is not None:
            report.write(Path(report_out))
        report.spill = None
    if snapshot is not None:
        snapshot.save(report.totals())
    return report


def _tasks(candidates, params: IngestParams, remembered, spool: Path | None, seen):
    """Batches of candidates with their stat and what the cache knows; the rest is read by workers."""
    for number, batch in enumerate(batched(candidates, 256)):
        keys = [found.key for found, _, _ in batch]
        stats = [found.stat or file_stat(found.path) for found, _, _ in batch]
        seen.write("\n".join(keys) + "\n")
        known = [None] * len(batch) if remembered is None else remembered.lookup(keys, stats)
        paths = tuple(f.path for (f, _, _), k in zip(batch, known, strict=True) if k is None)
        spooled = str(spool / spool_file(number)) if spool else None
        task = ExamineTask(paths, params.hash, params.max_pixels, spooled, number)
        yield (batch, known, stats), task


def _nothing_to_read(task: ExamineTask) -> bool:
    return not task.paths


def _merge(known: list, fresh: list) -> list:
    """The batch's outcomes in order: from the cache where known, else as just read."""
    read = iter(fresh)
    return [k if k is not None else next(read) for k in known]


@contextlib.contextmanager
def _scratch_errors(scratch: Path):
    """Failed writes of the working files (disk full) name the scratch folder, not a bare errno."""
    try:
        yield
    except sqlite3.Error as exc:
        raise output_failed(scratch, exc) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise output_failed(scratch, exc) from None
        raise


def report_duplicates(db: sqlite3.Connection, report: IngestReport) -> Iterator[tuple[int, str]]:
    """Report groups of keys with identical bytes; returns (ordinal, first key) of each later
    copy, in ordinal order, from disk."""
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
            report.duplicate_group(group)
            group = []
        group.append(key)
    if group:
        report.duplicate_group(group)
    return db.execute(
        "SELECT h.ordinal, f.first FROM hashes AS h JOIN firsts AS f ON f.hash = h.hash "
        "WHERE h.key != f.first ORDER BY h.ordinal"
    )


def _final_rows(staged: str, duplicate_of: Iterator[tuple[int, str]]):
    """Staged rows with duplicate_of filled in; the rows between pass through as blocks of text."""
    at = 0  # the ordinal of the next staged row
    with open(staged, encoding="utf-8") as rows:
        for ordinal, first in duplicate_of:
            yield "".join(itertools.islice(rows, ordinal - at))
            row = json.loads(next(rows))
            row["duplicate_of"] = first
            yield row
            at = ordinal + 1
        while block := "".join(itertools.islice(rows, 4096)):
            yield block
