"""Stage pack: original image bytes into size-cut shards and their metadata into the catalog."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from imgpack.errors import InputError
from imgpack.manifest import dumps, file_digest, read_manifest
from imgpack.packwriter import PackBuilder
from imgpack.parallel import ordered_batch_map
from imgpack.params import PackParams, load_params
from imgpack.probe import digest, read_file
from imgpack.progress import progress
from imgpack.splits import assign_split
from imgpack.stages.common import run_stage

__all__ = ["pack"]


def pack(
    manifest: str | Path,
    folder: str | Path,
    out: str | Path,
    params: PackParams | None = None,
    before_publish: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Write the pack for `manifest` (images read from `folder`) to `out`; returns its header.

    `before_publish(tmp)` may check the finished file and raise to keep it from being published.
    """
    params = params or PackParams()
    header, rows = read_manifest(Path(manifest))
    folder = Path(folder)
    algorithm = header["hash_algorithm"]
    read = partial(_read_batch, folder=str(folder), algorithm=algorithm)
    builder = PackBuilder(
        Path(out),
        algorithm,
        shard_bytes=params.shard_bytes,
        map_size=params.initial_map_size_mb << 20,
        batch_bytes=params.batch_mb << 20,
    )
    with builder:
        loaded = ordered_batch_map(read, progress(rows, "pack", header["count"]), params.workers)
        for row, (data, hash_hex) in loaded:
            if data is None or len(data) != row["size"] or hash_hex != row["hash"]:
                raise InputError(
                    f"{folder / row['key']} changed since ingest (size or {algorithm} differs); "
                    "rerun the ingest stage"
                )
            if params.duplicates == "dedupe" and row["duplicate_of"]:
                builder.add_alias(row["key"], row["duplicate_of"])
                continue
            builder.add(
                row["key"],
                data,
                digest=bytes.fromhex(hash_hex),
                format=row["format"],
                width=row["width"],
                height=row["height"],
                label=row["label"],
                split=_split(row["key"], params),
                extra=row["extra"],
            )
        return builder.publish(
            before_publish,
            params_digest=_params_digest(params),
            manifest_digest=file_digest(Path(manifest)),
        )


def _split(key: str, params: PackParams) -> str:
    try:
        return assign_split(key, params.split_seed, params.splits)
    except ValueError:
        raise InputError(
            f"{key}: pack.splits is 'folders' but its top folder names no split; rerun the "
            "ingest stage (it reports such files as unknown_split)"
        ) from None


def _params_digest(params: PackParams) -> str:
    """Digest of the params that shape the pack's bytes (the thread count does not)."""
    shaping = {k: v for k, v in dataclasses.asdict(params).items() if k != "workers"}
    return hashlib.sha256(dumps(shaping).encode()).hexdigest()


def _read_batch(rows: list[dict], folder: str, algorithm: str) -> list[tuple[bytes | None, str]]:
    out = []
    for row in rows:
        try:
            data = read_file(os.path.join(folder, row["key"]))
        except OSError:
            out.append((None, ""))
            continue
        out.append((data, digest(data, algorithm)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgpack.stages.pack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m imgpack.stages.pack --params params.yaml --out data/packed/images.lmdb",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/interim/manifest.jsonl")
    parser.add_argument("--out", default="data/packed/images.lmdb")
    args = parser.parse_args(argv)

    def run() -> None:
        folder = load_params(args.params, "ingest").folder
        pack(args.manifest, folder, args.out, load_params(args.params, "pack"))

    return run_stage(run)


if __name__ == "__main__":
    raise SystemExit(main())
