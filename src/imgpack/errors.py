"""The exception hierarchy: every expected failure is an ImgpackError with a message that says what to do."""

from __future__ import annotations

__all__ = [
    "ImgpackError",
    "InputError",
    "PolicyError",
    "PackFormatError",
    "PackCorruptError",
    "PackChangedError",
    "ValidationError",
    "UnsafeKeyError",
    "OutputError",
    "output_failed",
    "name_offenders",
    "REFETCH",
]

# The way out of a truncated or damaged pack, ending the messages that report one; a reader names
# the command for its own copy (see `imgpack.read.revisions.refetch_remedy`).
REFETCH = "restore it (in a DVC project: dvc checkout --force PACK) or rebuild it"


class ImgpackError(Exception):
    """Root of every error imgpack raises on purpose; `main()` turns it into one line and exit 1."""


class InputError(ImgpackError):
    """A raw folder, labels table or params file cannot be used as given."""


class PolicyError(ImgpackError):
    """Inputs were refused by an error policy set to `fail`."""


class PackFormatError(ImgpackError):
    """A file is not an imgpack pack, or one of a format version this imgpack cannot read."""


class PackCorruptError(PackFormatError):
    """A pack is truncated or its records do not match their stored hashes."""


class PackChangedError(ImgpackError):
    """Another version was published at an open pack's path since it was opened: open it again."""


class ValidationError(ImgpackError):
    """A pack disagrees with its manifest."""


class OutputError(ImgpackError):
    """An output could not be written (disk full, file size limit, permissions); nothing was published."""


class UnsafeKeyError(ImgpackError):
    """A record key would be written outside the export folder."""


def output_failed(path: object, exc: BaseException) -> OutputError:
    """The one error for any failed write: names the file and the cause, says what to do."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(
        f"cannot write {path} ({reason}); free disk space or raise the file size limit and run "
        "again; nothing was published and any previous output is unchanged"
    )


def name_offenders(items: list[str], limit: int = 20, total: int | None = None) -> str:
    """Format the first `limit` offenders and the total count for a one-line message."""
    total = max(len(items), total or 0)
    shown = ", ".join(items[:limit])
    more = f" and {total - min(limit, len(items))} more" if total > limit else ""
    return f"{total}: {shown}{more}"
