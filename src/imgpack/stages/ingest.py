"""Stage ingest: find the images, join their labels, hash and probe them, write the manifest and report."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import posixpath
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from imgpack.discover import Found, display_path, walk_sorted
from imgpack.errors import InputError, PolicyError, name_offenders, output_failed
from imgpack.labels import read_label_rows
from imgpack.manifest import dumps, write_manifest
from imgpack.parallel import batched, ordered_batch_map
from imgpack.params import IngestParams, load_params
from imgpack.probe import ProbeFailure, digest, probe_image, read_file
from imgpack.progress import progress
from imgpack.splits import FOLDERS, folder_split
from imgpack.stages.common import run_stage, write_json
from imgpack.writer import scratch_dir

__all__ = ["ingest", "IngestReport"]


@dataclass
class IngestReport:
    """Where every input went: discovered = packed + skipped, plus label rows with no image."""

    discovered: int = 0
    packed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    label_rows: int = 0
    rows_without_image: list[dict[str, Any]] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # packed, with something to know

    def skip(self, found: Found | str, kind: str, detail: str) -> None:
        path = found.key if isinstance(found, Found) else found
        self.skipped.append({"path": display_path(path), "reason": kind, "detail": detail})

    def as_dict(self) -> dict[str, Any]:
        by_reason: dict[str, int] = {}
        for item in self.skipped:
            by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
        return {
            "discovered": self.discovered,
            "packed": self.packed,
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(sorted(by_reason.items())),
            "label_rows": self.label_rows,
            "label_rows_without_image": len(self.rows_without_image),
            "duplicates": {
                "groups": len(self.duplicate_groups),
                "files": sum(len(g) for g in self.duplicate_groups),
            },
            "skipped_files": sorted(self.skipped, key=lambda item: item["path"]),
            "label_rows_without_image_list": self.rows_without_image,
            "duplicate_groups": self.duplicate_groups,
            "notes": len(self.notes),
            "notes_list": self.notes,
        }


def ingest(
    folder: str | Path,
    manifest_out: str | Path,
    report_out: str | Path | None = None,
    labels: str | Path | None = None,
    params: IngestParams | None = None,
    split_folders: bool = False,
) -> IngestReport:
    """Build the manifest of `folder`; labels from `labels` or, without a table, from folder names.

    `split_folders` (pack.splits: folders): a file whose top folder names no split is accounted
    for as `unknown_split`.
    """
    params = params or IngestParams()
    report = IngestReport()
    refused: dict[str, list[str]] = {}

    def account(found: Found | str, kind: str, detail: str) -> None:
        report.skip(found, kind, detail)
        if params.on_error[kind] == "fail":
            refused.setdefault(kind, []).append(display_path(getattr(found, "key", found)))

    with (
        scratch_dir(Path(manifest_out)) as scratch,
        _scratch_errors(scratch),
        contextlib.closing(sqlite3.connect(os.path.join(scratch, "ingest.sqlite"))) as db,
    ):
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE hashes (hash TEXT, key TEXT, ordinal INTEGER)")
        groups = _label_groups(db, labels, params, report) if labels else None
        exclude = {str(labels)} if labels else set()
        lookup = partial(_group_of, db) if labels else None
        candidates = _labelled(
            walk_sorted(folder, exclude), groups, lookup, params, report, account, Path(folder)
        )
        if split_folders:
            candidates = _in_split_folders(candidates, account)
        staged = os.path.join(scratch, "rows.jsonl")
        total_bytes = 0
        with open(staged, "w", encoding="utf-8", newline="\n") as rows:
            examined = ordered_batch_map(
                partial(_examine_batch, params=params),
                progress(candidates, "ingest"),
                params.workers,
            )
            for batch in batched(examined, 1024):
                hashes = []
                for (found, label, extra), outcome in batch:
                    if isinstance(outcome, ProbeFailure):
                        account(found, outcome.kind, outcome.detail)
                        continue
                    size, hash_hex, probe = outcome
                    if probe.trailing:
                        report.notes.append(
                            {
                                "path": display_path(found.key),
                                "note": f"{probe.trailing} bytes after the end of the "
                                f"{probe.format} image (kept as they are, e.g. a motion photo)",
                            }
                        )
                    row = {
                        "key": found.key,
                        "size": size,
                        "hash": hash_hex,
                        "format": probe.format,
                        "width": probe.width,
                        "height": probe.height,
                        "label": label,
                        "extra": extra,
                        "duplicate_of": None,
                    }
                    rows.write(dumps(row) + "\n")
                    hashes.append((hash_hex, found.key, report.packed))
                    report.packed += 1
                    total_bytes += size
                db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", hashes)
        for row in report.rows_without_image:
            if params.on_error["missing_image"] == "fail":
                refused.setdefault("missing_image", []).append(row["path"])
        if refused:
            raise PolicyError(_refusal(refused))
        if not report.packed:
            raise InputError(
                f"{folder}: no images to pack ({report.discovered} files found, all skipped: "
                f"{_reasons(report)}); check ingest.folder and ingest.extensions"
            )
        db.execute("CREATE INDEX hashes_hash ON hashes (hash, key)")
        report.duplicate_groups, duplicate_of = _duplicates(db)
        header = {"hash_algorithm": params.hash, "count": report.packed, "total_bytes": total_bytes}
        write_manifest(Path(manifest_out), header, _final_rows(staged, duplicate_of))
    if report_out is not None:
        write_json(Path(report_out), report.as_dict())
    return report


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


def _examine_batch(items: list, params: IngestParams) -> list:
    return [_examine(found.path, params) for found, _, _ in items]


def _examine(path: str, params: IngestParams):
    """Read, probe and hash one file; returns (size, hash, probe) or the ProbeFailure."""
    try:
        data = read_file(path)
        return len(data), digest(data, params.hash), probe_image(data, params.max_pixels)
    except ProbeFailure as failure:
        return failure
    except OSError as exc:
        return ProbeFailure("corrupt", f"unreadable ({exc.strerror})")


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
    found_files, groups, lookup, params: IngestParams, report: IngestReport, account, root: Path
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
            if os.path.lexists(root / nfc):
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
    report.rows_without_image.append(
        {
            "path": group[0],
            "reason": "missing_image",
            "detail": f"label row {group[3]} has no image",
        }
    )


def _duplicates(db: sqlite3.Connection) -> tuple[list[list[str]], dict[int, str]]:
    """Groups of keys with identical bytes, and for each later key the ordinal -> first key."""
    cursor = db.execute(
        "SELECT h.hash, h.key, h.ordinal FROM hashes AS h JOIN "
        "(SELECT hash FROM hashes GROUP BY hash HAVING COUNT(*) > 1) AS d ON d.hash = h.hash "
        "ORDER BY h.hash, h.key"
    )
    groups: dict[str, list[str]] = {}
    duplicate_of: dict[int, str] = {}
    for hash_hex, key, ordinal in cursor:
        group = groups.setdefault(hash_hex, [])
        if group:
            duplicate_of[ordinal] = group[0]
        group.append(key)
    return sorted(groups.values()), duplicate_of


def _final_rows(staged: str, duplicate_of: dict[int, str]) -> Iterator[dict[str, Any] | str]:
    """Staged rows with duplicate_of filled in; untouched rows pass through as text."""
    with open(staged, encoding="utf-8") as rows:
        for ordinal, line in enumerate(rows):
            if ordinal in duplicate_of:
                row = json.loads(line)
                row["duplicate_of"] = duplicate_of[ordinal]
                yield row
            else:
                yield line


def _reasons(report: IngestReport) -> str:
    counts = report.as_dict()["skipped_by_reason"]
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "none"


def _refusal(refused: dict[str, list[str]]) -> str:
    parts = [f"{kind} {name_offenders(paths)}" for kind, paths in sorted(refused.items())]
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
