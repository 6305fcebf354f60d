"""What ingest's last run made of each file, as Arrow columns kept beside its snapshot: a run that
finds a few files changed carries the others over from these, reading and parsing none of them."""

from __future__ import annotations

import bisect
import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "SCHEMA",
    "BATCH",
    "lines_of",
    "keys_of",
    "key_at",
    "first_at",
    "write_full_run",
    "RecordsWriter",
    "RecordsFile",
]

# One row per walked file, in walk (key) order. A packed file has a digest and size; a skipped
# one its [kind, detail]; every file is one or the other, as in the report.
SCHEMA = pa.schema(
    [
        ("line", pa.large_binary()),  # its line of `walk_stat_blocks`, newline included
        ("digest", pa.large_binary()),  # the raw digest of its bytes; null unless packed
        ("size", pa.int64()),  # null unless packed
        ("skip", pa.large_string()),  # JSON [kind, detail] when skipped, else null
        ("note", pa.large_string()),  # JSON of its report note (packed with trailing bytes)
    ]
)
BATCH = 65_536  # rows per record batch: what a run holds in memory at once
_VERSION = b"1"
_FIELDS_PER_LINE = (2, 5)  # NULs in a line: `key NUL problem NUL -`, or with the four stats


def lines_of(pieces: list[bytes]) -> pa.ChunkedArray | None:
    """The walk's text (`walk_stat_blocks`, encoded with surrogateescape, in pieces of whole
    lines) as one value per line, a chunk per piece, without a copy; None when a line is not
    what the walk writes (a file name with a newline)."""
    chunks = [_lines(piece) for piece in pieces]
    if any(chunk is None for chunk in chunks):
        return None
    return pa.chunked_array(chunks, pa.large_binary())


def _lines(text: bytes) -> pa.LargeBinaryArray | None:
    buf = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if len(text) and (not len(ends) or ends[-1] != len(text)):
        return None
    offsets = np.concatenate([np.zeros(1, np.int64), ends.astype(np.int64)])
    per_line = np.diff(np.searchsorted(np.flatnonzero(buf == 0), offsets))
    if not np.isin(per_line, _FIELDS_PER_LINE).all():
        return None
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(text)]
    )


def keys_of(lines: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each line's key (its text up to the first NUL), as bytes."""
    return pc.list_element(pc.split_pattern(lines, "\0", max_splits=1), 0)


def key_at(lines: pa.Array | pa.ChunkedArray, i: int) -> bytes:
    return lines[i].as_py().split(b"\0", 1)[0]


def write_full_run(
    out: RecordsWriter,
    pieces: Iterable[bytes],
    digests: bytes,
    sizes: np.ndarray,
    skips: list[tuple[str, str, str]] | None,
    notes: list[tuple[str, dict]],
) -> bool:
    """Write to `out` the records of a run that read the folder in full: from its walk's text
    (in pieces of whole lines), the digests (concatenated) and sizes of its records in order,
    its skipped files (key, kind, detail) and notes (key, note). False, and nothing whole
    written, when they do not add up to the walk."""
    count = len(sizes)
    if skips is None or not count or len(digests) % count:
        return False
    size = len(digests) // count
    skips = sorted((_encoded(key), kind, detail) for key, kind, detail in skips)
    notes = sorted((_encoded(key), note) for key, note in notes)
    row = 0  # records written so far
    for piece in _split(pieces, _WRITE_PIECE):
        lines = _lines(piece)
        if lines is None:
            return False
        if not len(lines):
            continue
        last = key_at(lines, len(lines) - 1)
        mine = bisect.bisect_right(skips, (last, "\uffff"))
        skip_at = _positions(lines, [key for key, _, _ in skips[:mine]])
        noted = bisect.bisect_right(notes, (last,), key=lambda item: item[:1])
        note_at = _positions(lines, [key for key, _ in notes[:noted]])
        if skip_at is None or note_at is None:
            return False
        packed = np.ones(len(lines), bool)
        packed[skip_at] = False
        here = int(packed.sum())
        if row + here > count or len(skip_at) != len(np.unique(skip_at)):
            return False
        offsets = np.arange(here + 1, dtype=np.int64) * size
        data = pa.py_buffer(memoryview(digests)[row * size : (row + here) * size])
        digest_values = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), here, [None, pa.py_buffer(offsets), data]
        )
        index = np.cumsum(packed) - 1
        texts = [json.dumps([kind, detail]) for _, kind, detail in skips[:mine]]
        out.write(
            pa.table(
                [
                    lines,
                    _at(digest_values, index, packed),
                    _at(pa.array(np.asarray(sizes[row : row + here], np.int64)), index, packed),
                    _placed(texts, skip_at, len(lines)),
                    _placed(
                        [json.dumps(n, sort_keys=True) for _, n in notes[:noted]],
                        note_at,
                        len(lines),
                    ),
                ],
                schema=SCHEMA,
            )
        )
        row += here
        del skips[:mine], notes[:noted]
    return row == count and not skips and not notes


