"""ingest + pack + validate in one call, for people without a DVC pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.ingest.report import IngestReport
from imgpack.ingest.splits import FOLDERS
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
    ingest_params = ingest_params or IngestParams()
    pack_params = pack_params or PackParams()
    if (
        not (pack_params.incremental and Path(out).is_dir())
        and pack_params.duplicates == "keep"
        and not (ingest_params.scheduler or pack_params.scheduler or is_url(raw_dir))
    ):
        from imgpack.write.onepass import one_pass

        report, header, validation = one_pass(
            raw_dir, Path(out), labels, ingest_params, pack_params, report_out
        )
        return BuildResult(report, header, validation)
    from imgpack.check.validate import validate
    from imgpack.ingest.run import ingest
    from imgpack.write.pack import pack

    with scratch_dir(Path(out)) as scratch:
        manifest = scratch / "manifest.jsonl"
        spool = scratch.absolute() / "spool"  # the bytes ingest read, for pack to store
        spool.mkdir()
        split_folders = pack_params.splits == FOLDERS
        report = ingest(
            raw_dir, manifest, report_out, labels, ingest_params, split_folders, spool=spool
        )
        result = BuildResult(report, {})

        def check(tmp: Path) -> None:
            result.validation = validate(tmp, manifest)

        result.header = pack(manifest, raw_dir, out, pack_params, before_publish=check, spool=spool)
    return result
