"""Ingest of a folder where few files changed since the last run: the walk is matched against the
last run's records as Arrow columns, a batch at a time; only new or changed files are read, and
the manifest is the last one's bytes with the changed rows spliced in."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.format.tables import bools_of, numpy_of
from imgpack.ingest.cache import changed_since
from imgpack.ingest.examine import ExamineTask, examine_files
from imgpack.ingest.labeljoin import in_split_folders, labelled
from imgpack.ingest.manifest import dumps, examined_row, write_manifest
from imgpack.ingest.records import (
    SCHEMA,
    RecordsFile,
    RecordsWriter,
    first_at,
    key_at,
    keys_of,
    lines_of,
)
from imgpack.ingest.report import Accounting, IngestReport, trailing_note
from imgpack.ingest.walk import found_at
from imgpack.parallel.workers import batched, ordered_map, release_freed_memory
from imgpack.params import IngestParams

__all__ = ["Carried", "carry_over"]

_SCAN = 4 << 20  # manifest bytes read at a time
_FEW = 10_000  # changed files always carried over; above, up to a tenth of the folder
_PATCHED = b'{"duplicate_of":"'  # how a row naming its duplicate begins (keys sort first)


@dataclass
class Carried:
    report: IngestReport
    racy: bool  # a changed file's stat is too recent to tell a later change by
    transient: int  # files the operating system would not give: the next run reads them again


@dataclass
class _Fresh:
    """A changed file as just read: its row and record columns, or why it was skipped."""

    row: bytes | None = None
    digest: bytes | None = None
    size: int | None = None
    note: dict | None = None
    skip: tuple[str, str] | None = None


def carry_over(
    prev: RecordsFile,
    blocks: list[bytes],
    folder: str | Path,
    manifest: Path,
    params: IngestParams,
    split_folders: bool,
    scratch: Path,
    pool,
    started: int,
    out: RecordsWriter,
) -> Carried | None:
    """Write the manifest of `folder` and this run's records (to `out`) from the last run's
    records `prev`, its manifest (at `manifest`, as that run left it) and the walk's text
    `blocks`; None, having written nothing, when the change is not one it carries over."""
    lines = lines_of(blocks)
    release_freed_memory()
    if lines is None:
        return None
    n = len(lines)
    bounds = [0, *(first_at(lines, first) for first in prev.firsts[1:]), n]
    size = hashlib.new(params.hash).digest_size
    match = _match(prev, lines, bounds, size)
    if match is None:
        return None
    source, prefixes, packed, carried_bytes, prev_packed = match
    changed = np.flatnonzero(source < 0)
    if len(changed) > max(_FEW, n // 10):
        # Most files changed (touched, relinked): the full run streams them, and its cache of
        # each file's outcome learns them for the runs after.
        return None
    keys = [key_at(lines, int(p)).decode("utf-8", "surrogateescape") for p in changed]
    # A name's Unicode twin (NFC beside NFD) decides whether an unchanged file is a bad_path.
    if not all(key.isascii() for key in keys):
        return None
    ends = _line_ends(manifest)
    if len(ends) - 1 != prev_packed:  # not the manifest those records are of
        return None
    founds = [found_at(folder, key) for key in keys]
    fresh, read, transient = _examine(founds, folder, params, split_folders, pool)
    got = [fresh[key] for key in keys]
    for p, item in zip(changed.tolist(), got, strict=True):
        if item.digest is not None:
            prefixes[p], packed[p] = _prefix(item.digest), True
    report = IngestReport(spill=scratch)
    report.discovered, report.read, report.packed = n, read, int(packed.sum())
    firsts = _duplicates(prefixes, packed, _Digest(prev, source, changed, got), lines, report)
    del prefixes
    header = {
        "hash_algorithm": params.hash,
        "count": report.packed,
        "total_bytes": carried_bytes + sum(g.size for g in got if g.size is not None),
    }
    rows = _Rows(prev, lines, bounds, source, changed, got, firsts, ends)
    write_manifest(manifest, header, rows.body(manifest, out, report, params, folder))
    return Carried(report, _racy(founds, started), transient)


def _match(prev: RecordsFile, lines: pa.ChunkedArray, bounds: list[int], size: int):
    """For each line, the row of the last run's records with the same line, or -1; the first 8
    bytes of their digests and whether they were packed, the sum of their sizes, and how many
    records that run packed. None when a file gone since then has a name that is not
    ASCII, or a digest is not `size` bytes."""
    n = len(lines)
    source, prefixes, packed = np.full(n, -1, np.int64), np.zeros(n, np.uint64), np.zeros(n, bool)
    total = prev_packed = 0
    for b in range(len(prev.starts) - 1):
        batch, (i0, i1) = prev.batch(b), bounds[b : b + 2]
        at = pc.index_in(lines.slice(i0, i1 - i0), value_set=batch.column("line"))
        local = numpy_of(at.fill_null(-1)).astype(np.int64)
        hit = local[local >= 0]
        where = np.flatnonzero(local >= 0) + i0
        source[where] = hit + prev.starts[b]
        taken = batch.column("digest").take(pa.array(hit))
        valid = bools_of(pc.is_valid(taken))
        values = _values(taken, size)
        if values is None or len(values) != valid.sum():
            return None
        prefixes[where[valid]] = np.ascontiguousarray(values[:, :8]).view(np.uint64).ravel()
        packed[where[valid]] = True
        total += pc.sum(batch.column("size").take(pa.array(hit))).as_py() or 0
        prev_packed += batch.num_rows - batch.column("digest").null_count
        if len(hit) < batch.num_rows:
            kept = np.zeros(batch.num_rows, bool)
            kept[hit] = True
            gone = keys_of(batch.column("line").filter(pa.array(~kept))).to_pylist()
            if not all(key.isascii() for key in gone):
                return None
        del batch, at, taken
        release_freed_memory()  # the peak stays that of one batch
    return source, prefixes, packed, total, prev_packed


def _values(column: pa.Array, size: int) -> np.ndarray | None:
    """The non-null values of a binary column of `size`-byte values, as rows of a numpy array."""
    offsets = np.frombuffer(column.buffers()[1], np.int64, len(column) + 1, column.offset * 8)
    lengths = np.diff(offsets)
    if (lengths[lengths > 0] != size).any():
        return None
    data = column.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    flat = (
        np.frombuffer(data, np.uint8, stop - start, start)
        if stop > start
        else np.zeros(0, np.uint8)
    )
    return flat.reshape(-1, size)


def _line_ends(manifest: Path) -> np.ndarray:
    """Offsets just past each line end of the manifest: row i is ends[i]:ends[i + 1]."""
    parts, at = [], 0
    with open(manifest, "rb") as handle:
        while chunk := handle.read(_SCAN):
            parts.append(np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + (at + 1))
            at += len(chunk)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _examine(founds, folder, params: IngestParams, split_folders: bool, pool):
    """Each changed file read, hashed and probed: {key: _Fresh}, how many were read, and how
    many the operating system would not give."""
    fresh = {found.key: _Fresh() for found in founds}

    def skip(found, kind, detail):
        fresh[found.key].skip = (kind, detail)

    candidates = labelled(iter(founds), None, None, params, IngestReport(), skip, str(folder))
    if split_folders:
        candidates = in_split_folders(candidates, skip)
    tasks = (
        (batch, ExamineTask(tuple(f.path for f, _, _ in batch), params.hash, params.max_pixels))
        for batch in batched(candidates, 256)
    )
    read = transient = 0
    for batch, outcomes in ordered_map(examine_files, tasks, pool):
        read += len(batch)
        for (found, label, extra), outcome in zip(batch, outcomes, strict=True):
            if not outcome.ok:
                skip(found, outcome.kind, outcome.detail)
                transient += outcome.transient
                continue
            item = fresh[found.key]
            item.row = (examined_row(found.key, outcome, label, extra) + "\n").encode()
            item.digest, item.size = bytes.fromhex(outcome.digest_hex), outcome.size
            if outcome.trailing:
                item.note = trailing_note(found.key, outcome.trailing, outcome.format)
    return fresh, read, transient


def _prefix(digest: bytes) -> np.uint64:
    return np.frombuffer(digest[:8], np.uint64)[0]


class _Digest:
    """The whole digest of the record at a line position: read this run, or in the last run's
    records (read again: only records whose digests' first 8 bytes agree are asked for)."""

    def __init__(self, prev: RecordsFile, source, changed, got):
        self.prev, self.source, self.changed, self.got = prev, source, changed, got

    def __call__(self, p: int) -> bytes:
        row = int(self.source[p])
        if row < 0:
            return self.got[int(np.searchsorted(self.changed, p))].digest
        b = int(np.searchsorted(self.prev.starts, row, "right")) - 1
        return self.prev.batch(b).column("digest")[row - self.prev.starts[b]].as_py()


def _duplicates(prefixes, packed, digest_at, lines, report: IngestReport) -> dict[int, str]:
    """Groups of records with the same digest into the report, in key order; returns the line
    position of every later copy -> the group's first key. Sorted by each digest's first 8
    bytes, then compared whole where those agree."""
    at = np.flatnonzero(packed)
    prefix = prefixes[at]
    order = np.argsort(prefix, kind="stable")
    ranked = prefix[order]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    if not len(same):
        return {}
    candidates = np.unique(np.concatenate([order[same], order[same + 1]]))
    groups: dict[bytes, list[int]] = {}
    for p in at[candidates].tolist():  # in key order
        groups.setdefault(digest_at(p), []).append(p)
    firsts = {}
    for group in sorted(g for g in groups.values() if len(g) > 1):
        keys = [key_at(lines, p).decode("utf-8", "surrogateescape") for p in group]
        report.duplicate_group(keys)
        firsts.update((p, keys[0]) for p in group[1:])
    return firsts


class _Rows:
    """This run's records and manifest rows, a batch of the last run's at a time."""

    def __init__(self, prev, lines, bounds, source, changed, got, firsts, ends):
        self.prev, self.lines, self.bounds, self.source = prev, lines, bounds, source
        self.changed, self.got, self.firsts, self.ends = changed, got, firsts, ends

    def body(self, manifest: Path, out: RecordsWriter, report: IngestReport, params, folder):
        """The manifest's rows, in blocks; the records written to `out` as they go; the
        skipped files and notes into the report once all are known, raising as a full run
        would."""
        skips, notes, prev_row = [], [], 0  # prev_row: the last run's rows before this batch
        fd = os.open(manifest, os.O_RDONLY)
        try:
            for b in range(len(self.bounds) - 1):
                batch = self.prev.batch(b)
                i0, i1 = self.bounds[b], self.bounds[b + 1]
                table = self._records(b, batch, i0, i1)
                out.write(table)
                for name, into in (("skip", skips), ("note", notes)):
                    at = np.flatnonzero(bools_of(pc.is_valid(table[name])))
                    texts = table[name].take(pa.array(at)).to_pylist()
                    into.extend(zip((at + i0).tolist(), texts, strict=True))
                packed_before = np.cumsum(bools_of(pc.is_valid(batch.column("digest")))) - 1
                yield from self._manifest_rows(fd, table, i0, packed_before + prev_row, b)
                prev_row += len(batch) - batch.column("digest").null_count
                del batch, table
                release_freed_memory()
        finally:
            os.close(fd)
        _account(report, params, folder, self.lines, skips, notes)

    def _records(self, b: int, batch: pa.RecordBatch, i0: int, i1: int) -> pa.Table:
        c0, c1 = np.searchsorted(self.changed, [i0, i1])
        mine = self.source[i0:i1] < 0
        index = np.empty(i1 - i0, np.int64)
        index[~mine] = self.source[i0:i1][~mine] - self.prev.starts[b]
        index[mine] = len(batch) + np.arange(c1 - c0)
        got = self.got[c0:c1]
        columns = [self.lines.slice(i0, i1 - i0)]
        new = {
            "digest": pa.array([g.digest for g in got], pa.large_binary()),
            "size": pa.array([g.size for g in got], pa.int64()),
            "skip": pa.array([g.skip and json.dumps(g.skip) for g in got], pa.large_string()),
            "note": pa.array(
                [g.note and json.dumps(g.note, sort_keys=True) for g in got], pa.large_string()
            ),
        }
        for name in ("digest", "size", "skip", "note"):
            both = pa.concat_arrays([batch.column(name), new[name]])
            columns.append(both.take(pa.array(index)))
        return pa.table(columns, schema=SCHEMA)

    def _manifest_rows(self, fd: int, table, i0: int, prev_rows: np.ndarray, b: int):
        """The rows of this batch's packed records: runs of the old manifest's bytes, rows
        read this run, and rows whose duplicate_of is not what it was."""
        packed = np.flatnonzero(bools_of(pc.is_valid(table["digest"])))
        src = np.full(len(packed), -1, np.int64)
        carried = self.source[packed + i0]
        src[carried >= 0] = prev_rows[carried[carried >= 0] - self.prev.starts[b]]
        for r in np.flatnonzero(src >= 0).tolist():
            if packed[r] + i0 in self.firsts:
                src[r] = -2 - src[r]  # a carried row that now names a duplicate: rewritten
        cut = np.flatnonzero((src[1:] != src[:-1] + 1) | (src[1:] < 0) | (src[:-1] < 0)) + 1
        for a, z in zip([0, *cut.tolist()], [*cut.tolist(), len(src)], strict=True):
            if src[a] >= 0:
                yield from self._carried(fd, int(src[a]), int(src[z - 1]) + 1)
            elif src[a] == -1:
                row = self.got[int(np.searchsorted(self.changed, packed[a] + i0))].row
                first = self.firsts.get(packed[a] + i0)
                yield row if first is None else _with_first(row, first)
            else:
                row = -2 - int(src[a])
                yield _with_first(self._read(fd, row, row + 1), self.firsts[packed[a] + i0])

    def _carried(self, fd: int, start: int, stop: int):
        """The old manifest's rows start:stop, read a piece at a time; one that named a
        duplicate that no longer is one is rewritten (the others of a group are in `firsts`)."""
        while start < stop:
            end = int(np.searchsorted(self.ends, self.ends[start] + _SCAN, "right")) - 1
            end = min(max(end, start + 1), stop)
            data = self._read(fd, start, end)
            at = 0
            while (hit := data.find(_PATCHED, at)) >= 0:
                close = data.index(b"\n", hit) + 1
                yield data[at:hit]
                yield _with_first(data[hit:close], None)
                at = close
            yield data[at:]
            start = end

    def _read(self, fd: int, start: int, stop: int) -> bytes:
        return os.pread(fd, int(self.ends[stop] - self.ends[start]), int(self.ends[start]))


def _account(report, params: IngestParams, folder, lines, skips, notes) -> None:
    """Skipped files and notes into the report in key order; raises as a full run would."""
    account = Accounting(report, params.on_error)
    for p, text in skips:
        account(key_at(lines, p).decode("utf-8", "surrogateescape"), *json.loads(text))
    for _, text in notes:
        report.note(json.loads(text))
    account.check(folder)


def _with_first(text: bytes, first: str | None) -> bytes:
    row = json.loads(text)
    row["duplicate_of"] = first
    return (dumps(row) + "\n").encode()


def _racy(founds, started: int) -> bool:
    """Whether a changed file's stat is too recent to tell a later change from this one by."""
    return any(changed_since(f.stat, started) for f in founds)