_WRITE_PIECE = 4 << 20  # walk text turned into records at a time: its numpy temporaries are 5x


def _split(pieces: Iterable[bytes], most: int) -> Iterator[bytes]:
    """The walk's pieces cut at line ends into parts of about `most` bytes (a longer line is a
    part of its own)."""
    for piece in pieces:
        view, start = memoryview(piece), 0
        while len(piece) - start > most:
            end = piece.rfind(b"\n", start, start + most) + 1
            if end <= start:  # no line end within: up to the next one
                end = piece.find(b"\n", start + most) + 1 or len(piece)
            yield view[start:end]
            start = end
        if start < len(piece):
            yield view[start:]


def _encoded(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def first_at(lines: pa.ChunkedArray, key: bytes) -> int:
    """The position of the first line whose key is not below `key` (lines are in key order)."""
    return bisect.bisect_left(range(len(lines)), key, key=lambda i: key_at(lines, i))


def line_of(lines: pa.ChunkedArray, key: bytes) -> int | None:
    """The position of the line of `key`, or None."""
    at = first_at(lines, key)
    return at if at < len(lines) and key_at(lines, at) == key else None


def _positions(lines: pa.Array, wanted: list[bytes]) -> np.ndarray | None:
    """Where the line of each wanted key is; None when one is not there."""
    found = [line_of(lines, key) for key in wanted]
    if None in found:
        return None
    return np.asarray(found, np.int64)


def _at(values: pa.Array, index: np.ndarray, valid: np.ndarray) -> pa.Array:
    """values[index[i]] where valid[i], else null."""
    return values.take(pa.array(index, mask=~valid))


def _placed(texts: list[str], at: np.ndarray, n: int) -> pa.Array:
    """`texts` at positions `at` of a column of `n` nulls."""
    index = np.zeros(n, np.int64)
    valid = np.zeros(n, bool)
    index[at], valid[at] = np.arange(len(texts)), True
    return _at(pa.array(texts, pa.large_string()), index, valid)


class RecordsWriter:
    """Records written in batches of BATCH rows to a temporary file beside `path`, tagged with
    the snapshot they go with; `path` appears, whole, on `commit`."""

    def __init__(self, path: Path, tag: str):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = SCHEMA.with_metadata({b"imgpack_records": _VERSION, b"tag": tag.encode()})
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_file(self.sink, schema)
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.batch = BATCH

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.batch:
            whole = pa.concat_tables(self.pending).combine_chunks()
            cut = self.rows - self.rows % self.batch
            self.writer.write_table(whole.slice(0, cut), self.batch)
            self.pending, self.rows = [whole.slice(cut)], self.rows - cut

    def commit(self) -> None:
        if self.rows:
            self.writer.write_table(pa.concat_tables(self.pending).combine_chunks(), self.batch)
        self.writer.close()
        self.sink.close()
        os.replace(self.tmp, self.path)

    def close(self) -> None:
        """Abandon what was written."""
        with contextlib.suppress(pa.ArrowException, OSError):
            self.writer.close()
        self.sink.close()
        self.tmp.unlink(missing_ok=True)


class RecordsFile:
    """Records on disk, read a batch at a time; `open` gives None for records that are not
    there, damaged, or of another run than the snapshot `tag`."""

    def __init__(self, path: Path, reader, firsts: list[bytes], starts: list[int]):
        self.path, self.reader = path, reader
        self.firsts = firsts  # each batch's first key
        self.starts = starts  # each batch's first row

    @classmethod
    def open(cls, path: Path, tag: str) -> RecordsFile | None:
        with contextlib.suppress(OSError, pa.ArrowException, IndexError):
            with pa.memory_map(str(path)) as source:  # a peek at each batch's first line
                reader = pa.ipc.open_file(source)
                meta = reader.schema.metadata or {}
                if (
                    meta.get(b"imgpack_records") != _VERSION
                    or meta.get(b"tag") != tag.encode()
                    or not reader.schema.remove_metadata().equals(SCHEMA)
                ):
                    return None
                firsts, starts, at = [], [], 0
                for b in range(reader.num_record_batches):
                    batch = reader.get_batch(b)
                    firsts.append(key_at(batch.column(0), 0))
                    starts.append(at)
                    at += batch.num_rows
                    del batch
                del reader
            return cls(path, pa.ipc.open_file(pa.OSFile(str(path))), firsts, [*starts, at])
        return None

    def __len__(self) -> int:
        return self.starts[-1]

    def batch(self, b: int) -> pa.RecordBatch:
        return self.reader.get_batch(b)
