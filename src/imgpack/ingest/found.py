"""A file found under the raw folder (local or object storage), and how its path is shown."""

from __future__ import annotations

import os
from typing import NamedTuple

MAX_KEY_BYTES = 511


class Found(NamedTuple):
    """A file under the raw folder: its key (POSIX path relative to the folder) and any problem."""

    key: str
    path: str
    problem: str | None = None  # an ERROR_KINDS kind, when the file cannot be a record
    detail: str = ""
    stat: tuple[int, int, int, int] | None = None  # known from the listing (object storage)


def display_path(text: str) -> str:
    """A path as printable text even when its bytes are not UTF-8."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")
