"""The manifest: JSON Lines, a header line then one row per image in key order, written atomically."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from imgpack.errors import InputError, output_failed
from imgpack.util.jsonfiles import dumps

__all__ = [
    "manifest_rows",
    "MANIFEST_VERSION",
    "write_manifest",
    "patched_rows",
    "read_manifest",
    "manifest_blocks",
    "ALL_FIELDS",
    "row_text",
    "examined_row",
    "dumps",
]

MANIFEST_VERSION = 1
ROW_FIELDS = frozenset(
    ("key", "size", "hash", "format", "width", "height", "label", "extra", "duplicate_of")
)


_text = json.encoder.encode_basestring  # a str as JSON text (C), as _ENCODER writes it


def row_text(
    key: str, size: int, hash_hex: str, fmt: str, width: int, height: int, label: str, extra: dict
) -> str:
    """`dumps` of a manifest row without a duplicate, built directly (ingest writes one a file):
    the same text, a third of the time."""
    if extra or not (type(size) is type(width) is type(height) is int) or type(fmt) is not str:
        return dumps(
            {
                "key": key,
                "size": size,
                "hash": hash_hex,
                "format": fmt,
                "width": width,
                "height": height,
                "label": label,
                "extra": extra,
                "duplicate_of": None,
            }
        )
    return (
        f'{{"duplicate_of":null,"extra":{{}},"format":{_text(fmt)},"hash":{_text(hash_hex)},'
        f'"height":{height},"key":{_text(key)},"label":{_text(label)},"size":{size},'
        f'"width":{width}}}'
    )


def examined_row(key: str, examined, label: str, extra: dict) -> str:
    """`row_text` of a file ingest examined (an `Examined`)."""
    e = examined
    return row_text(key, e.size, e.digest_hex, e.format, e.width, e.height, label, extra)


def write_manifest(
    path: Path,
    header: dict[str, Any],
    rows: Iterable[dict[str, Any] | str | bytes | memoryview],
    durable: bool = True,
) -> None:
    """Write header and rows; a row given as text or bytes is taken as already canonical JSON
    lines (a block of them, each with its newline). `durable=False`: not synced (a copy kept in
    imgpack's state, like its other files there, is not worth the wait)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write((dumps({"imgpack_manifest": MANIFEST_VERSION, **header}) + "\n").encode())
            for row in rows:
                if isinstance(row, str):
                    row = row.encode()
                elif isinstance(row, dict):
                    row = (dumps(row) + "\n").encode()
                handle.write(row)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise output_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header and a lazy iterator of rows; rows are checked for their fields and key order."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found; run the ingest stage first") from None
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        raise InputError(f"{path}: not an imgpack manifest (first line is not JSON)") from None
    version = header.get("imgpack_manifest") if isinstance(header, dict) else None
    if version != MANIFEST_VERSION:
        raise InputError(
            f"{path}: manifest version {version!r}, expected {MANIFEST_VERSION}; rerun the ingest stage"
        )
    return header, manifest_rows(path)


_ROWS_AT_ONCE = 4096  # lines parsed in one call: a JSON array of them costs half as much


def manifest_rows(
    path: Path, start: int = 0, previous: str | None = None
) -> Iterator[dict[str, Any]]:
    """The rows from the `start`-th on (those before are skipped unparsed), checked as
    `read_manifest`'s; `previous`: the key of the row before `start`."""
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        for _ in itertools.islice(handle, start):
            pass
        line_number = 2 + start
        while lines := list(itertools.islice(handle, _ROWS_AT_ONCE)):
            for row in _parsed(path, lines, line_number):
                if type(row) is not dict or not row.keys() >= ROW_FIELDS:
                    raise InputError(
                        f"{path}:{line_number}: row lacks manifest fields; rerun ingest"
                    )
                if type(row["key"]) is not str:
                    raise InputError(f"{path}:{line_number}: key is not text; rerun ingest")
                if previous is not None and row["key"] <= previous:
                    raise InputError(f"{path}:{line_number}: keys are not in ascending order")
                previous = row["key"]
                line_number += 1
                yield row


def _parsed(path: Path, lines: list[str], first_line: int) -> list[Any]:
    """The lines' values, one per line: parsed as one JSON array when every line is one object
    (as ingest writes them), else line by line, naming the first that is not JSON."""
    if all(line.startswith("{") and line.endswith("}\n") for line in lines):
        with contextlib.suppress(json.JSONDecodeError):
            values = json.loads("[" + ",".join(lines) + "]")
            if len(values) == len(lines):
                return values
    values = []
    for line_number, line in enumerate(lines, first_line):
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(f"{path}:{line_number}: not valid JSON; rerun ingest") from None
    return values


ALL_FIELDS = ["key", "label", "format", "width", "height", "size", "hash", "duplicate_of", "extra"]


def manifest_blocks(path: Path, fields: list[str], block_bytes: int = 8 << 20):
    """The manifest's rows as Arrow tables of `fields`, a block of whole lines at a time: memory
    stays flat. With `extra` among the fields (as an empty struct), a row with extra columns or a
    field not asked for raises; without it, the rest of each line is skipped unparsed. A line
    that does not parse raises too: the row-wise `read_manifest` names it. The first reader
    that asks for every field (`ALL_FIELDS`) keeps them as Arrow columns, which the readers of
    the same manifest file after it read instead of parsing it again."""
    from imgpack.ingest.manifest_columns import keeping, kept_blocks

    kept = kept_blocks(path, fields)
    if kept is not None:
        return kept
    if sorted(fields) != sorted(ALL_FIELDS):
        return _parsed_blocks(path, fields, block_bytes)
    return keeping(path, _parsed_blocks(path, ALL_FIELDS, block_bytes), fields)


def _parsed_blocks(path: Path, fields: list[str], block_bytes: int):
    import pyarrow as pa
    import pyarrow.json as pj

    types = {
        "key": pa.string(),
        "size": pa.int64(),
        "hash": pa.string(),
        "format": pa.string(),
        "width": pa.int64(),
        "height": pa.int64(),
        "label": pa.string(),
        "duplicate_of": pa.string(),
        "extra": pa.struct([]),
    }
    parse_options = pj.ParseOptions(
        explicit_schema=pa.schema([(name, types[name]) for name in fields]),
        unexpected_field_behavior="error" if "extra" in fields else "ignore",
    )
    with open(path, "rb") as handle:
        handle.readline()  # the header
        rest = b""
        while block := handle.read(block_bytes):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            if data:
                yield pj.read_json(pa.BufferReader(data), parse_options=parse_options)
        if rest.strip():
            yield pj.read_json(pa.BufferReader(rest + b"\n"), parse_options=parse_options)


_COPIED = 4 << 20  # bytes of unpatched rows copied at a time


def patched_rows(staged: str, duplicate_of: Iterable[tuple[int, str]]):
    """Staged rows with duplicate_of filled in; the rows between pass through as blocks of text,
    and the rows after the last patched one as blocks of bytes."""
    at = 0  # the ordinal of the next staged row
    with open(staged, "rb") as rows:
        for ordinal, first in duplicate_of:
            yield b"".join(itertools.islice(rows, ordinal - at))
            row = json.loads(next(rows))
            row["duplicate_of"] = first
            yield row
            at = ordinal + 1
        while block := rows.read(_COPIED):
            yield block
