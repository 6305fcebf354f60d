"""Write a pack: shards (new, or carried over from the previous version), the catalog as Parquet parts, one publish."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pyarrow as pa
import pyarrow.compute as pc

from imgpack import __version__
from imgpack.format import tables as cat
from imgpack.format.codec import (
    CATALOG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    encode_header,
    encode_index,
)
from imgpack.util.outputs import publish, remove_stale_temporaries, temporary_path
from imgpack.write.catalog import CATALOG_BATCH, CatalogRows
from imgpack.write.layout import default_map_size, shard_name
from imgpack.write.lmdbfile import LmdbFileWriter, check_key, check_keys
from imgpack.write.shard import ShardWriter

__all__ = ["PackAssembler", "shard_name", "link_or_copy"]

_ONLY = encode_index(0)  # the key of a sub-database's single value (props, aliases)


class PackAssembler:
    """Finished shard files in, catalog rows in key order, then one publish of the whole pack.

    A pack of one new shard is published as one LMDB file holding catalog and images; otherwise
    `out` becomes a folder of `catalog.lmdb` and `shard-<digest>.lmdb` files.
    """

    def __init__(self, out: Path, hash_algorithm: str, batch_bytes: int = 32 << 20):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        self.staging = temporary_path(self.out)
        if self.staging.is_dir():
            shutil.rmtree(self.staging)
        self.staging.unlink(missing_ok=True)
        self.staging.mkdir()
        (self.staging / "parts").mkdir()
        self.hash_algorithm = hash_algorithm
        self.digest_size = hashlib.new(hash_algorithm).digest_size
        self.batch_bytes = batch_bytes
        self.shards: list[dict[str, Any]] = []
        self.carried = 0  # shards taken over from the previous version as they were
        self._files: list[Path] = []
        self._rows = CatalogRows(self.staging / "parts")
        self._aliases: list[tuple[str, str]] = []
        self.classes: set[str] = set()
        self.count = 0
        self.total_bytes = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()

    def add_shard(self, path: Path, entry: dict[str, Any], carried: bool = False) -> int:
        """Take a finished shard file (linked, never modified); returns its shard number."""
        name = shard_name(entry["sha256"])
        target = self.staging / name
        if not target.exists():  # equal shards share one file
            link_or_copy(Path(path), target)
        self._files.append(target)
        self.shards.append({"name": name, **entry})
        self.carried += carried
        return len(self.shards) - 1

    def add_row(self, row: tuple, extra: dict[str, Any]) -> None:
        """The next record's catalog row (keys ascending), in the catalog schema's order: key,
        label, split, format, width, height, size, shard, slot."""
        check_key(row[0])
        self._rows.append(row, extra)
        self.classes.add(row[1])
        self.total_bytes += row[6]
        self.count += 1

    def add_rows(self, columns: list, extras: list[dict[str, Any]]) -> None:
        """Many rows at once, as columns in `add_row`'s order."""
        for key in columns[0]:
            check_key(key)
        self._rows.extend(columns, extras)
        self.classes.update(columns[1])
        self.total_bytes += sum(columns[6])
        self.count += len(extras)

    def add_table(self, table: pa.Table) -> None:
        """Many rows at once, as a table of the catalog's core columns (no extra columns)."""
        check_keys(table.column("key"))
        self._rows.extend_table(table)
        self.classes.update(pc.unique(table.column("label")).to_pylist())
        self.total_bytes += pc.sum(table.column("size")).as_py() or 0
        self.count += table.num_rows

    def add_alias(self, alias: str, key: str) -> None:
        """`alias` names the same bytes as the record stored under `key`."""
        check_key(alias)
        self._aliases.append((alias, key))

    def _write_catalog(self, file: LmdbFileWriter, header: dict[str, Any]) -> dict[str, Any]:
        """Catalog parts, aliases and header into `file`; returns the header as written."""
        file.create(b"catalog")
        parts = 0
        for parts, raw in enumerate(self._rows.encoded_parts(), 1):
            file.put(b"catalog", encode_index(parts - 1), raw)
        aliases = sorted(self._aliases, key=lambda pair: pair[0].encode())
        table = pa.table(
            [
                pa.array([a for a, _ in aliases], pa.string()),
                pa.array([k for _, k in aliases], pa.string()),
            ],
            schema=cat.alias_schema(),
        )
        file.put(b"aliases", _ONLY, cat.encode_table(table))
        header = {**header, "catalog_parts": parts}
        file.put(b"header", HEADER_KEY, encode_header(header))
        return header

    @property
    def _catalog_batch(self) -> int:
        # Catalog parts are few and large: a smaller transaction keeps a million records' catalog
        # from being held whole (as Python bytes and dirty pages) until one commit.
        return min(self.batch_bytes, CATALOG_BATCH)

    def header(self, **fields: Any) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "count": self.count,
            "aliases": len(self._aliases),
            "hash_algorithm": self.hash_algorithm,
            "imgpack_version": __version__,
            "params_digest": "",
            "manifest_digest": "",
            "total_bytes": self.total_bytes,
            "classes": sorted(self.classes),
            "shards": self.shards,
            "catalog_parts": 0,  # set by _write_catalog
            **fields,
        }

    def publish(
        self, before_publish: Callable[[Path], None] | None = None, **header_fields: Any
    ) -> dict[str, Any]:
        """Write the catalog, run `before_publish(path)` on the pack, move it to `out`."""
        if not self.shards:  # no record at all: an empty one-file pack
            empty = self.staging / ".empty.partial"
            shard = ShardWriter(empty, self.out, default_map_size(0), self.batch_bytes)
            shard.seal(self.hash_algorithm)
            shard.file.close()
            self.add_shard(empty, {"count": 0, "image_bytes": 0, "file_bytes": 0, "sha256": ""})
        single = len(self.shards) == 1 and not self.carried
        if single:
            # The one shard becomes the pack: its catalog is appended to a private copy of it.
            lone = self.staging.with_name(self.staging.name + ".lmdb")
            shutil.copyfile(self._files[0], lone)
            self.shards[0] = {**self.shards[0], "name": "", "file_bytes": 0, "sha256": ""}
            file = LmdbFileWriter(
                lone, _map_size_of(lone), self.out, self._catalog_batch, existing=True
            )
            try:
                header = self._write_catalog(file, self.header(**header_fields))
                file.close()
            except BaseException:
                file.abort()
                raise
            shutil.rmtree(self.staging)
            self.staging = finished = lone
        else:
            catalog = LmdbFileWriter(
                self.staging / CATALOG_FILE, default_map_size(0), self.out, self._catalog_batch
            )
            try:
                header = self._write_catalog(catalog, self.header(**header_fields))
                catalog.close()
            except BaseException:
                catalog.abort()
                raise
            shutil.rmtree(self.staging / "parts")
            finished = self.staging
        if before_publish is not None:
            before_publish(finished)
        publish(finished, self.out)
        self.staging = None
        return header

    def abort(self) -> None:
        if self.staging is not None:
            if self.staging.is_dir():
                shutil.rmtree(self.staging, ignore_errors=True)
            else:
                self.staging.unlink(missing_ok=True)
            self.staging = None


def _map_size_of(path: Path) -> int:
    """The map size an LMDB file records in its meta page: reopening with it keeps the bytes stable."""
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    try:
        return env.info()["map_size"]
    finally:
        env.close()


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (no bytes written), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
