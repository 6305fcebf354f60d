"""A fresh build's plan: candidates in key order cut into shard tasks by size; a task that broke is planned again."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from imgpack.ingest.cache import file_stat
from imgpack.ingest.splits import split_assigner
from imgpack.write.onepass_shard import FreshShardTask, accepted, finish, write_fresh_shard

__all__ = ["ShardPlan", "EMPTY"]

EMPTY = ["fail", "empty", "empty file"]  # what reading a file of size 0 would tell


class ShardPlan:
    """Candidates in key order, cut into shard tasks by size; a task that broke is planned again."""

    def __init__(self, candidates, folder, store, out, ingest, params, layout, cache, account):
        self.candidates = iter(candidates)
        self.account, self.report = account, account.report
        self.window: deque = deque()  # (key, label, extra, stat) from ordinal `base` on
        self.base = 0
        self.known: dict[int, list] = {}  # ordinal -> outcome, where it differs from the plan
        self.cached: dict[int, list] = {}  # ordinal -> remembered outcome (resuming only)
        self.unread: set[int] = set()  # ordinals whose failure the ingest cache remembered
        self.folder, self.store, self.out = folder, str(store), str(out)
        self.ingest, self.params, self.layout, self.cache = ingest, params, layout, cache
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
                    self.known[number] = EMPTY
            if self.resuming:
                remembered = self.cache.lookup([b[0] for b in batch], [b[3] for b in batch])
                for number, outcome in enumerate(remembered, first):
                    if outcome is not None and outcome[0] != "ok":
                        self.known[number] = outcome
                        self.unread.add(number)  # known from the cache: never read this run
                    elif outcome is not None:
                        self.cached[number] = outcome
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
                self.report.read += outcome is not EMPTY and self.base not in self.unread
            self.cached.pop(self.base, None)
            self.unread.discard(self.base)
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
        known, window, layout = self.known, self.window, self.layout
        while ordinal < self.base + len(window) or self._fill(ordinal):
            outcome = known.get(ordinal) if known else None
            if outcome is not None and outcome[0] != "ok":
                if ordinal == self.base:  # no shard will hold it, whatever the cut
                    self.settle(ordinal + 1)
                ordinal += 1
                continue
            key, _, _, stat = window[ordinal - self.base]
            size = outcome[1] if outcome else stat[0] if stat else 0
            if layout.full(len(ordinals), total, size):
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
            self.layout,
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
        path = self.layout.resume_path(self.store, self.ingest.hash, images)
        if not os.path.exists(path):
            return None
        params = self.params
        return accepted(
            path,
            sizes,
            b"".join(bytes.fromhex(o[2]) for o in outcomes),
            [o[3] for o in outcomes],
            [o[4] for o in outcomes],
            [o[5] for o in outcomes],
            list(map(split_assigner(params.split_seed, params.splits), keys)),
            [(i, o[6]) for i, o in enumerate(outcomes) if o[6]],
            resumed=True,
        )

    def results(self, pool, started=None):
        """(end ordinal, ordinals, result) of each accepted shard, in order; `started()` is
        called once the first shards are on their way."""
        limit = 2 * (pool._max_workers if pool is not None else 1)
        inflight: deque = deque()  # (start, end, ordinals, written, finished)
        expected = planned = 0  # where the next accepted shard starts; where planning goes on
        # Threads (hashing and fsync release the GIL) finish each shard as soon as it is
        # written, so no shard waits for the one before it to be digested.
        finisher = ThreadPoolExecutor(2 * limit, thread_name_prefix="imgpack-finish")
        try:
            while True:
                # Workers are kept busy while earlier shards still sync: only shards not yet
                # written count against the limit (and twice as many may wait to be taken).
                while len(inflight) < 2 * limit and _writing(inflight) < limit:
                    task = self.next_task(planned)
                    if task is None:
                        break
                    end, ordinals, work = task
                    written = _submit(pool, work)
                    finished = finisher.submit(_finish_when_written, written, self.out)
                    inflight.append((planned, end, ordinals, written, finished))
                    planned = end
                if started is not None:
                    started()
                    started = None
                if not inflight:
                    return
                start, end, ordinals, _, finished = inflight[0]
                if not finished.done():
                    writing = [entry[3] for entry in inflight if not entry[3].done()]
                    wait([finished, *writing], return_when=FIRST_COMPLETED)
                    continue
                inflight.popleft()
                result = finished.result()  # named even if not wanted now
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
            for _, _, _, written, _ in inflight:
                written.cancel()
            finisher.shutdown(wait=False, cancel_futures=True)


def _writing(inflight) -> int:
    return sum(not entry[3].done() for entry in inflight)


def _finish_when_written(written: Future, out: str) -> dict[str, Any]:
    return finish(written.result(), out)


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
