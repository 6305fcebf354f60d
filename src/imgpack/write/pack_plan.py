"""Plan a version's shards: which shards of the previous version carry over, what new shards hold."""

# Records are matched to the previous version's stored images by key and digest, then by digest
# alone (a renamed file costs nothing). A previous shard is carried over, byte for byte, while its
# live share is at least `pack.compact_below`; every other record is stored anew, in key order, in
# new shards cut by size exactly as a from-scratch build cuts them.

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.check.validated import ValidatedShards
from imgpack.errors import ImgpackError, InputError
from imgpack.ingest.spool import read_index, spooled_at
from imgpack.params import PackParams
from imgpack.util.digests import file_digest
from imgpack.util.urls import join
from imgpack.write.layout import ShardLayout
from imgpack.write.match_columns import match_records
from imgpack.write.matching import Match
from imgpack.write.pack_shard import ShardTask, Source

__all__ = ["Previous", "load_previous", "damaged_shards", "match_previous", "Planner"]


@dataclass
class Previous:
    """The previous version's shards: paths and header entries, and which survive."""

    path: Path
    shard_paths: list[Path]
    entries: list[dict[str, Any]]
    params_digest: str | None = None  # of the params it was built with
    kept: dict[int, int] = field(default_factory=dict)  # old shard number -> new shard number
    live: dict[int, int] = field(default_factory=dict)  # old shard number -> records still in it


def load_previous(out: Path, algorithm: str, layout: str) -> Previous | None:
    """The pack at `out`, if it is a folder pack of the same digest and shard layout (shard size,
    map size, transaction size). A changed layout param means a fresh layout."""
    if not out.is_dir():
        return None  # nothing there, or one file: small enough to rebuild whole
    from imgpack.read.pack import Pack

    try:
        with Pack(out) as pack:
            if (
                pack.header["hash_algorithm"] != algorithm
                or pack.header.get("layout_params") != layout
            ):
                return None
            shards = list(pack.header["shards"])
            return Previous(out, pack.shard_paths, shards, pack.header.get("params_digest"))
    except ImgpackError:
        return None  # a damaged previous version is not a source: build from scratch


def damaged_shards(paths: list[Path], entries: list[dict[str, Any]]) -> list[str]:
    """Names of the previous version's shard files whose bytes are not what their header entry
    records. A shard this machine validated, unchanged since (same size, inode and mtime), is
    trusted; any other is hashed whole: a flipped byte leaves the size as it was."""
    validated = ValidatedShards()
    try:
        return [
            entry["name"]
            for path, entry in zip(paths, entries, strict=True)
            if not validated.checked(path, entry) and not _intact(path, entry)
        ]
    finally:
        validated.close()


def _intact(path: Path, entry: dict[str, Any]) -> bool:
    try:
        return os.path.getsize(path) == entry["file_bytes"] and file_digest(path) == entry["sha256"]
    except OSError:
        return False


def match_previous(
    previous: Previous,
    manifest: Path,
    dedupe: bool,
    compact_below: float,
    db: sqlite3.Connection,
    scratch: Path,
) -> Match | None:
    """Claim a previous image for each record that can have one (see `imgpack.write.matching`) and
    decide which shards carry over; None when the previous version turns out damaged."""
    from imgpack.read.pack import Pack

    try:
        with Pack(previous.path) as pack:
            match = match_records(pack, manifest, dedupe, db, scratch)
    except InputError:
        raise  # the manifest's fault: refused, not built around
    except ImgpackError:
        return None
    if match is None:
        return None
    previous.live = dict(match.live)
    for number, entry in enumerate(previous.entries):
        live = previous.live.get(number, 0)
        if live and live >= compact_below * entry["count"]:
            previous.kept[number] = len(previous.kept)
    return match


class Planner:
    """Walk the manifest in key order, give each record its (shard, slot), and cut new shards."""

    def __init__(
        self,
        out: Path,
        folder: str,
        algorithm: str,
        params: PackParams,
        layout: ShardLayout,
        store: Path,
        previous: Previous | None,
        spool: Path | None,
    ):
        self.out, self.folder, self.algorithm = out, folder, algorithm
        self.params, self.layout, self.store = params, layout, store
        self.previous = previous
        self.first_new = len(previous.kept) if previous else 0
        self.spool = spool
        # every manifest row has its entry, looked up by the row's ordinal
        self._spool_index = read_index(str(spool)) if spool else None
        self._sources: list[Source] = []
        self._bytes = 0
        self.new_shards = 0

    def close(self) -> None:
        self._spool_index = None

    def place(self, ordinal: int, row: dict[str, Any], claim: tuple[int, int] | None):
        """(shard, slot) of one stored record, and the task of a shard it completed, if any."""
        previous = self.previous
        if claim is not None and claim[0] in previous.kept:
            return (previous.kept[claim[0]], claim[1]), None
        source = self._source(ordinal, row, claim)
        done = None
        if self.layout.full(len(self._sources), self._bytes, row["size"]):
            done = self.finish()
        self._sources.append(source)
        self._bytes += row["size"]
        return (self.first_new + self.new_shards, len(self._sources) - 1), done

    def _source(self, ordinal: int, row: dict[str, Any], claim) -> Source:
        meta = (row["size"], row["hash"], row["format"], row["width"], row["height"])
        index = self._spool_index
        spooled = spooled_at(index, self.spool, ordinal) if index is not None else None
        if spooled is not None:  # read by this build's ingest
            return Source("spool", spooled[0], spooled[1], *meta)
        if claim is not None:  # in a previous shard being compacted: read it from there
            return Source("shard", str(self.previous.shard_paths[claim[0]]), claim[1], *meta)
        return Source("file", join(self.folder, row["key"]), 0, *meta)

    def finish(self) -> ShardTask | None:
        """The task of the shard being filled, if it holds anything."""
        if not self._sources:
            return None
        sources = tuple(self._sources)
        images = ((s.hash, s.size, s.format, s.width, s.height) for s in sources)
        task = ShardTask(
            self.layout.resume_path(str(self.store), self.algorithm, images),
            self.algorithm,
            self.layout,
            str(self.out),
            sources,
        )
        self._sources, self._bytes = [], 0
        self.new_shards += 1
        return task
