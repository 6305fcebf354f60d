"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import posixpath
import sqlite3
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from imgpack.discover import Found, display_path, walk_sorted
from imgpack.errors import InputError, PolicyError, name_offenders, output_failed
from imgpack.examine import ExamineTask, examine_files
from imgpack.labels import read_label_rows
from imgpack.manifest import dumps, write_manifest
from imgpack.params import IngestParams, load_params
from imgpack.progress import progress
from imgpack.remote import is_url
from imgpack.splits import FOLDERS, folder_split
from imgpack.stages.common import run_stage, write_json_stream
from imgpack.state import IngestCache, file_stat
from imgpack.workers import batched, ordered_map, resolve_workers, worker_pool
from imgpack.writer import scratch_dir

__all__ = ["ingest", "IngestReport"]


LISTED = 1000  # entries of each list kept in memory (the report file has them all)


@dataclass
class IngestReport:
    """Where every input went: discovered = packed + skipped, plus label rows with no image.

    Lists hold their first LISTED entries; `write(path)` streams every entry from the spill
    files, so a folder of a million junk files or duplicates costs disk, not memory.
    """

    discovered: int = 0
    packed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    label_rows: int = 0
    rows_without_image: list[dict[str, Any]] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # packed, with something to know
    counts: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    read: int = 0  # files read this run; the others were known from the ingest cache
    spill: Path | None = None

    def _add(self, name: str, item: Any) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        held = getattr(self, name)
        if len(held) < LISTED:
            held.append(item)
        if self.spill is not None:
            with open(self.spill / f"{name}.jsonl", "a", encoding="utf-8") as handle:
                handle.write(dumps(item) + "\n")

    def skip(self, found: Found | str, kind: str, detail: str) -> None:
        path = found.key if isinstance(found, Found) else found
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        self._add("skipped", {"path": display_path(path), "reason": kind, "detail": detail})

    def note(self, item: dict[str, str]) -> None:
        self._add("notes", item)

    def without_image(self, item: dict[str, Any]) -> None:
        self._add("rows_without_image", item)

    def duplicate_group(self, group: list[str]) -> None:
        self.counts["duplicate_files"] = self.counts.get("duplicate_files", 0) + len(group)
        self._add("duplicate_groups", group)

    def total(self, name: str) -> int:
        return self.counts.get(name, 0)

    def as_dict(self) -> dict[str, Any]:
        """The numbers, and the lists as far as they are held in memory (see `write`)."""
        return {
            "discovered": self.discovered,
            "packed": self.packed,
            "read": self.read,
            "skipped": self.total("skipped"),
            "skipped_by_reason": dict(sorted(self.by_reason.items())),
            "label_rows": self.label_rows,
            "label_rows_without_image": self.total("rows_without_image"),
            "duplicates": {
                "groups": self.total("duplicate_groups"),
                "files": self.total("duplicate_files"),
            },
            "skipped_files": self.skipped,
            "label_rows_without_image_list": self.rows_without_image,
            "duplicate_groups": self.duplicate_groups,
            "notes": self.total("notes"),
            "notes_list": self.notes,
        }

    def write(self, path: Path) -> None:
        """The report as JSON, every list entry streamed from its spill file."""
        lists = {
            "skipped_files": "skipped",
            "label_rows_without_image_list": "rows_without_image",
            "duplicate_groups": "duplicate_groups",
            "notes_list": "notes",
        }
        summary = self.as_dict()

        def entries(name: str):
            spilled = self.spill / f"{name}.jsonl" if self.spill is not None else None
            if spilled is None or not spilled.exists():
                yield from (dumps(item) for item in getattr(self, name))
                return
            with open(spilled, encoding="utf-8") as handle:
                for line in handle:
                    yield line.rstrip("\n")

        fields = {
            key: (entries(lists[key]) if key in lists else value) for key, value in summary.items()
        }
        write_json_stream(Path(path), fields)


