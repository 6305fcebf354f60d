"""Write a format-2 pack: images cut into shards by size, the catalog as Parquet parts, one publish."""

from __future__ import annotations

import hashlib
import os
import shutil
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from imgpack import __version__
from imgpack.errors import InputError
from imgpack.format import catalog as cat
from imgpack.format.codec import (
    CATALOG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    SHARD_FORMAT,
    encode_header,
    encode_index,
    encode_shard_header,
)
from imgpack.manifest import file_digest
from imgpack.writer import (
    LmdbFileWriter,
    check_key,
    default_map_size,
    publish,
    remove_stale_temporaries,
    temporary_path,
)

__all__ = ["PackBuilder", "shard_name"]

_SHARD_HEADER_KEY = b"shard"
_ONLY = encode_index(0)  # the key of a sub-database's single value (props, aliases)


def shard_name(sha256_hex: str) -> str:
    """A shard's file name in a folder pack: named by its content, so equal shards share a name."""
    return f"shard-{sha256_hex[:16]}.lmdb"


class _ShardWriter:
    """One shard: images under their slot, and their properties (digest, size, format, w, h)."""

    def __init__(self, path: Path, error_path: Path, map_size: int, batch_bytes: int, digest_size):
        self.file = LmdbFileWriter(path, map_size, error_path, batch_bytes)
        self.file.create(b"images")
        self.digest_size = digest_size
        self.count = 0
        self.image_bytes = 0
        self.digests = bytearray()
        self.sizes = array("q")
        self.widths = array("i")
        self.heights = array("i")
        self.formats: list[str] = []

    def add(self, data: bytes, digest: bytes, fmt: str, width: int, height: int) -> int:
        slot = self.count
        self.file.put(b"images", encode_index(slot), data)
        self.digests += digest
        self.sizes.append(len(data))
        self.widths.append(width)
        self.heights.append(height)
        self.formats.append(fmt)
        self.count += 1
        self.image_bytes += len(data)
        return slot

    def seal(self, hash_algorithm: str) -> None:
        """Write the shard's header and property table after its images."""
        props = pa.table(
            [
                pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(self.digest_size),
                    self.count,
                    [None, pa.py_buffer(bytes(self.digests))],
                ),
                pa.array(self.sizes, pa.int64()),
                pa.array(self.formats, pa.string()),
                pa.array(self.widths, pa.int32()),
                pa.array(self.heights, pa.int32()),
            ],
            schema=cat.props_schema(self.digest_size),
        )
        self.file.put(b"props", _ONLY, cat.encode_table(props))
        header = {
            "format": SHARD_FORMAT,
            "format_version": FORMAT_VERSION,
            "count": self.count,
            "hash_algorithm": hash_algorithm,
            "image_bytes": self.image_bytes,
        }
        self.file.put(b"shard", _SHARD_HEADER_KEY, encode_shard_header(header))


class _CatalogRows:
    """Catalog rows of the current part, column by column; full parts go to Parquet files."""

    def __init__(self, folder: Path, digest_size: int):
        self.folder = folder
        self.digest_size = digest_size
        self.parts: list[Path] = []
        self.schemas: list[pa.Schema] = []
        self._reset()

    def _reset(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in cat.catalog_schema(1).names}
        self.digests = bytearray()
        self.extras: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any], digest: bytes, extra: dict[str, Any]) -> None:
        for name, values in self.columns.items():
            if name != "hash":
                values.append(row[name])
        self.digests += digest
        self.extras.append(extra)
        if len(self.extras) >= cat.PART_ROWS:
            self.flush()

    def flush(self) -> None:
        count = len(self.extras)
        if not count:
            return
        schema = cat.catalog_schema(self.digest_size)
        arrays = []
        for field in schema:
            if field.name == "hash":
                arrays.append(
                    pa.FixedSizeBinaryArray.from_buffers(
                        field.type, count, [None, pa.py_buffer(bytes(self.digests))]
                    )
                )
            else:
                arrays.append(pa.array(self.columns[field.name], field.type))
        fields = list(schema)
        for name in sorted({k for extra in self.extras for k in extra}):
            field, values = cat.extra_array(name, [extra.get(name) for extra in self.extras])
            fields.append(field)
            arrays.append(values)
        table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
        path = self.folder / f"part-{len(self.parts):06d}.parquet"
        path.write_bytes(cat.encode_table(table))
        self.parts.append(path)
        self.schemas.append(table.schema)
        self._reset()

    def encoded_parts(self):
        """Every part as Parquet bytes, cast to one schema shared by all parts."""
        self.flush()
        unified = cat.unify_parts(self.schemas)
        full = cat.catalog_schema(self.digest_size)
        for path, schema in zip(self.parts, self.schemas, strict=True):
            raw = path.read_bytes()
            if not schema.equals(unified, check_metadata=True):
                table = cat.decode_table(raw, full, str(path))
                for field in unified:
                    if field.name not in table.column_names:
                        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
                raw = cat.encode_table(cat.conform(table, unified))
            yield raw


