"""Validate: the pack checked read-only against the manifest, shard by shard and record by record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgpack.check.columns import all_equal
from imgpack.check.report import PROBLEM_KINDS, raise_on_mismatch, validation_report
from imgpack.check.shards import check_shard
from imgpack.check.validated import ValidatedShards
from imgpack.errors import ValidationError
from imgpack.ingest.manifest import read_manifest
from imgpack.parallel.workers import ordered_map, worker_pool
from imgpack.params import ValidateParams
from imgpack.read.pack import Pack
from imgpack.util.cores import resolve_workers
from imgpack.util.jsonfiles import write_json
from imgpack.util.progress import progress


def validate(
    pack_path: str | Path,
    manifest: str | Path,
    report_out: str | Path | None = None,
    params: ValidateParams | None = None,
    remember: bool = True,
    workers: int | str = 0,
) -> dict[str, Any]:
    """Compare counts, keys, recomputed hashes and labels; raise ValidationError on any mismatch.

    Images are hashed again in every shard this machine has not validated before; a shard file
    validated earlier and unchanged since (same name, digest, size, inode and mtime: carried over
    from the last version) is checked by its recorded digests. `remember`: record the shards
    checked here as validated (not for a pack at a temporary path).
    """
    params = params or ValidateParams()
    header, rows = read_manifest(Path(manifest))
    problems: dict[str, list[str]] = {kind: [] for kind in PROBLEM_KINDS}
    validated = ValidatedShards()
    with Pack(pack_path) as pack:
        algorithm = pack.header["hash_algorithm"]
        if algorithm != header["hash_algorithm"]:
            raise ValidationError(
                f"{pack_path} uses {algorithm} but the manifest {header['hash_algorithm']}; rebuild"
            )
        folder = pack.catalog_path != pack.path
        shards = list(zip(pack.shard_paths, pack.header["shards"], strict=True))
        known = {
            n for n, (path, entry) in enumerate(shards) if folder and validated.checked(path, entry)
        }
        damaged = _hash_shards(pack, algorithm, known, workers)
        if not damaged and all_equal(pack, Path(manifest)):
            checked = len(pack)  # the columnar check: every record agrees, none is missing
        else:
            checked = _compare_records(pack, rows, header["count"], damaged, problems)
        report = validation_report(
            manifest_records=header["count"],
            pack_records=len(pack),
            pack_aliases=pack.header["aliases"],
            checked=checked,
            shards=len(shards),
            shards_known=len(known),
            problems=problems,
            max_listed=params.max_listed,
        )
        if report["ok"] and folder and remember:
            for number, (path, entry) in enumerate(shards):
                if number not in known:
                    validated.add(path, entry)
        validated.close()
    if report_out is not None:
        write_json(Path(report_out), report)
    raise_on_mismatch(report, problems, pack_path, manifest, params.max_listed)
    return report


def _hash_shards(pack: Pack, algorithm: str, known: set[int], workers) -> set[tuple[int, int]]:
    """Every shard not `known`: its images hashed again against its props, a shard per worker
    task; returns the (shard, slot) of every image that does not match."""
    tasks = [
        (number, (str(path), algorithm))
        for number, path in enumerate(pack.shard_paths)
        if number not in known
    ]
    damaged: set[tuple[int, int]] = set()
    with worker_pool(min(resolve_workers(workers), max(1, len(tasks)))) as pool:
        for number, bad in ordered_map(check_shard, progress(tasks, "validate"), pool):
            damaged.update((number, slot) for slot in bad)
    return damaged


def _compare_records(pack: Pack, rows, count: int, damaged: set, problems: dict) -> int:
    """The manifest's rows against the catalog, record by record, naming every offender;
    returns how many manifest rows were found in the pack."""
    checked = 0
    aliases = dict(pack.aliases())
    records = _stored(pack)
    shard_of = None
    record = next(records, None)
    for row in progress(rows, "validate", count):
        key = row["key"]
        while record is not None and record["key"] < key:
            problems["extra"].append(record["key"])
            record = next(records, None)
        if record is not None and record["key"] == key:
            meta, record = record, next(records, None)
        elif key in aliases:  # the record it names is checked once, under its own key
            target = pack.index_of(aliases.pop(key))
            meta = pack.meta(target)
            if shard_of is None:
                where = pack.catalog.table(["shard", "slot"])
                shard_of = where.column("shard").to_numpy(), where.column("slot").to_numpy()
            meta["shard"], meta["slot"] = int(shard_of[0][target]), int(shard_of[1][target])
        else:
            problems["missing"].append(key)
            continue
        checked += 1
        if meta["hash"] != row["hash"] or (meta["shard"], meta["slot"]) in damaged:
            problems["hash_mismatch"].append(key)
        if meta["label"] != row["label"]:
            problems["label_mismatch"].append(key)
        if _meta_differs(meta, row):  # an alias's too: it reads back its copy's
            problems["meta_mismatch"].append(key)
    while record is not None:
        problems["extra"].append(record["key"])
        record = next(records, None)
    problems["extra"].extend(sorted(aliases))
    return checked


def _stored(pack: Pack) -> Iterator[dict[str, Any]]:
    """The metadata, with shard and slot, of every record in key order, a part at a time."""
    catalog = pack.catalog
    for _, table in catalog.tables([*catalog.columns, "shard", "slot"]):
        for batch in table.to_batches(max_chunksize=2048):  # Python rows for a batch at a time
            for values in batch.to_pylist():
                meta = catalog.meta_dict(values)
                meta["shard"], meta["slot"] = values["shard"], values["slot"]
                yield meta


def _meta_differs(meta: dict[str, Any], row: dict[str, Any]) -> bool:
    fields = ("hash", "size", "format", "width", "height")
    if any(meta[f] != row[f] for f in fields):
        return True
    # The catalog has every extra column for every record (null where a row had none).
    names = meta["extra"].keys() | row["extra"].keys()
    return any(meta["extra"].get(n) != row["extra"].get(n) for n in names)