def ingest(
    folder: str | Path,
    manifest_out: str | Path,
    report_out: str | Path | None = None,
    labels: str | Path | None = None,
    params: IngestParams | None = None,
    split_folders: bool = False,
    spool: Path | None = None,
    cache: bool = True,
) -> IngestReport:
    """Build the manifest of `folder`; labels from `labels` or, without a table, from folder names.

    `split_folders` (pack.splits: folders): a file whose top folder names no split is accounted
    for as `unknown_split`. Files whose stat is unchanged since an earlier run are not read again
    (see `imgpack.state`); `spool`: a folder where the bytes read are kept for the pack.
    """
    params = params or IngestParams()
    refused: dict[str, list[str]] = {}

    def account(found: Found | str, kind: str, detail: str) -> None:
        report.skip(found, kind, detail)
        if params.on_error[kind] == "fail":
            offenders = refused.setdefault(kind, [])
            if len(offenders) <= LISTED:
                offenders.append(display_path(getattr(found, "key", found)))

    with (
        scratch_dir(Path(manifest_out)) as scratch,
        _scratch_errors(scratch),
        contextlib.closing(sqlite3.connect(os.path.join(scratch, "ingest.sqlite"))) as db,
        worker_pool(
            resolve_workers(params.workers, "ingest.workers"), params.scheduler or None
        ) as pool,
    ):
        report = IngestReport(spill=scratch)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE hashes (hash TEXT, key TEXT, ordinal INTEGER)")
        groups = _label_groups(db, labels, params, report) if labels else None
        exclude = {str(labels)} if labels else set()
        lookup = partial(_group_of, db) if labels else None
        candidates = _labelled(
            walk_sorted(folder, exclude), groups, lookup, params, report, account, str(folder)
        )
        if split_folders:
            candidates = _in_split_folders(candidates, account)
        remembered = IngestCache(folder, params.hash, params.max_pixels) if cache else None
        spool_index = open(spool / "index.bin", "wb") if spool is not None else None  # noqa: SIM115
        staged = os.path.join(scratch, "rows.jsonl")
        total_bytes = 0
        seen_keys = os.path.join(scratch, "seen.txt")
        try:
            with (
                open(staged, "w", encoding="utf-8", newline="\n") as rows,
                open(seen_keys, "w", encoding="utf-8", errors="surrogateescape") as seen,
            ):
                tasks = _tasks(progress(candidates, "ingest"), params, remembered, spool, seen)
                for (batch, known, stats), fresh in ordered_map(examine_files, tasks, pool):
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
                    hashes = []
                    for (found, label, extra), outcome in zip(batch, outcomes, strict=True):
                        if outcome[0] == "fail":
                            account(found, outcome[1], outcome[2])
                            continue
                        _, size, hash_hex, fmt, width, height, trailing = outcome[:7]
                        if trailing:
                            report.note(
                                {
                                    "path": display_path(found.key),
                                    "note": f"{trailing} bytes after the end of the {fmt} image "
                                    "(kept as they are, e.g. a motion photo)",
                                }
                            )
                        row = {
                            "key": found.key,
                            "size": size,
                            "hash": hash_hex,
                            "format": fmt,
                            "width": width,
                            "height": height,
                            "label": label,
                            "extra": extra,
                            "duplicate_of": None,
                        }
                        rows.write(dumps(row) + "\n")
                        if spool_index is not None:
                            spool_index.write(_spool_entry(outcome, spool))
                        hashes.append((hash_hex, found.key, report.packed))
                        report.packed += 1
                        total_bytes += size
                    db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", hashes)
            if remembered is not None:
                with open(seen_keys, encoding="utf-8", errors="surrogateescape") as keys:
                    remembered.close(line.rstrip("\n") for line in keys)
        finally:
            if remembered is not None:
                remembered.close()
            if spool_index is not None:
                spool_index.close()
        for row in report.rows_without_image:
            if params.on_error["missing_image"] == "fail":
                refused.setdefault("missing_image", []).append(row["path"])
        if refused:
            raise PolicyError(_refusal(refused, report))
        if not report.packed:
            raise InputError(
                f"{folder}: no images to pack ({report.discovered} files found, all skipped: "
                f"{_reasons(report)}); check ingest.folder and ingest.extensions"
            )
        db.execute("CREATE INDEX hashes_hash ON hashes (hash, key)")
        duplicate_of = _duplicates(db, report)
        header = {"hash_algorithm": params.hash, "count": report.packed, "total_bytes": total_bytes}
        write_manifest(Path(manifest_out), header, _final_rows(staged, duplicate_of))
        if report_out is not None:
            report.write(Path(report_out))
        report.spill = None
    return report


