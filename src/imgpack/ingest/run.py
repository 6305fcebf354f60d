"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import array
import os
from pathlib import Path

from imgpack.ingest.cache import file_stat
from imgpack.ingest.examine import ExamineTask, examine_files
from imgpack.ingest.frontend import Candidate, FrontEnd, front_end
from imgpack.ingest.manifest import examined_row, patched_rows, write_manifest
from imgpack.ingest.outcome import Outcome
from imgpack.ingest.report import IngestReport, trailing_note
from imgpack.ingest.snapshot import InputSnapshot
from imgpack.ingest.spool import INDEX_FILE, entry_of, spool_file
from imgpack.parallel.workers import batched, ordered_map, worker_pool
from imgpack.params import IngestParams
from imgpack.util.cores import resolve_workers
from imgpack.util.outputs import scratch_dir, scratch_errors
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
    spool_budget: int | None = None,
) -> IngestReport:
    """Build the manifest of `folder`; labels from `labels` or, without a table, from folder names.

    `split_folders` (pack.splits: folders): a file whose top folder names no split is accounted
    for as `unknown_split`. Files whose stat is unchanged since an earlier run are not read again
    (see `imgpack.ingest.cache`); `spool`: a folder where the bytes read are kept for the pack.
    `spool_budget`: the spool keeps at most about this many bytes (the pack reads the others
    from the folder). `reuse_unchanged`: when no file's stat, nor the labels table, nor the params changed since
    the run that wrote `manifest_out` and `report_out` (and they are as it left them), they are
    left as they are and nothing is read (see `imgpack.ingest.snapshot`).
    """
    params = params or IngestParams()
    found, snapshot = None, None
    # Labels from folder names: what a run made of each file is kept as Arrow columns, and a
    # run that finds few files changed carries the others over from them (spooling nothing).
    columnar = labels is None
    if reuse_unchanged and cache and not is_url(folder):
        outputs = Path(manifest_out), report_out and Path(report_out)
        snapshot = InputSnapshot(*outputs, folder, labels, params, split_folders, columnar)
        totals = snapshot.unchanged()
        if totals is not None:
            return IngestReport.from_totals(totals)
        if snapshot.walk is not None:
            carried = _carry_over(snapshot, folder, manifest_out, report_out, params, split_folders)
            if carried is not None:
                return carried
        found = snapshot.files()  # the walk, its stats also taken for the next run
    workers = resolve_workers(params.workers, "ingest.workers")
    with (
        # First, before any handle or thread: workers forked from this process need no imports.
        worker_pool(workers, params.scheduler or None, fork=True) as pool,
        scratch_dir(Path(manifest_out)) as scratch,
        scratch_errors(scratch),
        front_end(
            folder, scratch, labels, params, found=found, split_folders=split_folders, cache=cache
        ) as front,
    ):
        keep = snapshot is not None and columnar
        if keep:
            front.account.trail = []
            snapshot.walk_spill = scratch / "walk.txt"
        staged = _read_all(front, pool, params, scratch, (spool, spool_budget), keep)
        front.account.check(folder)
        duplicate_of = front.report_duplicates()
        header = {
            "hash_algorithm": params.hash,
            "count": front.report.packed,
            "total_bytes": staged.total_bytes,
        }
        write_manifest(Path(manifest_out), header, patched_rows(staged.path, duplicate_of))
        if report_out is not None:
            front.report.write(Path(report_out))
        front.report.spill = None
        records = _records(snapshot, front, staged) if keep else None
    if snapshot is not None:
        snapshot.save(front.report.totals(), complete=not staged.transient, records=records)
    return front.report


def _records(snapshot, front, staged):
    """This full run's records (a `RecordsWriter`), for `save` to keep; None when they cannot
    be told."""
    from imgpack.ingest.records import write_full_run

    if snapshot.walk is None or snapshot.fingerprint is None:
        return None
    out = snapshot.records_writer()
    try:
        made = write_full_run(
            out, snapshot.walk, staged.digests, staged.sizes, front.account.trail, staged.notes
        )
    except BaseException:
        out.close()
        raise
    if not made:
        out.close()
        return None
    return out


def _carry_over(snapshot, folder, manifest_out, report_out, params, split_folders):
    """The run of `carry_over` (the last run's records carried, the changed files read), when
    the records are there and the change is one it carries; else None, with nothing written."""
    workers = resolve_workers(params.workers, "ingest.workers")
    # The pool first, before any Arrow thread: workers forked from this process.
    with worker_pool(workers, params.scheduler or None, fork=True) as pool:
        # Arrow and numpy are imported only now: a run with nothing changed never needs them.
        from imgpack.ingest.changes import carry_over

        prev = snapshot.previous_records()
        if prev is None:
            return None
        out = snapshot.records_writer()
        try:
            with scratch_dir(Path(manifest_out)) as scratch, scratch_errors(scratch):
                carried = carry_over(
                    prev,
                    snapshot.walk,
                    folder,
                    Path(manifest_out),
                    params,
                    split_folders,
                    scratch,
                    pool,
                    snapshot.started,
                    out,
                )
                if carried is None:
                    out.close()
                    return None
                if report_out is not None:
                    carried.report.write(Path(report_out))
                carried.report.spill = None
        except BaseException:
            out.close()
            raise
    snapshot.racy = carried.racy
    snapshot.save(carried.report.totals(), complete=not carried.transient, records=out)
    return carried.report


