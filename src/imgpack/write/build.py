"""ingest + pack + validate in one call, for people without a DVC pipeline."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.ingest.report import LISTED, IngestReport
from imgpack.ingest.splits import FOLDERS
from imgpack.ingest.spool import INDEX_FILE
from imgpack.params import IngestParams, PackParams
from imgpack.util.locks import writer_lock
from imgpack.util.outputs import scratch_dir
from imgpack.util.urls import is_url

__all__ = ["build", "BuildResult"]


@dataclass
class BuildResult:
    report: IngestReport
    header: dict[str, Any]
    validation: dict[str, Any] = field(default_factory=dict)


def build(
    raw_dir: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    ingest_params: IngestParams | None = None,
    pack_params: PackParams | None = None,
    report_out: str | Path | None = None,
) -> BuildResult:
    """Pack `raw_dir` into `out`, reading each file once; the pack is validated before it is
    published, or not published. A pack already at `out` is the previous version (incremental).

    A fresh build runs in one pass (`imgpack.write.onepass`); an incremental one, one with
    `duplicates: dedupe` (which copies are stored is known only once all are hashed) or one on a
    cluster runs ingest, pack and validate in turn, as the pipeline does.
    """
    with writer_lock(Path(out)):
        return _build(raw_dir, Path(out), labels, ingest_params, pack_params, report_out)


def _build(raw_dir, out: Path, labels, ingest_params, pack_params, report_out) -> BuildResult:
    from imgpack.write.onepass_kept import kept_outputs_of

    ingest_params = ingest_params or IngestParams()
    pack_params = pack_params or PackParams()
    # Where ingest's outputs are kept for the next build into `out` (see the README's
    # *Appending with build*); None for a bucket, or a state folder that cannot be written.
    kept = None if is_url(raw_dir) else kept_outputs_of(Path(out))
    if (
        not (pack_params.incremental and Path(out).is_dir())
        and pack_params.duplicates == "keep"
        and not (ingest_params.scheduler or pack_params.scheduler or is_url(raw_dir))
    ):
        from imgpack.write.onepass import one_pass

        report, header, validation = one_pass(
            raw_dir, Path(out), labels, ingest_params, pack_params, report_out, kept
        )
        return BuildResult(report, header, validation)
    from imgpack.check.validate import validate
    from imgpack.ingest.run import ingest
    from imgpack.write.pack import pack

    with scratch_dir(Path(out)) as scratch:
        spool = scratch.absolute() / "spool"  # the bytes ingest read, for pack to store
        spool.mkdir()
        split_folders = pack_params.splits == FOLDERS
        manifest = kept[0] if kept else scratch / "manifest.jsonl"
        report = ingest(
            raw_dir,
            manifest,
            kept[1] if kept else report_out,
            labels,
            ingest_params,
            split_folders,
            spool=spool,
            reuse_unchanged=kept is not None,
        )
        if kept:
            report = _listed(report, kept[1])
            if report_out is not None:
                shutil.copyfile(kept[1], report_out)
        result = BuildResult(report, {})

        def check(tmp: Path) -> None:
            result.validation = validate(tmp, manifest)

        # Files carried over from the last run were not read now: pack reads them from the folder.
        spooled = spool if (spool / INDEX_FILE).exists() else None
        result.header = pack(
            manifest, raw_dir, out, pack_params, before_publish=check, spool=spooled
        )
    return result


def _listed(report: IngestReport, written: Path) -> IngestReport:
    """`report`, with the lists the report file `written` holds when the run found nothing
    changed (it then reports its totals only)."""
    if report.read or not (report.total("skipped") or report.total("notes")):
        return report
    with open(written, encoding="utf-8") as handle:
        saved = json.load(handle)
    report.skipped = saved["skipped_files"][:LISTED]
    report.notes = saved["notes_list"][:LISTED]
    return report
