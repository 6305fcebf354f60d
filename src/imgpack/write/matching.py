"""Match a version's records to the previous version's images row by row: one merge in key order, then by digest."""

# The manifest and the previous catalog are both in key order, so a record keeps its image when the
# previous version has its key with the same digest: one pass over both, nothing indexed. Records
# left over (renamed or copied files) take unclaimed images of the same digest, first come, first
# served by (shard, slot); only those left over go through SQLite. Claims are kept on disk, in
# manifest order, for the planner to read back.

from __future__ import annotations

import heapq
import sqlite3
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgpack.errors import ImgpackError, InputError
from imgpack.ingest.manifest import read_manifest

__all__ = ["Match", "match_rows", "Digests", "PreviousDamaged", "by_digest", "read_triples"]

_FLUSH = 1 << 16  # claims (or left-over records) held before they go to disk


@dataclass
class Match:
    """Each record's claim on a previous image, the live records of each previous shard, and
    the image bytes and records that no previous image holds."""

    claims_path: Path  # int64 (ordinal, shard, slot) triples, ordinals ascending
    by_digest_path: Path  # the same, for the claims made by digest alone
    live: dict[int, int] = field(default_factory=dict)
    claimed_bytes: dict[int, int] = field(default_factory=dict)
    stored_bytes: int = 0  # of every record to store
    stored: int = 0
    previous_rows: np.ndarray | None = (
        None  # each manifest row's row in the previous catalog, or -1
    )

    def to_write(self, kept: dict[int, int]) -> tuple[int, int]:
        """Image bytes and count of the records no kept (carried) shard holds."""
        carried = sum(self.claimed_bytes.get(s, 0) for s in kept)
        return self.stored_bytes - carried, self.stored - sum(self.live.get(s, 0) for s in kept)

    def claims(self) -> Iterator[tuple[int, int, int]]:
        """(ordinal, shard, slot) of every claim, in ordinal order."""
        return heapq.merge(read_triples(self.claims_path), read_triples(self.by_digest_path))

    def claim_array(self) -> np.ndarray:
        """Every claim as a row (ordinal, shard, slot), in ordinal order."""
        both = np.concatenate(
            [
                np.fromfile(p, np.int64).reshape(-1, 3)
                for p in (self.claims_path, self.by_digest_path)
            ]
        )
        return both[np.argsort(both[:, 0], kind="stable")]


class PreviousDamaged(Exception):
    """The previous version cannot be a source (keys out of order, places outside a shard)."""


def match_rows(pack, manifest: Path, dedupe: bool, db: sqlite3.Connection, scratch: Path) -> Match:
    """`imgpack.write.match_columns.match_records` row by row, for a manifest whose blocks do
    not parse: the row reader names what is wrong, and where."""
    db.execute("DROP TABLE IF EXISTS left_new")
    return _match(pack, _new_from_rows(manifest, dedupe), db, scratch)


def _match(pack, new_records, db: sqlite3.Connection, scratch: Path) -> Match:
    match = Match(scratch / "claims.bin", scratch / "by-digest.bin")
    match.by_digest_path.write_bytes(b"")
    digests = Digests(pack)
    db.execute("CREATE TABLE left_new (ordinal INTEGER PRIMARY KEY, hash BLOB, size INT)")
    claims, left = array("q"), []
    live, claimed_bytes = match.live, match.claimed_bytes
    with open(match.claims_path, "wb") as out:
        old_records = _old_records(pack)
        old = next(old_records, None)
        for key, digest, size, ordinal in new_records:
            match.stored += 1
            match.stored_bytes += size
            while old is not None and old[0] < key:
                old = next(old_records, None)
            if old is not None and old[0] == key and digests.of(old[1], old[2]) == digest:
                shard = old[1]
                claims.extend((ordinal, shard, old[2]))
                live[shard] = live.get(shard, 0) + 1
                claimed_bytes[shard] = claimed_bytes.get(shard, 0) + size
                if len(claims) >= 3 * _FLUSH:
                    claims.tofile(out)
                    del claims[:]
            else:
                left.append((ordinal, digest, size))
                if len(left) >= _FLUSH:
                    db.executemany("INSERT INTO left_new VALUES (?, ?, ?)", left)
                    left.clear()
        for _ in old_records:  # the rest is checked too: a damaged version is no source
            pass
        claims.tofile(out)
    db.executemany("INSERT INTO left_new VALUES (?, ?, ?)", left)
    unclaimed_images = digests.total - sum(live.values())
    leftover = match.stored - sum(live.values())
    if leftover and unclaimed_images:  # records and images left unmatched: match by digest
        by_digest(db, digests, match)
    return match


