"""A fresh build in one pass: shards planned from the folder listing, each written by one worker from the raw files."""

# The plan cuts shards by the sizes the files' stat gives, exactly as the pack stage cuts them by
# the sizes ingest measured, so the pack is the pipeline's, byte for byte. A file that does not turn
# out as planned (not an image after all, or changed size) breaks only its shard's task: that part
# of the plan is made again with what the task learned, and tasks planned after it are redone. Tasks
# commit what they learn to the ingest cache, so a rerun after a kill finds its finished shards by
# name.

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgpack.check.report import validation_report
from imgpack.errors import ImgpackError, ValidationError
from imgpack.ingest.frontend import FrontEnd, front_end
from imgpack.ingest.report import IngestReport, trailing_note
from imgpack.ingest.splits import FOLDERS
from imgpack.parallel.workers import release_freed_memory, worker_errors, worker_pool
from imgpack.params import IngestParams, PackParams
from imgpack.util.cores import resolve_workers
from imgpack.util.outputs import scratch_dir, scratch_errors
from imgpack.write.layout import params_digest
from imgpack.write.onepass_kept import KeptRun
from imgpack.write.onepass_plan import PlanWindow, ShardPlan
from imgpack.write.onepass_shard import FreshBuild, ShardResult

if TYPE_CHECKING:
    from imgpack.write.assembler import PackAssembler

__all__ = ["one_pass"]


def one_pass(
    raw_dir: str | Path,
    out: Path,
    labels: str | Path | None,
    ingest: IngestParams,
    params: PackParams,
    report_out: str | Path | None = None,
    kept: tuple[Path, Path] | None = None,
) -> tuple[IngestReport, dict[str, Any], dict[str, Any]]:
    """Build `out` afresh from `raw_dir`; returns the ingest report, the header and the validation.
    `kept`: where ingest's manifest and report of this build are left for the next incremental
    one (labels from folder names only; see `imgpack.write.onepass_kept`)."""
    folder = os.path.abspath(raw_dir)
    store = out.absolute().with_name(f".{out.name}.resume")
    workers = resolve_workers(params.workers, "pack.workers")
    split_folders = params.splits == FOLDERS
    keep = KeptRun(kept, raw_dir, ingest, split_folders) if kept and labels is None else None
    with (
        worker_pool(workers, fork=True) as pool,  # first: before any thread or handle here
        scratch_dir(out) as scratch,
        front_end(
            folder,
            scratch,
            labels,
            ingest,
            found=keep.files() if keep else None,
            split_folders=split_folders,
            walk_progress="build",
        ) as front,
        contextlib.closing(keep) if keep is not None else contextlib.nullcontext(),
    ):
        if keep is not None:
            keep.start(scratch, front.account)
        store.mkdir(parents=True, exist_ok=True)
        build = FreshBuild.of(folder, store, out, ingest, params, front.cache)
        plan = ShardPlan(front.candidates, build, front.cache, front.account)
        try:
            with scratch_errors(scratch):  # the walk's and rows' working files are there too
                how = (raw_dir, params, report_out, keep)
                header, validation = _write(plan, pool, front, scratch, how)
        except ImgpackError:
            # Refused inputs or a full disk: the shards are not worth their space (a kill or
            # Ctrl-C keeps them for the next run).
            shutil.rmtree(store, ignore_errors=True)
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                store.rmdir()  # whole shards stay for the next run; an empty store goes
            raise
        if keep is not None and out.is_dir():  # a one-file pack is built afresh every time
            # Published: a state folder with no room costs the next build a full read, not this
            # one its success.
            with contextlib.suppress(OSError, ImgpackError):
                keep.save(front.report, scratch / "digests.bin", not plan.window.transient)
        front.report.spill = None
    shutil.rmtree(store, ignore_errors=True)
    header = {**header, "carried_shards": 0, "new_shards": len(header["shards"])}
    return front.report, {**header, "compacted_shards": 0}, validation


