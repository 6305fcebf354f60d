"""`imgpack compact`: rewrite a pack grown version by version into the layout a fresh build gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgpack.errors import PackCorruptError
from imgpack.ingest.probe import digest
from imgpack.read.pack import Pack
from imgpack.util.locks import writer_lock
from imgpack.util.progress import progress
from imgpack.write.builder import PackBuilder
from imgpack.write.layout import ShardLayout

__all__ = ["compact_pack"]


def compact_pack(
    pack_path: str | Path, out: str | Path | None = None, shard_mb: float | None = None
) -> dict[str, Any]:
    """Write the records of `pack_path`, checked against their digests, in key order into new
    shards cut as a fresh build cuts them, and publish at `out` (default: in place of the pack,
    as a new version; the old files are never modified). Returns the new header."""
    source = Path(pack_path)
    out = Path(out) if out is not None else source
    with writer_lock(out), Pack(source) as pack:
        header = pack.header
        layout = ShardLayout.recorded(header)
        if shard_mb is not None:
            layout = ShardLayout.for_shard_mb(shard_mb, layout.batch_bytes)
        algorithm = header["hash_algorithm"]
        catalog = pack.catalog
        extras = catalog.extra_columns
        builder = PackBuilder(out, algorithm, layout)
        with builder:
            images = pack.iter_data()
            rows = (row for _, table in catalog.tables() for row in table.to_pylist())
            for row in progress(rows, "compact", len(pack)):
                data = next(images)
                if digest(data, algorithm) != row["hash"].hex():
                    raise PackCorruptError(
                        f"{source}: record {row['key']} does not match its digest; "
                        "fetch the pack again (dvc pull) before compacting it"
                    )
                meta = catalog.meta_dict(row)
                builder.add(
                    row["key"],
                    data,
                    digest=row["hash"],
                    format=row["format"],
                    width=row["width"],
                    height=row["height"],
                    label=row["label"],
                    split=row["split"],
                    extra={name: meta["extra"][name] for name in extras},
                )
            for alias, key in pack.aliases():
                builder.add_alias(alias, key)
            fields = {k: header[k] for k in ("params_digest", "manifest_digest") if k in header}
            fields["layout_params"] = layout.params_text
            return builder.publish(**fields)
