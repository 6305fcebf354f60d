"""Ingest's spool, written once here: the bytes a build's ingest read, kept for its pack to store."""

# A spool folder holds `spool-<task>.bin` (each task's accepted files, concatenated) and
# `index.bin`, one fixed-size entry per manifest row in manifest order: (task, offset), or (-1, -1)
# for a row whose bytes were not read by this ingest (the pack reads those from the raw folder).

from __future__ import annotations

import os
import struct
from typing import BinaryIO

__all__ = ["INDEX_FILE", "spool_file", "entry_of", "read_entry", "skip_entry"]

INDEX_FILE = "index.bin"
_ENTRY = struct.Struct("<qq")
_NOT_SPOOLED = _ENTRY.pack(-1, -1)


def spool_file(number: int) -> str:
    """The name of task `number`'s spool file."""
    return f"spool-{number}.bin"


def entry_of(spooled: tuple[int, int] | None) -> bytes:
    """The index entry for a manifest row: where its bytes are in the spool, or nowhere."""
    if spooled is None:
        return _NOT_SPOOLED
    return _ENTRY.pack(*spooled)


def read_entry(index: BinaryIO, folder: str) -> tuple[str, int] | None:
    """The next row's spooled bytes as (spool file path, offset), or None if not spooled."""
    number, offset = _ENTRY.unpack(index.read(_ENTRY.size))
    if number < 0:
        return None
    return os.path.join(folder, spool_file(number)), offset


def skip_entry(index: BinaryIO) -> None:
    """Pass over the next row's entry (a row that is not stored)."""
    index.read(_ENTRY.size)
