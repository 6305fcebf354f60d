"""What a fresh build leaves for the next incremental one: ingest's manifest, report and records."""

# An incremental `imgpack build` runs ingest with its manifest and report kept in imgpack's state
# (`imgpack.write.build`), so that the next one carries the unchanged files over from the
# records (`imgpack.ingest.changes`). A fresh build reads every file in one pass without ingest;
# this writes the same outputs from what its shards learned, so that already the first version
# after it reads only what changed.

from __future__ import annotations

import array
import contextlib
import os
import re
from pathlib import Path

from imgpack.ingest.manifest import patched_rows, row_text, write_manifest
from imgpack.ingest.report import IngestReport, trailing_note
from imgpack.ingest.snapshot import InputSnapshot, snapshot_files
from imgpack.parallel.workers import release_freed_memory
from imgpack.params import IngestParams

__all__ = ["KeptRun"]


class KeptRun:
    """The fresh build's walk with every file's stat (`files`), and its records' rows, sizes and
    notes gathered shard by shard (`add`) in key order; `save` writes them all."""

    def __init__(
        self, kept: tuple[Path, Path], folder: str | Path, params: IngestParams, splits: bool
    ):
        self.manifest, self.report = kept
        self.snapshot = InputSnapshot(*kept, folder, None, params, splits, keep_walk=True)
        self.algorithm = params.hash
        self.sizes = array.array("q")
        self.notes: list[tuple[str, dict]] = []
        self.rows = None  # the staged rows' file, once `start` has a scratch folder
        self.duplicate_of: list[tuple[int, str]] = []  # (ordinal, first key) of later copies

    def files(self):
        return self.snapshot.files()

    def start(self, scratch: Path, account) -> None:
        """Stage in `scratch`; `account`'s skipped files are kept for the records."""
        account.trail = []
        self.account = account
        self.snapshot.walk_spill = scratch / "walk.txt"
        self.staged = scratch / "kept-rows.jsonl"
        self.rows = open(self.staged, "wb")  # noqa: SIM115 - closed by save or close

    def add(self, rows, props, trailing: list[tuple[int, int]]) -> None:
        """A shard's records (`PlannedFile`s, their `ShardProps`, (index, bytes after the image))."""
        self.rows.write(_row_texts(rows, props))
        self.sizes.extend(props.sizes)
        for index, after in trailing:
            key = rows[index].key
            self.notes.append((key, trailing_note(key, after, props.formats[index])))

    def save(self, report: IngestReport, digests: Path, complete: bool) -> None:
        """The manifest, report and records of the build just published (`digests`: its
        records' digests concatenated, in key order), and the snapshot that names them."""
        from imgpack.ingest.records import write_full_run

        self.rows.close()
        header = {"hash_algorithm": self.algorithm, "count": report.packed}
        header["total_bytes"] = sum(self.sizes)
        rows = patched_rows(str(self.staged), self.duplicate_of)
        write_manifest(self.manifest, header, rows, durable=False)
        report.write(self.report)
        release_freed_memory()  # the build's: the records' phase peaks on its own
        snapshot = self.snapshot
        records = snapshot.records_writer() if snapshot.fingerprint else None
        try:
            if records is not None and not write_full_run(
                records,
                snapshot.walk,
                digests.read_bytes(),
                self.sizes,
                self.account.trail,
                self.notes,
            ):
                records.close()
                records = None
        except BaseException:
            if records is not None:
                records.close()
            raise
        snapshot.save(report.totals(), complete=complete, records=records)

    def close(self) -> None:
        if self.rows is not None and not self.rows.closed:
            self.rows.close()


def kept_outputs_of(out: Path) -> tuple[Path, Path] | None:
    """Where builds of `out` keep ingest's manifest and report in imgpack's state (made if new);
    None when the state folder cannot be written (the build then keeps nothing, as its cache
    then remembers nothing). What builds kept for packs gone for a day is removed on the way."""
    from imgpack.ingest.cache import state_dir, state_name

    real = os.path.realpath(out)
    state = state_dir()
    folder = state / f"build-{state_name(real)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        named = folder / "out"
        if not named.exists():
            named.write_text(real, encoding="utf-8", errors="surrogateescape")
        os.utime(folder)  # in use: `_prune` goes by when a folder was last used
    except OSError:
        return None
    _prune(state, folder)
    return folder / "manifest.jsonl", folder / "report.json"


_STALE = 24 * 3600  # seconds a kept folder outlives its pack: a pack being built is not gone


def _prune(state: Path, keep: Path) -> None:
    """Remove the kept folders (and their snapshot, records and columns) of packs no longer
    there, and not built for `_STALE` seconds."""
    import shutil
    import time

    for folder in state.glob("build-*"):
        try:
            target = (folder / "out").read_text(encoding="utf-8", errors="surrogateescape")
            if folder == keep or os.path.exists(target):
                continue
            if time.time() - folder.stat().st_mtime < _STALE:
                continue
        except OSError:
            continue
        # (Arrow comes with it: imported only when there is something to remove)
        from imgpack.ingest.manifest_columns import columns_file

        manifest = folder / "manifest.jsonl"
        for kept in (*snapshot_files(manifest), columns_file(manifest)):
            with contextlib.suppress(OSError):
                os.unlink(kept)
        shutil.rmtree(folder, ignore_errors=True)


_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # what `row_text`'s JSON strings escape


def _row_texts(rows, props) -> bytes:
    """The manifest rows of a shard's records, each `row_text` with its newline (labels from
    folder names: no extra columns), formatted straight when no key, label or format needs
    escaping (checked once for the shard); else made row by row."""
    if not rows:
        return b""
    keys, labels = [row.key for row in rows], [row.label for row in rows]
    if _ESCAPED.search("".join(keys) + "".join(labels) + "".join(props.formats)):
        return _row_texts_one_by_one(rows, props)
    hexed = props.digests.hex()
    width = len(hexed) // len(rows)
    # `row_text`'s text, inlined (a third less per record, for every record of a fresh build);
    # tests hold the kept manifest to ingest's bytes
    return "".join(
        [
            f'{{"duplicate_of":null,"extra":{{}},"format":"{fmt}","hash":"{hexed[at : at + width]}",'
            f'"height":{height},"key":"{key}","label":"{label}","size":{size},"width":{wide}}}\n'
            for key, label, at, size, fmt, wide, height in zip(
                keys,
                labels,
                range(0, len(hexed), width),
                props.sizes,
                props.formats,
                props.widths,
                props.heights,
                strict=True,
            )
        ]
    ).encode()


def _row_texts_one_by_one(rows, props) -> bytes:
    size = len(props.digests) // len(rows)
    digests = props.digests
    return "".join(
        row_text(
            r.key,
            props.sizes[i],
            digests[i * size : (i + 1) * size].hex(),
            props.formats[i],
            props.widths[i],
            props.heights[i],
            r.label,
            r.extra,
        )
        + "\n"
        for i, r in enumerate(rows)
    ).encode()
