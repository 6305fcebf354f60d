"""Ingest's spool, written once here: the bytes a build's ingest read, kept for its pack to store."""

# A spool folder holds `spool-<task>.bin` (each task's accepted files, concatenated) and
# `index.bin`, one fixed-size entry per manifest row in manifest order: (task, offset), or (-1, -1)
# for a row whose bytes were not read by this ingest (the pack reads those from the raw folder).

from __future__ import annotations

import os
import struct

__all__ = [
    "INDEX_FILE",
    "spool_file",
    "entry_of",
    "read_index",
    "spooled_at",
    "stage_spool",
    "spool_for",
    "mark_spool",
]

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


def read_index(folder: str):
    """Every row's entry, in manifest order, as rows (task, offset) of a numpy array; (-1, -1)
    for a row not spooled."""
    import numpy as np

    return np.fromfile(os.path.join(folder, INDEX_FILE), "<i8").reshape(-1, 2)


def spooled_at(index, folder: str, ordinal: int) -> tuple[str, int] | None:
    """Row `ordinal`'s spooled bytes as (spool file path, offset), or None if not spooled."""
    number, offset = int(index[ordinal, 0]), int(index[ordinal, 1])
    if number < 0:
        return None
    return os.path.join(folder, spool_file(number)), offset


# The pipeline's stages hand a spool over too: ingest keeps the bytes it read (up to a budget, a
# file at a time: the rest the pack reads from the raw folder) in imgpack's state, marked with the
# identity of the manifest it wrote; pack uses it only for that very manifest, then deletes it.
_FOR = "manifest-identity"


def _identity(manifest) -> str:
    from imgpack.ingest.cache import file_stat

    return repr(file_stat(str(manifest)))


def stage_spool(manifest, state) -> str:
    """The spool folder of the pipeline's `manifest`, under the state folder `state`."""
    from imgpack.ingest.cache import state_name

    return os.path.join(state, f"spool-{state_name(manifest)}")


def mark_spool(folder: str, manifest) -> None:
    """Say that the spool at `folder` holds the bytes of `manifest`, as just written."""
    with open(os.path.join(folder, _FOR), "w") as out:
        out.write(_identity(manifest))


def spool_for(folder: str, manifest) -> str | None:
    """`folder` when it is the spool of this very manifest file, else None."""
    try:
        with open(os.path.join(folder, _FOR)) as marked:
            return folder if marked.read() == _identity(manifest) else None
    except OSError:
        return None
