"""Read, hash and probe a batch of files in a worker; optionally keep the bytes in a spool for the pack."""

from __future__ import annotations

from dataclasses import dataclass

from imgpack.probe import ProbeFailure, digest, probe_image, read_file

__all__ = ["ExamineTask", "examine_files"]


@dataclass(frozen=True, slots=True)
class ExamineTask:
    paths: tuple[str, ...]
    algorithm: str
    max_pixels: int
    spool: str | None = None  # a file for the accepted bytes: one per task, so a rerun rewrites it
    number: int = 0  # the task's number, recorded with each offset (names its spool file)


def examine_files(task: ExamineTask) -> list[list]:
    """Per path: ["ok", size, hash, format, width, height, trailing] (+ [task number, offset]) or
    ["fail", kind, detail]. Plain lists: they also go into the ingest cache as JSON."""
    out = []
    spool = None
    try:
        for path in task.paths:
            try:
                data = read_file(path)
                probe = probe_image(data, task.max_pixels)
            except ProbeFailure as failure:
                out.append(["fail", failure.kind, failure.detail])
                continue
            except OSError as exc:
                out.append(["fail", "corrupt", f"unreadable ({exc.strerror})"])
                continue
            result = [
                "ok",
                len(data),
                digest(data, task.algorithm),
                probe.format,
                probe.width,
                probe.height,
                probe.trailing,
            ]
            if task.spool is not None:
                if spool is None:
                    spool = open(task.spool, "wb")  # noqa: SIM115 - closed below
                result += [task.number, spool.tell()]
                spool.write(data)
            out.append(result)
    finally:
        if spool is not None:
            spool.close()
    return out