def _new_from_rows(manifest: Path, dedupe: bool) -> Iterator[tuple[str, bytes, int, int]]:
    for ordinal, row in enumerate(read_manifest(manifest)[1]):
        if dedupe and row["duplicate_of"]:
            continue
        key, size = row["key"], row["size"]
        try:
            digest = bytes.fromhex(row["hash"])
        except (TypeError, ValueError):
            digest = None
        if digest is None or type(key) is not str or type(size) is not int:
            raise InputError(
                f"{manifest}:{ordinal + 2}: key, hash or size is not what ingest writes; rerun ingest"
            )
        yield key, digest, size, ordinal


def _old_records(pack) -> Iterator[tuple[str, int, int]]:
    """(key, shard, slot) of the previous version's records, in key order."""
    previous = None
    try:
        for _, part in pack.catalog.tables(["key", "shard", "slot"]):
            columns = (part.column(n).to_pylist() for n in ("key", "shard", "slot"))
            for key, shard, slot in zip(*columns, strict=True):
                if previous is not None and key <= previous:
                    raise PreviousDamaged  # a key twice, or out of order
                previous = key
                yield key, shard, slot
    except ImgpackError:
        raise PreviousDamaged from None


class Digests:
    """The digest of each previous image, read from its shard's props once."""

    def __init__(self, pack):
        from imgpack.read.shards import read_props

        self.width = pack.catalog.digest_size
        try:
            self.raw = [read_props(p, pack.catalog.algorithm).tobytes() for p in pack.shard_paths]
        except ImgpackError:
            raise PreviousDamaged from None
        self.counts = [len(raw) // self.width for raw in self.raw]
        self.total = sum(self.counts)

    def of(self, shard: int, slot: int) -> bytes:
        if not (0 <= shard < len(self.raw) and 0 <= slot < self.counts[shard]):
            raise PreviousDamaged  # the catalog points outside its shards
        width = self.width
        return self.raw[shard][slot * width : (slot + 1) * width]


def by_digest(db: sqlite3.Connection, digests: Digests, match: Match) -> None:
    """Left-over records take, in key order, unclaimed images of the same digest; the claims
    go to disk (a renamed folder makes every record one)."""
    starts = np.concatenate([[0], np.cumsum(digests.counts)]).astype(np.int64)
    taken_anywhere = np.zeros(int(starts[-1]), bool)
    triples = np.fromfile(match.claims_path, np.int64).reshape(-1, 3)
    taken_anywhere[starts[triples[:, 1]] + triples[:, 2]] = True
    claimed = [taken_anywhere[starts[s] : starts[s + 1]] for s in range(len(digests.counts))]
    db.execute("CREATE TABLE left_old (shard INT, slot INT, hash BLOB)")
    width = digests.width
    for shard, taken in enumerate(claimed):
        raw = digests.raw[shard]
        db.executemany(
            "INSERT INTO left_old VALUES (?, ?, ?)",
            (
                (shard, slot, raw[slot * width : (slot + 1) * width])
                for slot in np.flatnonzero(~taken).tolist()
            ),
        )
    found = db.execute(
        "WITH n AS (SELECT ordinal, hash, size, ROW_NUMBER() OVER (PARTITION BY hash "
        "  ORDER BY ordinal) AS r FROM left_new), "
        "s AS (SELECT shard, slot, hash, ROW_NUMBER() OVER (PARTITION BY hash "
        "  ORDER BY shard, slot) AS r FROM left_old) "
        "SELECT n.ordinal, s.shard, s.slot, n.size FROM n JOIN s ON s.hash = n.hash AND s.r = n.r "
        "ORDER BY n.ordinal"
    )
    claims = array("q")
    with open(match.by_digest_path, "wb") as out:
        for ordinal, shard, slot, size in found:
            match.live[shard] = match.live.get(shard, 0) + 1
            match.claimed_bytes[shard] = match.claimed_bytes.get(shard, 0) + size
            claims.extend((ordinal, shard, slot))
            if len(claims) >= 3 * _FLUSH:
                claims.tofile(out)
                del claims[:]
        claims.tofile(out)


def read_triples(path: Path) -> Iterator[tuple[int, int, int]]:
    with open(path, "rb") as handle:
        while block := handle.read(24 * _FLUSH):
            values = array("q")
            values.frombytes(block)
            yield from zip(values[0::3], values[1::3], values[2::3], strict=True)
