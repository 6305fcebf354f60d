"""Read, hash and probe a batch of files in a worker; optionally keep the bytes in a spool for the pack."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from imgpack.ingest.probe import ProbeFailure, probe_image, read_file

__all__ = ["ExamineTask", "examine", "examine_files"]


@dataclass(frozen=True, slots=True)
class ExamineTask:
    paths: tuple[str, ...]
    algorithm: str
    max_pixels: int
    spool: str | None = None  # a file for the accepted bytes: one per task, so a rerun rewrites it
    number: int = 0  # the task's number, recorded with each offset (names its spool file)


def examine(path: str, new_hash, max_pixels: int, size: int = 0) -> list:
    """["ok", size, hex, format, width, height, trailing, digest, data] or ["fail", kind, detail]:
    the ingest cache's outcome, then (when ok) the digest and the bytes, for whoever stores them.
    `new_hash`: the hashlib constructor (hashlib.sha256, ...); `size`: what the file's stat said."""
    try:
        data = read_file(path, size)
        probe = probe_image(data, max_pixels)
    except ProbeFailure as failure:
        return ["fail", failure.kind, failure.detail]
    except OSError as exc:
        return ["fail", "corrupt", f"unreadable ({exc.strerror})"]
    digest = new_hash(data).digest()
    return ["ok", len(data), digest.hex(), *probe, digest, data]  # probe: format, w, h, trailing


def examine_files(task: ExamineTask) -> list[list]:
    """Per path: ["ok", size, hash, format, width, height, trailing] (+ [task number, offset]) or
    ["fail", kind, detail]. Plain lists: they also go into the ingest cache as JSON."""
    out = []
    spool = None
    new_hash = getattr(hashlib, task.algorithm)
    try:
        for path in task.paths:
            result = examine(path, new_hash, task.max_pixels)
            if result[0] == "ok":
                data = result.pop()
                del result[7:]  # the digest: the cache keeps its hex
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
