"""Read, hash and probe a batch of files in a worker; optionally keep the bytes in a spool for the pack."""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass

from imgpack.ingest.outcome import Examined, Failed, Outcome
from imgpack.ingest.probe import ProbeFailure, probe_image, read_file

__all__ = ["ExamineTask", "examine", "examine_files", "unreadable"]


@dataclass(frozen=True, slots=True)
class ExamineTask:
    paths: tuple[str, ...]
    algorithm: str
    max_pixels: int
    spool: str | None = None  # a file for the accepted bytes: one per task, so a rerun rewrites it
    number: int = 0  # the task's number, recorded with each offset (names its spool file)


def unreadable(exc: OSError) -> Failed:
    """A file the operating system would not give us (permission denied, an I/O error, gone
    since it was listed): skipped as `corrupt` this run, never remembered (see `Failed`)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = "make it readable to the user running imgpack and rerun"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "it was moved or deleted while being read; rerun"
    else:
        hint = "check the disk or file system and rerun"
    detail = f"unreadable ({reason}); skipped this run only, not remembered: {hint}"
    return Failed("corrupt", detail, transient=True)


def examine(
    path: str, new_hash, max_pixels: int, size: int = 0
) -> tuple[Outcome, bytes | None, bytes | None]:
    """(outcome, digest, bytes) of the file at `path`; digest and bytes are None unless it is an
    image. `new_hash`: the hashlib constructor (hashlib.sha256, ...); `size`: what its stat said."""
    try:
        data = read_file(path, size)
        probe = probe_image(data, max_pixels)
    except ProbeFailure as failure:
        return Failed(failure.kind, failure.detail), None, None
    except OSError as exc:
        return unreadable(exc), None, None
    digest = new_hash(data).digest()
    examined = Examined(
        len(data), digest.hex(), probe.format, probe.width, probe.height, probe.trailing
    )
    return examined, digest, data


def examine_files(task: ExamineTask) -> list[Outcome]:
    """The outcome of each of the task's paths, in order; with a spool, an image's says where
    its bytes were kept."""
    out = []
    spool = None
    new_hash = getattr(hashlib, task.algorithm)
    try:
        for path in task.paths:
            outcome, _, data = examine(path, new_hash, task.max_pixels)
            if outcome.ok and task.spool is not None:
                if spool is None:
                    spool = open(task.spool, "wb")  # noqa: SIM115 - closed below
                outcome = outcome._replace(spooled=(task.number, spool.tell()))
                spool.write(data)
            out.append(outcome)
    finally:
        if spool is not None:
            spool.close()
    return out
