"""PackBuilder: records added one by one in this process, cut by the shared shard layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgpack.errors import InputError
from imgpack.write.assembler import PackAssembler
from imgpack.write.layout import ShardLayout
from imgpack.write.lmdbfile import check_key
from imgpack.write.shard import ShardWriter, shard_entry


class PackBuilder:
    """Add records with their bytes in key order, in this process; `publish()` as the assembler's.

    Records are cut into shards of about `shard_bytes` of image bytes, in the order added: the
    same cut and the same bytes as a planned build of the same records (see `imgpack.write.pack_plan`).
    """

    def __init__(
        self,
        out: Path,
        hash_algorithm: str,
        layout: ShardLayout,
    ):
        self.assembler = PackAssembler(out, hash_algorithm, layout.batch_bytes)
        self.layout = layout
        self._shard: ShardWriter | None = None
        self.grown = 0  # times a shard's map size was doubled

    def __enter__(self) -> PackBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()

    @property
    def count(self) -> int:
        return self.assembler.count

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
        assembler = self.assembler
        check_key(key)
        if len(digest) != assembler.digest_size:
            raise InputError(
                f"{key}: a {assembler.hash_algorithm} digest has {assembler.digest_size} bytes"
            )
        shard = self._shard
        if shard is not None and self.layout.full(shard.count, shard.image_bytes, len(data)):
            self._finish_shard()
            shard = None
        if shard is None:
            path = assembler.staging / f".shard-{len(assembler.shards)}.partial"
            shard = self._shard = ShardWriter(
                path, assembler.out, self.layout.map_size, assembler.batch_bytes
            )
        slot = shard.add(data, digest, format, width, height)
        row = (key, label, split, format, width, height, len(data), len(assembler.shards), slot)
        assembler.add_row(row, extra)
        return assembler.count - 1

    def add_alias(self, alias: str, key: str) -> None:
        self.assembler.add_alias(alias, key)

    def _finish_shard(self) -> None:
        shard = self._shard
        shard.seal(self.assembler.hash_algorithm)
        path = shard.file.close()
        self.grown += shard.file.grown
        self.assembler.add_shard(path, shard_entry(path, shard.count, shard.image_bytes))
        path.unlink()
        self._shard = None

    def publish(
        self, before_publish: Callable[[Path], None] | None = None, **header_fields: Any
    ) -> dict[str, Any]:
        if self._shard is not None:
            self._finish_shard()
        return self.assembler.publish(before_publish, **header_fields)

    def abort(self) -> None:
        if self._shard is not None:
            self._shard.file.abort()
            self._shard = None
        self.assembler.abort()
