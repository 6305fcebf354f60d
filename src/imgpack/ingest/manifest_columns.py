"""The manifest's rows parsed once as Arrow columns and kept in imgpack's state, for the readers
after the first: pack walks the manifest twice and validate once, each a JSON parse otherwise."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from imgpack.ingest.cache import file_stat, state_dir, state_name

__all__ = ["kept_blocks", "keeping", "columns_file"]

_VERSION = b"1"


def columns_file(manifest: str | Path) -> Path:
    """Where the columns of `manifest` are kept in imgpack's state."""
    return state_dir() / f"manifest-columns-{state_name(manifest)}.arrow"


def _identity(manifest: Path) -> bytes:
    """The manifest file's size, mtime, inode and ctime: a manifest written again (ingest
    replaces it whole) is another file."""
    stat = file_stat(str(manifest))
    if stat is None:
        raise FileNotFoundError(manifest)
    return repr(stat).encode()


def kept_blocks(manifest: Path, fields: list[str]) -> Iterator[pa.Table] | None:
    """The manifest's blocks of `fields` from its kept columns, when those are of this very
    file; else None."""
    with contextlib.suppress(OSError, pa.ArrowException):
        identity = _identity(manifest)
        source = pa.OSFile(str(columns_file(manifest)))
        reader = pa.ipc.open_file(source)
        meta = reader.schema.metadata or {}
        if meta.get(b"imgpack_manifest_columns") == _VERSION and meta.get(b"of") == identity:
            return _batches(source, reader, fields)
        source.close()
    return None


def _batches(source, reader, fields: list[str]) -> Iterator[pa.Table]:
    with source:
        for b in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(b)]).select(fields)


def keeping(manifest: Path, blocks: Iterator[pa.Table], fields: list[str]) -> Iterator[pa.Table]:
    """`blocks` (every field of the manifest, as parsed) passed on as `fields`, and kept whole
    for the readers after this one once the last has passed; nothing kept from a parse that
    fails or is left half way."""
    place = columns_file(manifest)
    tmp = place.with_name(f".{place.name}.tmp-{os.getpid()}")
    writer = sink = schema = None
    kept = True  # until the state folder cannot take them: then the blocks only pass through
    try:
        identity = _identity(manifest)
        for block in blocks:
            try:
                if writer is None and kept:
                    place.parent.mkdir(parents=True, exist_ok=True)
                    schema = block.schema.with_metadata(
                        {b"imgpack_manifest_columns": _VERSION, b"of": identity}
                    )
                    sink = pa.OSFile(str(tmp), "wb")
                    writer = pa.ipc.new_file(sink, schema)
                if writer is not None:
                    writer.write_table(block.replace_schema_metadata(schema.metadata))
            except (OSError, pa.ArrowException):
                kept = False
                _abandon(writer, sink)
                writer = sink = None
            yield block.select(fields)
        if writer is not None:
            writer.close()
            sink.close()
            writer = sink = None
            with contextlib.suppress(OSError):
                os.replace(tmp, place)
    finally:
        _abandon(writer, sink)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _abandon(writer, sink) -> None:
    if writer is not None:
        with contextlib.suppress(pa.ArrowException, OSError):
            writer.close()
    if sink is not None:
        with contextlib.suppress(pa.ArrowException, OSError):
            sink.close()
