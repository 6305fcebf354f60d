"""Read, hash and probe a batch of files in a worker; optionally keep the bytes in a spool for the pack."""

from __future__ import annotations

import os
from dataclasses import dataclass

from imgpack.probe import ProbeFailure, digest, probe_image, read_file

__all__ = ["ExamineTask", "examine_files"]


@dataclass(frozen=True, slots=True)
class ExamineTask:
    paths: tuple[str, ...]
    algorithm: str
    max_pixels: int
    spool: str | None = None  # a folder: accepted bytes are appended to this process's file


def examine_files(task: ExamineTask) -> list[list]:
    """Per path: ["ok", size, hash, format, width, height, trailing] (+ [spool pid, offset]) or
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
                    name = os.path.join(task.spool, f"spool-{os.getpid()}.bin")
                    spool = open(name, "ab")  # noqa: SIM115 - closed below
                result += [os.getpid(), spool.tell()]
                spool.write(data)
            out.append(result)
    finally:
        if spool is not None:
            spool.close()
    return out
