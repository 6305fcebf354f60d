"""A fresh build in one pass: shards planned from the folder listing, each written by one worker from the raw files.

The plan cuts shards by the sizes the files' stat gives, exactly as the pack stage cuts them by the
sizes ingest measured, so the pack is the pipeline's, byte for byte. A file that does not turn out
as planned (not an image after all, or changed size) breaks only its shard's task: that part of the
plan is made again with what the task learned, and tasks planned after it are redone. Tasks commit
what they learn to the ingest cache, so a rerun after a kill finds its finished shards by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from imgpack.discover import walk_sorted
from imgpack.errors import OutputError, ValidationError
from imgpack.freshshard import FreshShardTask, write_fresh_shard
from imgpack.ingestreport import Accounting, IngestReport, trailing_note
from imgpack.labeljoin import group_of, in_split_folders, label_groups, labelled
from imgpack.manifest import file_digest
from imgpack.packwriter import PackAssembler
from imgpack.params import IngestParams, PackParams
from imgpack.progress import progress
from imgpack.shardtask import shard_path
from imgpack.splits import FOLDERS, split_assigner
from imgpack.stages.ingest import report_duplicates
from imgpack.stages.pack import layout_of, params_digest
from imgpack.state import IngestCache, file_stat
from imgpack.workers import resolve_workers, worker_errors, worker_pool
from imgpack.writer import default_map_size, scratch_dir

__all__ = ["one_pass"]

_EMPTY = ["fail", "empty", "empty file"]  # what reading a file of size 0 would tell


def one_pass(
    raw_dir: str | Path,
    out: Path,
    labels: str | Path | None,
    ingest: IngestParams,
    params: PackParams,
    report_out: str | Path | None = None,
) -> tuple[IngestReport, dict[str, Any], dict[str, Any]]:
    """Build `out` afresh from `raw_dir`; returns the ingest report, the header and the validation."""
    folder = os.path.abspath(raw_dir)
    map_size = (params.initial_map_size_mb << 20) or default_map_size(params.shard_bytes)
    store = out.absolute().with_name(f".{out.name}.resume")
    workers = resolve_workers(params.workers, "pack.workers")
    with (
        worker_pool(workers, fork=True) as pool,  # first: before any thread or handle here
        scratch_dir(out) as scratch,
        contextlib.closing(sqlite3.connect(scratch / "ingest.sqlite")) as db,
    ):
        report = IngestReport(spill=scratch)
        account = Accounting(report, ingest.on_error)
        groups = label_groups(db, labels, ingest, report) if labels else None
        lookup = (lambda path: group_of(db, path)) if labels else None
        exclude = {str(labels)} if labels else set()
        found = walk_sorted(folder, exclude)
        candidates = labelled(
            progress(found, "build"), groups, lookup, ingest, report, account, folder
        )
        if params.splits == FOLDERS:
            candidates = in_split_folders(candidates, account)
        cache = IngestCache(folder, ingest.hash, ingest.max_pixels)
        store.mkdir(parents=True, exist_ok=True)
        plan = _Plan(candidates, folder, store, out, ingest, params, map_size, cache, account)
        try:
            with PackAssembler(out, ingest.hash, params.batch_mb << 20) as assembler:
                records = _Records(scratch, assembler, report)
                with worker_errors():
                    for accepted in plan.results(pool):
                        records.add(plan, *accepted)
                plan.settle_all()
                account.check(raw_dir)
                records.report_duplicates(db)
                if report_out is not None:
                    report.write(Path(report_out))
                validation: dict[str, Any] = {}

                def check(tmp: Path) -> None:
                    validation.update(
                        _check(tmp, report.packed, assembler.shards, records.keys_digest)
                    )

                header = assembler.publish(
                    check,
                    params_digest=params_digest(params),
                    layout_params=layout_of(params, map_size),
                )
        except OutputError:
            shutil.rmtree(store, ignore_errors=True)  # a full disk wants its space back
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                store.rmdir()  # whole shards stay for the next run; an empty store goes
            raise
        finally:
            cache.seen = plan.planned
            cache.close()
        report.spill = None
    shutil.rmtree(store, ignore_errors=True)
    header = {**header, "carried_shards": 0, "new_shards": len(header["shards"])}
    return report, {**header, "compacted_shards": 0}, validation


class _Plan:
    """Candidates in key order, cut into shard tasks by size; a task that broke is planned again."""

    def __init__(self, candidates, folder, store, out, ingest, params, map_size, cache, account):
        self.candidates = iter(candidates)
        self.account, self.report = account, account.report
        self.window: deque = deque()  # (key, label, extra, stat) from ordinal `base` on
        self.base = 0
        self.known: dict[int, list] = {}  # ordinal -> outcome, where it differs from the plan
        self.cached: dict[int, list] = {}  # ordinal -> remembered outcome (resuming only)
        self.folder, self.store, self.out = folder, str(store), str(out)
        self.ingest, self.params, self.map_size, self.cache = ingest, params, map_size, cache
        self.batch_bytes = params.batch_mb << 20
        self.resuming = any(store.glob("*.lmdb"))  # a killed run's shards: find them by name
        self.planned = 0  # candidates pulled from the walk
        self.attempts = 0

    def _fill(self, ordinal: int) -> bool:
        """Pull candidates until `ordinal` is in the window; False at the end of the walk."""
        while ordinal >= self.base + len(self.window):
            batch = []
            for found, label, extra in self.candidates:
                stat = found.stat or file_stat(found.path)
                batch.append((found.key, label, extra, stat))
                if len(batch) >= 256:
                    break
            if not batch:
                return False
            first = self.base + len(self.window)
            for number, (_, _, _, stat) in enumerate(batch, first):
                if stat is not None and stat[0] == 0:
                    self.known[number] = _EMPTY
            if self.resuming:
                remembered = self.cache.lookup([b[0] for b in batch], [b[3] for b in batch])
                for number, outcome in enumerate(remembered, first):
                    if outcome is not None:
                        target = self.known if outcome[0] != "ok" else self.cached
                        target[number] = outcome
            self.window.extend(batch)
            self.planned += len(batch)
        return True

    def settle(self, end: int) -> None:
        """Forget candidates before ordinal `end` (their shard is accepted, or they are no
        image): the ones that are no image are accounted for now."""
        while self.base < end:
            key = self.window.popleft()[0]
            outcome = self.known.pop(self.base, None)
            if outcome is not None and outcome[0] != "ok":
                self.account(key, outcome[1], outcome[2])
                self.report.read += outcome is not _EMPTY
            self.cached.pop(self.base, None)
            self.base += 1

    def settle_all(self) -> None:
        while self._fill(self.base):
            self.settle(self.base + len(self.window))

    def row(self, ordinal: int):
        return self.window[ordinal - self.base]

    def next_task(self, start: int):
        """(end, ordinals, task or finished result) of the shard starting at `start`, or None."""
        ordinals, keys, sizes, stats, total = [], [], [], [], 0
        ordinal = max(start, self.base)  # candidates before `base` are settled: no image
        known, window, limit = self.known, self.window, self.params.shard_bytes
        while ordinal < self.base + len(window) or self._fill(ordinal):
            outcome = known.get(ordinal) if known else None
            if outcome is not None and outcome[0] != "ok":
                if ordinal == self.base:  # no shard will hold it, whatever the cut
                    self.settle(ordinal + 1)
                ordinal += 1
                continue
            key, _, _, stat = window[ordinal - self.base]
            size = outcome[1] if outcome else stat[0] if stat else 0
            if ordinals and (total + size > limit or len(ordinals) >= _LIMIT):
                break
            ordinals.append(ordinal)
            keys.append(key)
            sizes.append(size)
            stats.append(stat)
            total += size
            ordinal += 1
        if not ordinals:
            return None
        resumed = self._resumed(ordinals, keys, sizes) if self.resuming else None
        if resumed is not None:
            return ordinal, ordinals, resumed
        self.attempts += 1
        task = FreshShardTask(
            self.attempts,
            self.folder,
            tuple(keys),
            tuple(sizes),
            tuple(stats),
            self.store,
            self.out,
            self.ingest.hash,
            self.ingest.max_pixels,
            self.map_size,
            self.batch_bytes,
            self.params.split_seed,
            self.params.splits,
            str(self.cache.path) if self.cache.db is not None else "",
            self.cache.started,
        )
        return ordinal, ordinals, task

    def _resumed(self, ordinals, keys, sizes) -> dict[str, Any] | None:
        """The result of a shard a killed run finished, when the ingest cache knows its files."""
        outcomes = [self.cached.get(o) for o in ordinals]
        if any(o is None or o[1] != s for o, s in zip(outcomes, sizes, strict=True)):
            return None
        images = [(o[2], o[1], o[3], o[4], o[5]) for o in outcomes]
        path = shard_path(self.store, self.ingest.hash, self.map_size, self.batch_bytes, images)
        if not os.path.exists(path):
            return None
        params = self.params
        return {
            "broken": [],
            "path": path,
            "entry": {
                "count": len(ordinals),
                "image_bytes": sum(sizes),
                "file_bytes": os.path.getsize(path),
                "sha256": file_digest(Path(path)),
            },
            "digests": b"".join(bytes.fromhex(o[2]) for o in outcomes),
            "formats": [o[3] for o in outcomes],
            "widths": [o[4] for o in outcomes],
            "heights": [o[5] for o in outcomes],
            "splits": list(map(split_assigner(params.split_seed, params.splits), keys)),
            "trailing": [(i, o[6]) for i, o in enumerate(outcomes) if o[6]],
            "sizes": sizes,
            "resumed": True,
        }

    def results(self, pool):
        """(end ordinal, ordinals, result) of each accepted shard, in order."""
        limit = 2 * (pool._max_workers if pool is not None else 1)
        inflight: deque = deque()  # (start, end, ordinals, future)
        expected = planned = 0  # where the next accepted shard starts; where planning goes on
        try:
            while True:
                while len(inflight) < limit:
                    task = self.next_task(planned)
                    if task is None:
                        break
                    end, ordinals, work = task
                    inflight.append((planned, end, ordinals, _submit(pool, work)))
                    planned = end
                if not inflight:
                    return
                start, end, ordinals, future = inflight.popleft()
                result = future.result()
                for index, outcome in result["broken"]:
                    if ordinals[index] >= self.base:
                        self.known[ordinals[index]] = outcome
                if start != expected:
                    continue  # planned after a task that broke: its cut may be wrong
                if result["broken"]:
                    # Plan again from here, with what was learned; later tasks that have not
                    # started are not wanted any more.
                    planned = expected
                    while inflight and inflight[-1][3].cancel():
                        inflight.pop()
                    continue
                expected = end
                yield end, ordinals, result
        finally:
            for *_, future in inflight:
                future.cancel()


_LIMIT = 16_384  # images a shard holds at most (format.catalog.SHARD_IMAGES)


def _submit(pool, work) -> Future:
    if isinstance(work, dict):  # finished already (resumed)
        done: Future = Future()
        done.set_result(work)
        return done
    if pool is None:
        done = Future()
        done.set_result(write_fresh_shard(work))
        return done
    return pool.submit(write_fresh_shard, work)


class _Records:
    """Accepted shards into the pack and the report; digests kept on disk for duplicate groups."""

    def __init__(self, scratch: Path, assembler: PackAssembler, report: IngestReport):
        self.assembler = assembler
        self.report = report
        self.digest_size = assembler.digest_size
        self.digests = open(scratch / "digests.bin", "w+b")  # noqa: SIM115 - closed in groups
        self.keys = open(scratch / "keys.bin", "w+b")  # noqa: SIM115 - NUL-separated, in order
        # The first 4 bytes of each digest, 4 B a record: equal ones are candidates, grouped by
        # their whole digests in SQLite.
        self.prefixes: list[np.ndarray] = []
        self.keys_sha = hashlib.sha256()

    @property
    def keys_digest(self) -> str:
        return self.keys_sha.hexdigest()

    def add(self, plan: _Plan, end: int, ordinals: list[int], result: dict[str, Any]) -> None:
        report = self.report
        rows = [plan.row(o) for o in ordinals]
        keys = [r[0] for r in rows]
        shard = self.assembler.add_shard(Path(result["path"]), result["entry"])
        sizes = result["sizes"]
        self.assembler.add_rows(
            [
                keys,
                [r[1] for r in rows],
                result["splits"],
                result["formats"],
                result["widths"],
                result["heights"],
                sizes,
                [shard] * len(keys),
                range(len(keys)),
            ],
            [r[2] for r in rows],
        )
        for index, trailing in result["trailing"]:
            report.note(trailing_note(keys[index], trailing, result["formats"][index]))
        report.packed += len(keys)
        report.read += 0 if result.get("resumed") else len(keys)
        self.digests.write(result["digests"])
        joined = "\0".join(keys).encode() + b"\0"
        self.keys.write(joined)
        self.keys_sha.update(joined)
        table = np.frombuffer(result["digests"], np.uint8).reshape(-1, self.digest_size)
        self.prefixes.append(table[:, :4].copy().view(np.uint32).ravel())
        plan.settle(end)

    def report_duplicates(self, db: sqlite3.Connection) -> None:
        """Groups of identical content, as ingest reports them; only candidates touch SQLite."""
        prefixes = np.concatenate(self.prefixes) if self.prefixes else np.zeros(0, np.uint32)
        self.prefixes = []
        ordered = np.sort(prefixes)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        del ordered
        db.execute("CREATE TABLE hashes (hash TEXT, key TEXT, ordinal INTEGER)")
        if len(repeated):
            candidates = np.isin(prefixes, repeated)
            self.digests.seek(0)
            self.keys.seek(0)
            rows = []
            keys = _split_keys(self.keys)
            for ordinal in range(len(prefixes)):
                digest = self.digests.read(self.digest_size)
                key = next(keys)
                if candidates[ordinal]:
                    rows.append((digest.hex(), key, ordinal))
                if len(rows) >= 10_000:
                    db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", rows)
                    rows = []
            db.executemany("INSERT INTO hashes VALUES (?, ?, ?)", rows)
            db.execute("CREATE INDEX hashes_hash ON hashes (hash, key)")
            report_duplicates(db, self.report)  # the groups; which copy is first is not needed
        self.digests.close()
        self.keys.close()


def _split_keys(handle):
    rest = b""
    while block := handle.read(1 << 20):
        *keys, rest = (rest + block).split(b"\0")
        for key in keys:
            yield key.decode()


def _check(
    tmp: Path, count: int, shards: list[dict[str, Any]], keys_written: str
) -> dict[str, Any]:
    """What was written, read back a catalog part at a time: every row's key (as planned, in
    ascending order), shard and slot against the shards. Each shard's images were read back by
    the worker that wrote them."""
    from imgpack.reader import Pack

    with Pack(tmp) as pack:
        counts = np.array([s["count"] for s in pack.header["shards"]], np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        keys, ok, seen = hashlib.sha256(), len(pack) == count == int(counts.sum()), 0
        for first, part in pack.catalog.tables(["key", "shard", "slot"]):
            shard = part.column("shard").to_numpy()
            slot = part.column("slot").to_numpy()
            inside = bool(np.all((shard >= 0) & (shard < len(counts))))
            ordinals = np.arange(first, first + len(part))
            ok = ok and inside and np.array_equal(slot, ordinals - starts[shard])
            _add_keys(keys, part.column("key"))
            seen += len(part)
        if not (ok and seen == count and keys.hexdigest() == keys_written):
            raise ValidationError(
                f"{tmp}: the catalog read back does not match the shards written; nothing was "
                "published. Run the build again; if it repeats, check the disk and memory"
            )
        return {
            "ok": True,
            "manifest_records": count,
            "pack_records": len(pack),
            "pack_aliases": 0,
            "checked": count,
            "shards": len(shards),
            "shards_hashed": len(shards),
            "shards_known": 0,
        }


def _add_keys(sha, keys) -> None:
    """Keys into `sha` as `_Records` wrote them: NUL-terminated UTF-8, in order."""
    for chunk in keys.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        sha.update(np.insert(data, offsets[1:] - offsets[0], 0).tobytes())