def _write(
    plan: ShardPlan, pool, front: FrontEnd, scratch: Path, how: tuple
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shards written as planned, the report and the pack published; its header and
    validation. `how`: the raw folder, the pack params, where the report goes and the `KeptRun`
    (or None)."""
    raw_dir, params, report_out, keep = how
    build = plan.build
    with contextlib.ExitStack() as stack:
        records: _Records | None = None

        def started() -> None:
            # Once the first shards are on their way: this process's Arrow and numpy imports
            # then run while the workers (which never import them) write.
            from imgpack.write.assembler import PackAssembler

            nonlocal records
            assembler = PackAssembler(Path(build.out), build.algorithm, params.batch_mb << 20)
            records = _Records(scratch, stack.enter_context(assembler), front, keep)

        with worker_errors():
            for end, ordinals, result in plan.results(pool, started):
                records.add(plan.window, end, ordinals, result)
        if records is None:
            started()
        assembler = records.assembler
        plan.window.settle_all()
        front.account.check(raw_dir)
        records.report_duplicates()
        if report_out is not None:
            front.report.write(Path(report_out))
        validation: dict[str, Any] = {}

        def check(tmp: Path) -> None:
            validation.update(
                _check(tmp, front.report.packed, assembler.shards, records.keys_digest)
            )

        release_freed_memory()
        header = assembler.publish(
            check,
            params_digest=params_digest(params),
            layout_params=build.layout.params_text,
        )
    _remember_validated(Path(build.out), header["shards"], records.resumed)
    return header, validation


def _remember_validated(out: Path, shards: list[dict[str, Any]], resumed: list[bool]) -> None:
    """The shards of a folder pack this build wrote, as validated: their workers read each image
    back against its digest (`check`), as validate would. A next version carries them without
    hashing them again; shards resumed from a killed run were not read back here."""
    if not out.is_dir():
        return
    from imgpack.check.validated import ValidatedShards

    validated = ValidatedShards()
    try:
        for entry, was_resumed in zip(shards, resumed, strict=True):
            if not was_resumed:
                validated.add(out / entry["name"], entry)
    finally:
        validated.close()


class _Records:
    """Accepted shards into the pack and the report; digests kept on disk for duplicate groups."""

    def __init__(self, scratch: Path, assembler: PackAssembler, front: FrontEnd, keep=None):
        self.assembler = assembler
        self.keep = keep
        self.front = front
        self.report = front.report
        self.digest_size = assembler.digest_size
        self.digests = open(scratch / "digests.bin", "w+b")  # noqa: SIM115 - closed in groups
        self.keys = open(scratch / "keys.bin", "w+b")  # noqa: SIM115 - NUL-separated, in order
        self.count = 0  # records whose digests are in the file
        self.resumed: list[bool] = []  # of each shard: taken whole from a killed run's store
        self.keys_sha = hashlib.sha256()

    @property
    def keys_digest(self) -> str:
        return self.keys_sha.hexdigest()

    def add(self, window: PlanWindow, end: int, ordinals: list[int], result: ShardResult) -> None:
        """An accepted shard, whose candidates are settled up to ordinal `end`."""
        report, props = self.report, result.props
        rows = [window.row(o) for o in ordinals]
        keys = [r.key for r in rows]
        shard = self.assembler.add_shard(Path(result.path), result.entry)
        self.resumed.append(result.resumed)
        self.assembler.add_rows(
            [
                keys,
                [r.label for r in rows],
                result.splits,
                props.formats,
                props.widths,
                props.heights,
                props.sizes,
                [shard] * len(keys),
                range(len(keys)),
            ],
            [r.extra for r in rows],
        )
        for index, trailing in result.trailing:
            report.note(trailing_note(keys[index], trailing, props.formats[index]))
        if self.keep is not None:
            self.keep.add(rows, props, result.trailing)
        report.packed += len(keys)
        report.read += 0 if result.resumed else len(keys)
        self.digests.write(props.digests)
        joined = "\0".join(keys).encode() + b"\0"
        self.keys.write(joined)
        self.keys_sha.update(joined)
        self.count += len(keys)
        window.settle(end)

    def report_duplicates(self) -> None:
        """Groups of identical content, as ingest reports them. The first 4 bytes of each digest
        (4 B a record, sorted in place) find the candidates; only they go to SQLite, to be
        grouped by their whole digests."""
        import numpy as np

        prefixes = np.empty(self.count, np.uint32)
        for start, block in self._digest_blocks():
            prefixes[start : start + len(block)] = _prefixes(block)
        prefixes.sort()
        repeated = prefixes[1:][prefixes[1:] == prefixes[:-1]]
        first = np.ones(len(repeated), bool)  # sorted, so unique without np.unique's imports
        first[1:] = repeated[1:] != repeated[:-1]
        repeated = repeated[first]
        del prefixes
        if len(repeated):
            rows = []
            self.keys.seek(0)
            keys, at = _split_keys(self.keys), 0
            for start, block in self._digest_blocks():
                for index in np.flatnonzero(np.isin(_prefixes(block), repeated)).tolist():
                    ordinal = start + index
                    for _ in range(ordinal - at):
                        next(keys)
                    key, at = next(keys), ordinal + 1
                    rows.append((block[index].tobytes().hex(), key, ordinal))
                    if len(rows) >= 10_000:
                        self.front.add_hashes(rows)
                        rows = []
            self.front.add_hashes(rows)
            copies = self.front.report_duplicates()  # the groups; and each later copy's first
            if self.keep is not None:  # for the manifest kept
                self.keep.duplicate_of = list(copies)
        self.digests.close()
        self.keys.close()

    def _digest_blocks(self, records: int = 1 << 16):
        """(first ordinal, digests as rows of bytes) from the file, `records` at a time."""
        import numpy as np

        self.digests.seek(0)
        for start in range(0, self.count, records):
            raw = self.digests.read(min(records, self.count - start) * self.digest_size)
            yield start, np.frombuffer(raw, np.uint8).reshape(-1, self.digest_size)


def _prefixes(digests):
    import numpy as np

    return digests[:, :4].copy().view(np.uint32).ravel()


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
    import numpy as np

    from imgpack.read.pack import Pack

    with Pack(tmp) as pack:
        counts = np.array([s["count"] for s in pack.header["shards"]], np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        records, parts = len(pack), pack.catalog.parts
        keys, ok, seen = hashlib.sha256(), records == count == int(counts.sum()), 0
    for number in range(parts):
        # Opened again for each part: a part's pages leave this process when its map is closed,
        # so a million records' catalog is never resident here whole.
        with Pack(tmp) as pack:
            part = pack.catalog.part(number, ["key", "shard", "slot"])
        shard = part.column("shard").to_numpy()
        slot = part.column("slot").to_numpy()
        inside = bool(np.all((shard >= 0) & (shard < len(counts))))
        ordinals = np.arange(seen, seen + len(part))
        ok = ok and inside and np.array_equal(slot, ordinals - starts[shard])
        _add_keys(keys, part.column("key"))
        seen += len(part)
    if not (ok and seen == count and keys.hexdigest() == keys_written):
        raise ValidationError(
            f"{tmp}: the catalog read back does not match the shards written; nothing was "
            "published. Run the build again; if it repeats, check the disk and memory"
        )
    return validation_report(
        manifest_records=count,
        pack_records=records,
        pack_aliases=0,
        checked=count,
        shards=len(shards),
        shards_known=0,
    )


def _add_keys(sha, keys) -> None:
    """Keys into `sha` as `_Records` wrote them: NUL-terminated UTF-8, in order."""
    import numpy as np

    for chunk in keys.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        sha.update(np.insert(data, offsets[1:] - offsets[0], 0).tobytes())