def _tasks(candidates, params: IngestParams, remembered, spool: Path | None, seen):
    """Batches of candidates with their stat and what the cache knows; the rest is read by workers."""
    for number, batch in enumerate(batched(candidates, 256)):
        keys = [found.key for found, _, _ in batch]
        stats = [found.stat or file_stat(found.path) for found, _, _ in batch]
        for key in keys:
            seen.write(key + "\n")
        known = [None] * len(batch) if remembered is None else remembered.lookup(keys, stats)
        paths = tuple(f.path for (f, _, _), k in zip(batch, known, strict=True) if k is None)
        spooled = str(spool / spool_file(number)) if spool else None
        task = ExamineTask(paths, params.hash, params.max_pixels, spooled, number)
        yield (batch, known, stats), task


def _merge(known: list, fresh: list) -> list:
    """The batch's outcomes in order: from the cache where known, else as just read."""
    read = iter(fresh)
    return [k if k is not None else next(read) for k in known]


_SPOOL_ENTRY = struct.Struct("<qq")
_NOT_SPOOLED = _SPOOL_ENTRY.pack(-1, -1)


def spool_file(number: int) -> str:
    return f"spool-{number}.bin"


def _spool_entry(outcome: list, spool: Path) -> bytes:
    """Where the manifest row's bytes are in the spool: (task number, offset), or none."""
    if len(outcome) > 7:
        return _SPOOL_ENTRY.pack(outcome[7], outcome[8])
    return _NOT_SPOOLED


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


def _label_groups(db: sqlite3.Connection, table, params: IngestParams, report: IngestReport):
    """Load the table into SQLite (bounded memory) and return its rows grouped by path, in key order."""
    db.execute("CREATE TABLE labels (path TEXT, label TEXT, extra TEXT, row INTEGER)")
    rows = read_label_rows(
        table, params.path_column, params.label_column, params.chunksize, list(params.columns)
    )
    while True:
        chunk = [(p, lab, dumps(extra), n) for p, lab, extra, n in _take(rows, params.chunksize)]
        if not chunk:
            break
        db.executemany("INSERT INTO labels VALUES (?, ?, ?, ?)", chunk)
        report.label_rows += len(chunk)
    db.execute("CREATE INDEX labels_path ON labels (path, row)")
    return _group_cursor(db)


_GROUPS = (
    "SELECT g.path, g.labels, l.extra, g.first FROM "
    "(SELECT path, json_group_array(DISTINCT label) AS labels, MIN(row) AS first "
    " FROM labels {where} GROUP BY path) AS g JOIN labels AS l ON l.path = g.path AND l.row = g.first "
    "ORDER BY g.path"
)


def _group_cursor(db: sqlite3.Connection) -> Iterator[tuple[str, list[str], dict, int]]:
    cursor = db.cursor()
    cursor.execute(_GROUPS.format(where=""))
    for path, labels_json, extra_json, first in cursor:
        yield path, sorted(json.loads(labels_json)), json.loads(extra_json), first


def _group_of(db: sqlite3.Connection, path: str):
    """The label group of one table path, for the rare file whose name is not NFC."""
    row = db.execute(_GROUPS.format(where="WHERE path = ?"), (path,)).fetchone()
    if row is None:
        return None
    return row[0], sorted(json.loads(row[1])), json.loads(row[2]), row[3]


def _take(rows: Iterator, n: int) -> list:
    out = []
    for row in rows:
        out.append(row)
        if len(out) >= n:
            break
    return out


