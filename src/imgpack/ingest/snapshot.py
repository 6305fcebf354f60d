"""Ingest's inputs at its last full run: with every file's stat, the labels table and the params
unchanged, the manifest and report on disk are still right and are left as they are."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgpack import __version__
from imgpack.ingest.cache import RACY_NS, file_stat, state_dir, state_name, warn_rebuilt
from imgpack.ingest.found import Found
from imgpack.ingest.report import IngestReport
from imgpack.ingest.walk import stat_line, walk_sorted, walk_stat_blocks
from imgpack.parallel.workers import worker_pool
from imgpack.params import IngestParams
from imgpack.util.cores import resolve_workers

__all__ = ["InputSnapshot", "snapshot_files"]

_VERSION = 2  # 2: PNG chunk CRCs checked (a manifest an earlier version wrote is made again once)
_NOT_BYTES = ("workers", "scheduler")  # params that change how ingest runs, not what it writes
_WHAT = "ingest's record of its last run"
_SUMMARY = set(IngestReport().totals())  # the keys of the summary a record keeps
_BLOCK = 4096  # files a block digest covers
_PIECE = 16 << 20  # walk text kept in pieces of about this many bytes
_PARALLEL_FROM = 100_000  # files (at the last run) from which the check stats them in workers


def _well_formed(saved: Any) -> bool:
    """Whether `saved` has the shape `InputSnapshot.save` writes."""
    return (
        isinstance(saved, dict)
        and isinstance(saved.get("head"), str)
        and isinstance(saved.get("fingerprint"), str)
        and isinstance(saved.get("outputs"), dict)
        and isinstance(saved.get("summary"), dict)
        and set(saved["summary"]) == _SUMMARY
    )


def _identity(path: str | Path | None) -> list[int] | None:
    stat = file_stat(str(path)) if path else None
    return list(stat) if stat else None


def _digest(lines: bytes) -> str:
    return hashlib.blake2b(lines, digest_size=16).hexdigest()


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _Kept:
    """The walk's text kept in pieces of about _PIECE bytes, each one Arrow chunk as it is
    (`imgpack.ingest.records.lines_of`); in memory, or in the file `spill`."""

    def __init__(self, spill: Path | None = None):
        self.done: list[bytes] = []
        self.pending: list[bytes] = []
        self.size = 0
        self.spill = spill
        self.sizes: list[int] = []  # of the pieces spilled
        if spill is not None:
            spill.write_bytes(b"")

    def add(self, data: bytes) -> None:
        self.pending.append(data)
        self.size += len(data)
        if self.size >= _PIECE:
            self._piece()

    def _piece(self) -> None:
        piece = b"".join(self.pending)
        self.pending, self.size = [], 0
        if self.spill is None:
            self.done.append(piece)
            return
        with open(self.spill, "ab") as handle:
            handle.write(piece)
        self.sizes.append(len(piece))

    def pieces(self) -> list[bytes] | Iterator[bytes]:
        if self.pending:
            self._piece()
        return self.done if self.spill is None else self._read_back()

    def _read_back(self) -> Iterator[bytes]:
        with open(self.spill, "rb") as handle:
            for size in self.sizes:
                yield handle.read(size)


def snapshot_files(manifest_out: str | Path) -> tuple[Path, Path]:
    """The state's files of the ingest run that writes `manifest_out`: its snapshot record and
    its records."""
    name = state_name(manifest_out)
    return state_dir() / f"ingest-outputs-{name}.json", state_dir() / f"ingest-records-{name}.arrow"


class InputSnapshot:
    """A digest of everything the manifest is made from, and the identity of the outputs last
    written from it (kept in imgpack's state, beside DVC's)."""

    def __init__(
        self,
        manifest_out: Path,
        report_out: Path | None,
        folder: str | Path,
        labels: str | Path | None,
        params: IngestParams,
        splits: bool,
        keep_walk: bool = False,
    ):
        self.manifest_out, self.report_out = Path(manifest_out), report_out
        # and what the run made of each file (`imgpack.ingest.records`), when `keep_walk`
        self.record, self.records_file = snapshot_files(manifest_out)
        self.keep_walk = keep_walk
        self.workers = resolve_workers(params.workers, "ingest.workers")
        self.walk: list[bytes] | Iterator[bytes] | None = None  # the walk's text, when kept
        self.walk_spill: Path | None = None  # where `files` keeps it
        self.saved_tag: str | None = None  # the fingerprint of the run the saved record is of
        self.folder = folder
        self.exclude = {str(labels)} if labels else set()
        self.started = time.time_ns() - RACY_NS
        settings = {k: v for k, v in dataclasses.asdict(params).items() if k not in _NOT_BYTES}
        labels_stat = _identity(labels)
        head = [_VERSION, __version__, os.path.realpath(folder), splits, settings]
        head += [os.path.realpath(labels) if labels else None, labels_stat]
        self.head = hashlib.blake2b(json.dumps(head, sort_keys=True).encode()).hexdigest()
        self.labels_racy = labels_stat is not None and max(labels_stat[1], labels_stat[3]) >= (
            self.started
        )
        self.fingerprint: str | None = None
        self.racy = True

    def files(self) -> Iterator[Found]:
        """The folder's files in key order, as `walk_sorted` gives them but with their stat; the
        fingerprint of all of them is known once the walk is done, and each block's digest
        (`blocks`) as soon as the walk has passed it."""
        self.fingerprint, self.racy, self.blocks = None, self.labels_racy, []
        started, lines = self.started, []
        kept = _Kept(self.walk_spill) if self.keep_walk else None
        for found in walk_sorted(self.folder, self.exclude, stat=True):
            st = found.stat
            if st is None:
                lines.append(stat_line(found))
            else:  # `stat_line` and `changed_since` inlined: they run for every file
                key, problem = found.key, found.problem
                lines.append(f"{key}\0{problem}\0{st[0]}\0{st[1]}\0{st[2]}\0{st[3]}\n")
                if st[1] >= started or st[3] >= started:
                    self.racy = True
            if len(lines) >= _BLOCK:
                self._add_block("".join(lines), kept)
                lines.clear()
            yield found
        self._add_block("".join(lines), kept)
        self.fingerprint = self._fingerprint()
        self.walk = kept and kept.pieces()

    def _add_block(self, text: str, kept: _Kept | None) -> None:
        data = _encoded(text)
        self.blocks.append(_digest(data))
        if kept is not None:
            kept.add(data)

    def _fingerprint(self) -> str:
        digest = hashlib.blake2b(self.head.encode(), digest_size=20)
        digest.update("".join(self.blocks).encode())
        return digest.hexdigest()

    def _outputs(self) -> dict[str, Any]:
        return {
            "manifest": _identity(self.manifest_out),
            "report": _identity(self.report_out) if self.report_out else None,
        }

    def unchanged(self) -> dict[str, Any] | None:
        """The last run's summary when its inputs and outputs are as they were, else None.
        The folder is walked only when the params, the labels table and the outputs are; with
        `keep_walk` and that run's records on disk, the walk is kept whole (`walk`) for
        `previous_records`, else it stops at the first change."""
        saved = self._load()
        if (
            saved is None
            or saved.get("head") != self.head
            or saved.get("outputs") != self._outputs()
            or saved["outputs"]["manifest"] is None
        ):
            return None
        # Files come in key order, so a change shows in the first block that differs: with files
        # added anywhere, the walk stops there and ingest walks once, not twice.
        saved_blocks, self.blocks, differs = saved.get("blocks") or [], [], False
        kept = _Kept() if self.keep_walk and self.records_file.exists() else None
        large = saved["summary"].get("discovered", 0) >= _PARALLEL_FROM
        with worker_pool(self.workers if large else 1, fork=True) as pool:
            for text in walk_stat_blocks(self.folder, self.exclude, _BLOCK, pool):
                self._add_block(text, kept)
                walked = len(self.blocks)
                if walked > len(saved_blocks) or saved_blocks[walked - 1] != self.blocks[-1]:
                    differs = True
                    if kept is None:
                        return None
        self.fingerprint = self._fingerprint()
        if kept is not None:
            self.walk, self.saved_tag = kept.pieces(), saved["fingerprint"]
        if differs or saved.get("fingerprint") != self.fingerprint:
            return None
        return saved.get("summary")

    def previous_records(self):
        """The records (a `RecordsFile`) of the run the saved record is of (see `unchanged`),
        else None."""
        from imgpack.ingest.records import RecordsFile

        if self.walk is None or self.saved_tag is None:
            return None
        return RecordsFile.open(self.records_file, self.saved_tag)

    def records_writer(self):
        """Where this run writes its records (a `RecordsWriter`); `save` makes them the
        snapshot's."""
        from imgpack.ingest.records import RecordsWriter

        return RecordsWriter(self.records_file, self.fingerprint)

    def _load(self) -> dict[str, Any] | None:
        """The record of the last full run; None when there is none. A damaged one (not JSON,
        or not shaped as `save` writes it) is deleted with a warning: this run writes it anew."""
        try:
            text = self.record.read_bytes()
        except OSError:
            return None
        try:
            saved = json.loads(text)
            problem = None if _well_formed(saved) else "not the record this imgpack writes"
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        if problem is None:
            return saved
        with contextlib.suppress(OSError):
            self.record.unlink()
        warn_rebuilt(self.record, _WHAT, problem, "this run does ingest's work in full")
        return None

    def save(self, summary: dict[str, Any], complete: bool = True, records=None) -> None:
        """Remember this run's inputs (walked by `files`), outputs and `records`; not when a
        file changed too recently to tell a later change from this one by its stat, nor when
        the run was not `complete` (a file the operating system would not give it must be read
        by the next run, whatever its stat)."""
        with contextlib.suppress(OSError):
            if self.racy or self.fingerprint is None or not complete:
                self.record.unlink(missing_ok=True)
                self.records_file.unlink(missing_ok=True)
                if records is not None:
                    records.close()
                return
            if records is not None:
                records.commit()
            else:
                self.records_file.unlink(missing_ok=True)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.record.with_name(f".{self.record.name}.tmp-{os.getpid()}")
            record = {
                "head": self.head,
                "fingerprint": self.fingerprint,
                "blocks": self.blocks,
                "outputs": self._outputs(),
                "summary": summary,
            }
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.record)
