"""What ingest learns of one file: an image's properties (`Examined`) or why it is no record (`Failed`)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Examined", "Failed", "Outcome"]


class Examined(NamedTuple):
    """A file that is an image, as read, hashed and probed.

    Two NamedTuples, not one record with a status: each has only fields that mean something for
    it, is made per file in microseconds and pickles by reference to its module (to workers and
    a Dask cluster); `ok` tells them apart without an isinstance check.
    """

    size: int
    digest_hex: str
    format: str
    width: int
    height: int
    trailing: int  # bytes after the image's own end (motion photos, tool metadata): kept
    spooled: tuple[int, int] | None = None  # (spool task, offset) when ingest kept its bytes

    ok = True  # a class attribute, not a field
    transient = False  # likewise: what was learned is the file's own, to remember


class Failed(NamedTuple):
    """A file that cannot be a record: `kind` is an ERROR_KINDS kind, `detail` says why.

    `transient`: the operating system failed to give its bytes (permission denied, an I/O error,
    the file gone mid-read), which says nothing of the file itself: reported and handled under
    `kind` like any other failure this run, but never remembered, so the next run reads it again.
    """

    kind: str
    detail: str
    transient: bool = False

    ok = False  # a class attribute, not a field


Outcome = Examined | Failed