class PackBuilder:
    """Add records in key order; `publish()` writes the catalog and moves the pack into place.

    Records are cut into shards of about `shard_bytes` of image bytes, in the order added. A pack
    that never needed a second shard is published as one LMDB file holding catalog and images;
    otherwise `out` becomes a folder of `catalog.lmdb` and `shard-<digest>.lmdb` files.
    """

    def __init__(
        self,
        out: Path,
        hash_algorithm: str,
        shard_bytes: int,
        map_size: int = 0,
        batch_bytes: int = 32 << 20,
    ):
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
        self.shard_bytes = shard_bytes
        self.map_size = map_size or default_map_size(shard_bytes)
        self.batch_bytes = batch_bytes
        self.shards: list[dict[str, Any]] = []
        self._shard: _ShardWriter | None = None
        self._rows = _CatalogRows(self.staging / "parts", self.digest_size)
        self._aliases: list[tuple[str, str]] = []
        self.classes: set[str] = set()
        self.count = 0
        self.total_bytes = 0
        self.grown = 0

    def __enter__(self) -> PackBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()

    def add(
        self,
        key: str,
        data: bytes,
        *,
        digest: bytes,
        format: str,  # noqa: A002 - the catalog column's name
        width: int,
        height: int,
        label: str,
        split: str,
        extra: dict[str, Any],
    ) -> int:
        """Store the next record (keys ascending); returns its index."""
        check_key(key)
        if len(digest) != self.digest_size:
            raise InputError(f"{key}: a {self.hash_algorithm} digest has {self.digest_size} bytes")
        shard = self._shard
        if shard is not None and shard.count and shard.image_bytes + len(data) > self.shard_bytes:
            self._finish_shard()
            shard = None
        if shard is None:
            path = self.staging / f".shard-{len(self.shards)}.partial"
            shard = self._shard = _ShardWriter(
                path, self.out, self.map_size, self.batch_bytes, self.digest_size
            )
        slot = shard.add(data, digest, format, width, height)
        row = {
            "key": key,
            "label": label,
            "split": split,
            "format": format,
            "width": width,
            "height": height,
            "size": len(data),
            "shard": len(self.shards),
            "slot": slot,
        }
        self._rows.append(row, digest, extra)
        self.classes.add(label)
        self.total_bytes += len(data)
        self.count += 1
        return self.count - 1

    def add_alias(self, alias: str, key: str) -> None:
        """`alias` names the same bytes as the record stored under `key`."""
        check_key(alias)
        self._aliases.append((alias, key))

    def _finish_shard(self) -> None:
        shard = self._shard
        shard.seal(self.hash_algorithm)
        path = shard.file.close()
        self.grown += shard.file.grown
        sha = file_digest(path)
        name = shard_name(sha)
        os.replace(path, self.staging / name)
        self._add_entry(shard, name, os.path.getsize(self.staging / name), sha)
        self._shard = None

    def _add_entry(self, shard: _ShardWriter, name: str, file_bytes: int, sha256: str) -> None:
        """The header's entry for a finished shard (name "" when the pack is one file)."""
        self.shards.append(
            {
                "name": name,
                "count": shard.count,
                "image_bytes": shard.image_bytes,
                "file_bytes": file_bytes,
                "sha256": sha256,
            }
        )

    def _write_catalog(self, file: LmdbFileWriter, header: dict[str, Any]) -> dict[str, Any]:
        """Catalog parts, aliases and header into `file`; returns the header as written."""
        file.create(b"catalog")
        parts = 0
        for parts, raw in enumerate(self._rows.encoded_parts(), 1):
            file.put(b"catalog", encode_index(parts - 1), raw)
        aliases = sorted(self._aliases, key=lambda pair: pair[0].encode())
        table = pa.table(
            [pa.array([a for a, _ in aliases], pa.string()), pa.array([k for _, k in aliases])],
            schema=cat.alias_schema(),
        )
        file.put(b"aliases", _ONLY, cat.encode_table(table))
        header = {**header, "catalog_parts": parts}
        file.put(b"header", HEADER_KEY, encode_header(header))
        return header

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
        """Finish the pack, run `before_publish(path)` on it, move it to `out`; returns the header."""
        single = not self.shards
        if single and self._shard is None:  # no record at all: an empty single-file pack
            self._shard = _ShardWriter(
                self.staging / ".shard-0.partial",
                self.out,
                self.map_size,
                self.batch_bytes,
                self.digest_size,
            )
        if single:
            shard = self._shard
            shard.seal(self.hash_algorithm)
            self._add_entry(shard, "", 0, "")
            header = self._write_catalog(shard.file, self.header(**header_fields))
            finished = shard.file.close()
            self.grown += shard.file.grown
            self._shard = None
        else:
            if self._shard is not None:
                self._finish_shard()
            catalog = LmdbFileWriter(
                self.staging / CATALOG_FILE, default_map_size(0), self.out, self.batch_bytes
            )
            try:
                header = self._write_catalog(catalog, self.header(**header_fields))
                catalog.close()
            except BaseException:
                catalog.abort()
                raise
            finished = self.staging
        shutil.rmtree(self.staging / "parts")
        if single:
            # The one file is the pack: move it out of the staging folder, beside `out`.
            lone = self.staging.with_name(self.staging.name + ".lmdb")
            os.replace(finished, lone)
            shutil.rmtree(self.staging)
            self.staging = finished = lone
        if before_publish is not None:
            before_publish(finished)
        publish(finished, self.out)
        self.staging = None
        return header

    def abort(self) -> None:
        if self._shard is not None:
            self._shard.file.abort()
            self._shard = None
        if self.staging is not None:
            if self.staging.is_dir():
                shutil.rmtree(self.staging, ignore_errors=True)
            else:
                self.staging.unlink(missing_ok=True)
            self.staging = None
