"""A fresh build's plan: candidates in key order cut into shard tasks by size; a task that broke is planned again."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

from imgpack.ingest.cache import FileStat, IngestCache, file_stat
from imgpack.ingest.frontend import Candidate
from imgpack.ingest.outcome import Examined, Failed, Outcome
from imgpack.ingest.report import Accounting
from imgpack.parallel.workers import pool_size
from imgpack.write.onepass_shard import (
    FreshBuild,
    FreshShardTask,
    ShardResult,
    finish,
    resume_path,
    write_fresh_shard,
)
from imgpack.write.shard import ShardProps, shard_entry

__all__ = ["ShardPlan", "PlanWindow", "PlannedFile", "EMPTY"]

EMPTY = Failed("empty", "empty file")  # what reading a file of size 0 would tell


class PlannedFile(NamedTuple):
    """A candidate as the plan sees it: its stat gives its size until a task reads it."""

    key: str
    label: str
    extra: dict[str, Any]
    stat: FileStat | None


class PlanWindow:
    """The candidates pulled from the walk and not yet settled, from ordinal `base` on, with
    what is known of them beyond their stat."""

    def __init__(
        self,
        candidates: Iterable[Candidate],
        cache: IngestCache,
        account: Accounting,
        resuming: bool,
    ):
        self.candidates = iter(candidates)
        self.cache, self.resuming = cache, resuming
        self.account, self.report = account, account.report
        self.rows: deque[PlannedFile] = deque()  # from ordinal `base` on
        self.base = 0
        self.known: dict[int, Outcome] = {}  # ordinal -> outcome, where it differs from the plan
        self.cached: dict[int, Examined] = {}  # ordinal -> remembered outcome (resuming only)
        self.unread: set[int] = set()  # ordinals whose failure the ingest cache remembered
        self.transient = 0  # files the operating system would not give (`Failed.transient`)

    def fill(self, ordinal: int) -> bool:
        """Pull candidates until `ordinal` is in the window; False at the end of the walk."""
        while ordinal >= self.base + len(self.rows):
            batch = []
            for found, label, extra in self.candidates:
                stat = found.stat or file_stat(found.path)
                batch.append(PlannedFile(found.key, label, extra, stat))
                if len(batch) >= 256:
                    break
            if not batch:
                return False
            first = self.base + len(self.rows)
            for number, planned in enumerate(batch, first):
                if planned.stat is not None and planned.stat[0] == 0:
                    self.known[number] = EMPTY
            if self.resuming:
                remembered = self.cache.lookup([b.key for b in batch], [b.stat for b in batch])
                for number, outcome in enumerate(remembered, first):
                    if outcome is not None and not outcome.ok:
                        self.known[number] = outcome
                        self.unread.add(number)  # known from the cache: never read this run
                    elif outcome is not None:
                        self.cached[number] = outcome
            self.rows.extend(batch)
        return True

    def learn(self, ordinal: int, outcome: Outcome) -> None:
        """What a task found `ordinal` to be, where it differs from the plan."""
        if ordinal >= self.base:
            self.known[ordinal] = outcome

    def settle(self, end: int) -> None:
        """Forget candidates before ordinal `end` (their shard is accepted, or they are no
        image): the ones that are no image are accounted for now."""
        while self.base < end:
            key = self.rows.popleft().key
            outcome = self.known.pop(self.base, None)
            if outcome is not None and not outcome.ok:
                self.account(key, outcome.kind, outcome.detail)
                self.report.read += outcome is not EMPTY and self.base not in self.unread
                self.transient += outcome.transient
            self.cached.pop(self.base, None)
            self.unread.discard(self.base)
            self.base += 1

    def settle_all(self) -> None:
        while self.fill(self.base):
            self.settle(self.base + len(self.rows))

    def row(self, ordinal: int) -> PlannedFile:
        """A candidate not yet settled."""
        return self.rows[ordinal - self.base]


class ShardPlan:
    """Candidates in key order, cut into shard tasks by size; a task that broke is planned again."""

    def __init__(
        self,
        candidates: Iterable[Candidate],
        build: FreshBuild,
        cache: IngestCache,
        account: Accounting,
    ):
        self.build = build
        resuming = any(Path(build.store).glob("*.lmdb"))  # a killed run's shards: by name
        self.window = PlanWindow(candidates, cache, account, resuming)
        self.attempts = 0

    def next_task(self, start: int) -> tuple[int, list[int], FreshShardTask | ShardResult] | None:
        """(end, ordinals, task or finished result) of the shard starting at `start`, or None."""
        ordinals, keys, sizes, stats, total = [], [], [], [], 0
        window = self.window
        ordinal = max(start, window.base)  # candidates before `base` are settled: no image
        known, rows, layout = window.known, window.rows, self.build.layout
        while ordinal < window.base + len(rows) or window.fill(ordinal):
            outcome = known.get(ordinal) if known else None
            if outcome is not None and not outcome.ok:
                if ordinal == window.base:  # no shard will hold it, whatever the cut
                    window.settle(ordinal + 1)
                ordinal += 1
                continue
            planned = rows[ordinal - window.base]
            stat = planned.stat
            size = outcome.size if outcome is not None else stat[0] if stat else 0
            if layout.full(len(ordinals), total, size):
                break
            ordinals.append(ordinal)
            keys.append(planned.key)
            sizes.append(size)
            stats.append(stat)
            total += size
            ordinal += 1
        if not ordinals:
            return None
        resumed = self._resumed(ordinals, keys, sizes) if window.resuming else None
        if resumed is not None:
            return ordinal, ordinals, resumed
        self.attempts += 1
        task = FreshShardTask(
            build=self.build,
            attempt=self.attempts,
            keys=tuple(keys),
            sizes=tuple(sizes),
            stats=tuple(stats),
        )
        return ordinal, ordinals, task

    def _resumed(self, ordinals, keys, sizes) -> ShardResult | None:
        """The result of a shard a killed run finished, when the ingest cache knows its files."""
        outcomes = [self.window.cached.get(o) for o in ordinals]
        if any(o is None or o.size != s for o, s in zip(outcomes, sizes, strict=True)):
            return None
        path = resume_path(self.build, outcomes)
        if not os.path.exists(path):
            return None
        props = ShardProps(
            digests=b"".join(bytes.fromhex(o.digest_hex) for o in outcomes),
            sizes=sizes,
            formats=[o.format for o in outcomes],
            widths=[o.width for o in outcomes],
            heights=[o.height for o in outcomes],
        )
        return ShardResult(
            path=path,
            props=props,
            splits=self.build.splits_of(keys),
            trailing=[(i, o.trailing) for i, o in enumerate(outcomes) if o.trailing],
            resumed=True,
            entry=shard_entry(path, len(sizes), sum(sizes)),
        )

    def results(
        self, pool, started: Callable[[], None] | None = None
    ) -> Iterator[tuple[int, list[int], ShardResult]]:
        """(end ordinal, ordinals, result) of each accepted shard, in order; `started()` is
        called once the first shards are on their way."""
        limit = 2 * pool_size(pool)
        inflight: deque[_InFlight] = deque()
        expected = planned = 0  # where the next accepted shard starts; where planning goes on
        # Threads (hashing and fsync release the GIL) finish each shard as soon as it is
        # written, so no shard waits for the one before it to be digested.
        finisher = ThreadPoolExecutor(2 * limit, thread_name_prefix="imgpack-finish")
        try:
            while True:
                planned = self._submit(pool, finisher, inflight, planned, limit)
                if started is not None:
                    started()
                    started = None
                if not inflight:
                    return
                first = inflight[0]
                if not first.finished.done():
                    writing = [entry.written for entry in inflight if not entry.written.done()]
                    wait([first.finished, *writing], return_when=FIRST_COMPLETED)
                    continue
                inflight.popleft()
                result = first.finished.result()  # named even if not wanted now
                for index, outcome in result.broken:
                    self.window.learn(first.ordinals[index], outcome)
                if first.start != expected:
                    continue  # planned after a task that broke: its cut may be wrong
                if result.broken:
                    # Plan again from here, with what was learned; later tasks that have not
                    # started are not wanted any more.
                    planned = expected
                    while inflight and inflight[-1].written.cancel():
                        inflight.pop()
                    continue
                expected = first.end
                yield first.end, first.ordinals, result
        finally:
            for entry in inflight:
                entry.written.cancel()
            finisher.shutdown(wait=False, cancel_futures=True)

    def _submit(self, pool, finisher, inflight: deque[_InFlight], planned: int, limit: int) -> int:
        """Plan and submit tasks from ordinal `planned` on; returns where planning goes on.

        Workers are kept busy while earlier shards still sync: only shards not yet written
        count against the limit (and twice as many may wait to be taken)."""
        while len(inflight) < 2 * limit and _writing(inflight) < limit:
            task = self.next_task(planned)
            if task is None:
                break
            end, ordinals, work = task
            written = _submitted(pool, work)
            finished = finisher.submit(_finish_when_written, written, self.build)
            inflight.append(_InFlight(planned, end, ordinals, written, finished))
            planned = end
        return planned


class _InFlight(NamedTuple):
    """A shard task on its way: its candidates, its write, and its finishing (sealed, named)."""

    start: int
    end: int
    ordinals: list[int]
    written: Future
    finished: Future


def _writing(inflight: Iterable[_InFlight]) -> int:
    return sum(not entry.written.done() for entry in inflight)


def _finish_when_written(written: Future, build: FreshBuild) -> ShardResult:
    return finish(written.result(), build)


def _submitted(pool, work: FreshShardTask | ShardResult) -> Future:
    if isinstance(work, ShardResult):  # finished already (resumed)
        done: Future = Future()
        done.set_result(work)
        return done
    if pool is None:
        done = Future()
        done.set_result(write_fresh_shard(work))
        return done
    return pool.submit(write_fresh_shard, work)