def _labelled(
    found_files, groups, lookup, params: IngestParams, report: IngestReport, account, root: str
):
    """Merge the sorted file walk with the sorted label groups; yield (found, label, extra) to examine.

    Table paths are NFC; a file name in another normalization (NFD from macOS or a zip) is
    matched by a lookup under NFC and keeps its own spelling as its key.
    """
    pending = next(groups, None) if groups is not None else None
    taken: set[str] = set()  # table paths matched by lookup, out of the merge's order
    for found in found_files:
        report.discovered += 1
        match = None
        nfc = found.key if found.key.isascii() else unicodedata.normalize("NFC", found.key)
        if nfc != found.key and not found.problem:
            if not is_url(root) and os.path.lexists(os.path.join(root, nfc)):
                account(found, "bad_path", f"same name as {nfc!r} in another Unicode normalization")
                continue
            if lookup is not None:
                match = lookup(nfc)
                if match is not None:
                    taken.add(nfc)
        elif groups is not None:
            while pending is not None and pending[0] < found.key:
                if pending[0] not in taken:
                    _row_without_image(pending, report)
                pending = next(groups, None)
            if pending is not None and pending[0] == found.key:
                match, pending = pending, next(groups, None)
        if found.problem:
            account(found, found.problem, found.detail)
            continue
        if posixpath.splitext(found.key)[1].lower() not in params.extensions:
            account(found, "not_image", "extension not in ingest.extensions")
            continue
        if groups is None:
            parent = posixpath.dirname(found.key)
            if not parent:
                account(found, "unlabeled", "no parent folder to take a label from")
                continue
            yield found, posixpath.basename(parent), {}
        elif match is None:
            account(found, "unlabeled", "no row in the labels table")
        elif len(match[1]) > 1:
            account(found, "conflicting_labels", f"label rows disagree: {', '.join(match[1])}")
        elif not match[1][0]:
            account(found, "unlabeled", f"empty label in row {match[3]}")
        else:
            yield found, match[1][0], match[2]
    if groups is not None:
        while pending is not None:
            if pending[0] not in taken:
                _row_without_image(pending, report)
            pending = next(groups, None)


def _in_split_folders(candidates, account):
    for found, label, extra in candidates:
        if folder_split(found.key) is None:
            top = found.key.partition("/")[0] if "/" in found.key else "(no folder)"
            account(
                found,
                "unknown_split",
                f"top folder {top!r} is not train, val/valid/validation or test",
            )
            continue
        yield found, label, extra


def _row_without_image(group, report: IngestReport) -> None:
    report.without_image(
        {
            "path": group[0],
            "reason": "missing_image",
            "detail": f"label row {group[3]} has no image",
        }
    )


def _duplicates(db: sqlite3.Connection, report: IngestReport) -> Iterator[tuple[int, str]]:
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
    """Staged rows with duplicate_of filled in; untouched rows pass through as text."""
    pending = next(duplicate_of, None)
    with open(staged, encoding="utf-8") as rows:
        for ordinal, line in enumerate(rows):
            if pending is not None and pending[0] == ordinal:
                row = json.loads(line)
                row["duplicate_of"] = pending[1]
                pending = next(duplicate_of, None)
                yield row
            else:
                yield line


def _reasons(report: IngestReport) -> str:
    counts = report.as_dict()["skipped_by_reason"]
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "none"


def _refusal(refused: dict[str, list[str]], report: IngestReport) -> str:
    parts = [
        f"{kind} {name_offenders(paths, total=report.by_reason.get(kind, len(paths)))}"
        for kind, paths in sorted(refused.items())
    ]
    return (
        "ingest refused the inputs (policy 'fail'): "
        + "; ".join(parts)
        + ". Fix them, or set ingest.on_error.<kind> to 'skip' in params.yaml"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.ingest --params params.yaml",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/interim/manifest.jsonl")
    parser.add_argument("--report", default="reports/ingest.json")
    args = parser.parse_args(argv)

    def run() -> None:
        params = load_params(args.params, "ingest")
        split_folders = load_params(args.params, "pack").splits == FOLDERS
        ingest(
            params.folder, args.manifest, args.report, params.labels or None, params, split_folders
        )

    return run_stage(run)


if __name__ == "__main__":
    raise SystemExit(main())