def _read_all(front: FrontEnd, pool, params: IngestParams, scratch: Path, spooling, keep: bool):
    """Every candidate read by the workers, or known from the ingest cache, and its manifest row
    staged; the cache then forgets files no longer in the folder. `keep`: each record's digest,
    size and note kept for the records of this run."""
    remembered = front.cache
    spool, budget = spooling
    seen_keys = os.path.join(scratch, "seen.txt")
    with (
        _StagedRows(front, scratch, spool, keep) as staged,
        open(seen_keys, "w", encoding="utf-8", errors="surrogateescape") as seen,
    ):
        candidates = progress(front.candidates, "ingest")
        tasks = _tasks(candidates, params, remembered, (spool, budget), seen)
        examined = ordered_map(examine_files, tasks, pool, local=_nothing_to_read)
        for (batch, known, stats), fresh in examined:
            outcomes = _merge(known, fresh)
            if remembered is not None:
                remembered.remember(
                    (found.key, stat, outcome)
                    for (found, _, _), stat, outcome, cached in zip(
                        batch, stats, outcomes, known, strict=True
                    )
                    if cached is None
                )
            front.report.read += len(fresh)
            staged.add(batch, outcomes)
    if remembered is not None:
        with open(seen_keys, encoding="utf-8", errors="surrogateescape") as keys:
            remembered.close(line.rstrip("\n") for line in keys)
    return staged


class _StagedRows:
    """Manifest rows in key order, staged in a file until duplicates are known; with a spool, its
    index entry of each row; the records' hashes, for the duplicate groups."""

    def __init__(self, front: FrontEnd, scratch: Path, spool: Path | None, keep: bool = False):
        self.front = front
        self.path = os.path.join(scratch, "rows.jsonl")
        self.total_bytes = 0
        self.transient = 0  # files the operating system would not give (see `Failed.transient`)
        self.keep = keep
        self.digests, self.sizes, self.notes = bytearray(), array.array("q"), []
        # both closed by __exit__
        self.rows = open(self.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self.spool_index = open(spool / INDEX_FILE, "wb") if spool is not None else None  # noqa: SIM115

    def __enter__(self) -> _StagedRows:
        return self

    def __exit__(self, *exc) -> None:
        self.rows.close()
        if self.spool_index is not None:
            self.spool_index.close()

    def add(self, batch: list[Candidate], outcomes: list[Outcome]) -> None:
        """A batch's rows; its files that are no image are accounted for."""
        report, account, spool_index = self.front.report, self.front.account, self.spool_index
        hashes, texts, packed, total_bytes = [], [], report.packed, 0
        for (found, label, extra), outcome in zip(batch, outcomes, strict=True):
            if not outcome.ok:
                account(found, outcome.kind, outcome.detail)
                self.transient += outcome.transient
                continue
            if outcome.trailing:
                note = trailing_note(found.key, outcome.trailing, outcome.format)
                report.note(note)
                if self.keep:
                    self.notes.append((found.key, note))
            if self.keep:
                self.digests += bytes.fromhex(outcome.digest_hex)
                self.sizes.append(outcome.size)
            texts.append(examined_row(found.key, outcome, label, extra))
            if spool_index is not None:
                spool_index.write(entry_of(outcome.spooled))
            hashes.append((outcome.digest_hex, found.key, packed))
            packed += 1
            total_bytes += outcome.size
        if texts:
            self.rows.write("\n".join(texts) + "\n")
        report.packed = packed
        self.total_bytes += total_bytes
        self.front.add_hashes(hashes)


def _tasks(candidates, params: IngestParams, remembered, spooling, seen):
    """Batches of candidates with their stat and what the cache knows; the rest is read by
    workers, and kept in the spool while its budget lasts."""
    spool, budget = spooling
    for number, batch in enumerate(batched(candidates, 256)):
        keys = [found.key for found, _, _ in batch]
        stats = [found.stat or file_stat(found.path) for found, _, _ in batch]
        seen.write("\n".join(keys) + "\n")
        known = [None] * len(batch) if remembered is None else remembered.lookup(keys, stats)
        paths = tuple(f.path for (f, _, _), k in zip(batch, known, strict=True) if k is None)
        spooled = str(spool / spool_file(number)) if spool else None
        if spool and budget is not None:  # a task is spooled while the budget is not spent
            if budget <= 0:
                spooled = None
            budget -= sum(st[0] for st, k in zip(stats, known, strict=True) if k is None and st)
        task = ExamineTask(paths, params.hash, params.max_pixels, spooled, number)
        yield (batch, known, stats), task


def _nothing_to_read(task: ExamineTask) -> bool:
    return not task.paths


def _merge(known: list, fresh: list) -> list:
    """The batch's outcomes in order: from the cache where known, else as just read."""
    read = iter(fresh)
    return [k if k is not None else next(read) for k in known]
