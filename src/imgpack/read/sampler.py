"""A shard-aware sampler: each shard read once an epoch, a window at a time (spec: README.md)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["ShardSampler", "shuffle_quality"]

STATE_VERSION = 1
# The fields of a state that decide the epoch order: a state is refused by a sampler that differs.
ORDER_FIELDS = ("shuffle", "seed", "window", "drop_last", "world_size")


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
    return int(value)


class _Plan:
    """One rank's order for one epoch: dataset indices, window bounds and each window's shards."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray, shards: np.ndarray):
        self.order = order  # int64 dataset indices, in the order they are yielded
        self.bounds = bounds  # window w is order[bounds[w]:bounds[w + 1]]
        self._shards = shards  # the shard of each dataset index

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    def window_of(self, position: int) -> int:
        return int(np.searchsorted(self.bounds, position, side="right")) - 1

    def shards_of(self, window: int) -> list[int]:
        """The shards window `window` reads, ascending."""
        part = self.order[self.bounds[window] : self.bounds[window + 1]]
        return np.unique(self._shards[part]).tolist()


class _Prefetcher:
    """A daemon thread calling `fetch(shards)` for windows first.., at most `ahead` past the reader's.

    It stops at the last window, on `close()`, or on the first exception, which it keeps for the
    iterating thread to raise.
    """

    def __init__(self, fetch: Callable[[list[int]], Any], plan: _Plan, first: int, ahead: int):
        self._fetch, self._plan, self._ahead = fetch, plan, ahead
        self._allowed = first + ahead  # the last window the thread may fetch
        self._stopped = False
        self._lock = threading.Condition()
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(first,), name="imgpack-shard-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, first: int) -> None:
        shards: list[int] = []
        try:
            for window in range(first, self._plan.count):
                with self._lock:
                    while not self._stopped and window > self._allowed:
                        self._lock.wait()
                    if self._stopped:
                        return
                shards = self._plan.shards_of(window)
                self._fetch(shards)
        except BaseException as exc:  # handed to the iterating thread, never lost
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(f"raised by prefetch({shards}) in the sampler's background thread")
            self.error = exc

    def reading(self, window: int) -> None:
        """The reader entered `window`: the thread may fetch up to `ahead` windows past it."""
        with self._lock:
            self._allowed = window + self._ahead
            self._lock.notify()

    def close(self) -> None:
        """Stop after the call in progress (if any) returns, and wait for the thread to end."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
        self._thread.join()


class ShardSampler:
    """Dataset indices for a DataLoader's `sampler=`: shard by shard, a window of shards at a time.

    `shards[i]` is the shard number of dataset index i. With `shuffle`, an epoch visits the
    shards in an order drawn from (seed, epoch), `window` shards at a time, and yields the
    records of a window in a random order, so each shard is read once an epoch and only
    `window` (plus what `prefetch` fetched ahead) are needed at once. Without it, dataset
    indices come shard by shard in ascending shard number (the dataset's order when its
    indices run through the shards in order, as a pack's records do).

    DDP: rank `rank` of `world_size` gets a consecutive part of the epoch's order; the parts are
    disjoint and of equal length. When the records do not divide evenly, each short rank repeats
    one record of its own last window (so nothing else is fetched), or, with `drop_last`, each
    long rank leaves out its last record. Call `set_epoch(epoch)` before each epoch, as with
    torch's DistributedSampler, or every epoch has the same order.

    `prefetch(shards)` (optional) is called in a background daemon thread with the shard numbers
    of each window, in order, while the reader is at most `ahead` windows behind it; the thread
    ends with the iteration, and an exception it raises is raised by the iteration's next step.

    `state_dict()` records where this rank's epoch stands; `load_state_dict(state)` makes the
    next iteration yield exactly the rest of that epoch's order.
    """

    def __init__(
        self,
        shards: Sequence[int] | np.ndarray,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 4,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        prefetch: Callable[[list[int]], Any] | None = None,
        ahead: int = 1,
    ):
        shards = np.array(shards, copy=True)
        if shards.ndim != 1:
            raise ValueError(
                f"shards must be one shard number per dataset index, not {shards.shape}"
            )
        if len(shards) and not np.issubdtype(shards.dtype, np.integer):
            raise ValueError(f"shard numbers must be integers, not {shards.dtype}")
        self._shards = shards.astype(np.int64, copy=False)
        self._shards.flags.writeable = False
        self.shuffle = bool(shuffle)
        self.seed = _whole("seed", seed, 0)
        self.window = _whole("window", window, 1)
        self.world_size = _whole("world_size", world_size, 1)
        self.rank = _whole("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be below world_size ({self.world_size}), not {rank}")
        self.drop_last = bool(drop_last)
        self.prefetch = prefetch
        self.ahead = _whole("ahead", ahead, 0)
        self.epoch = 0
        self._resume = 0  # where the next iteration starts
        self._start = 0  # where the latest iteration started
        self._yielded = 0  # indices yielded so far this epoch, counting a resumed start
        self._layout: str | None = None
        self._plan_of: tuple[tuple, _Plan] | None = None
        # Dataset indices grouped by shard (stably: a shard's records keep the dataset's order).
        ordered = len(shards) < 2 or bool((np.diff(self._shards) >= 0).all())
        self._by_shard = (
            np.arange(len(shards), dtype=np.int64)
            if ordered
            else np.argsort(self._shards, kind="stable")
        )
        grouped = self._shards[self._by_shard]
        starts = np.flatnonzero(np.diff(grouped)) + 1 if len(grouped) else grouped[:0]
        self._group_count = len(starts) + 1 if len(grouped) else 0
        # the group (shards numbered 0.. in ascending shard number) of each grouped index
        self._group = np.zeros(len(grouped), dtype=np.int64)
        self._group[starts] = 1
        np.cumsum(self._group, out=self._group)

    # -- sizes ----------------------------------------------------------------------------------
    def _cut(self, rank: int) -> tuple[int, int]:
        """Rank `rank`'s part of the epoch's order: (start, size) before padding or dropping."""
        even, extra = divmod(len(self._shards), self.world_size)
        return rank * even + min(rank, extra), even + (rank < extra)

    def __len__(self) -> int:
        """The indices this rank yields in a whole epoch (equal on every rank)."""
        even, extra = divmod(len(self._shards), self.world_size)
        if not len(self._shards):
            return 0
        return even if self.drop_last or not extra else even + 1

    @property
    def yielded(self) -> int:
        """Indices yielded so far in this epoch, counting a loaded state's position."""
        return self._yielded

    @property
    def start(self) -> int:
        """The position in this epoch's order the latest (or next) iteration starts at."""
        return self._resume if self._resume else self._start

    # -- the epoch's order ----------------------------------------------------------------------
    def _plan(self) -> _Plan:
        settings = (self.epoch, self.rank, *(getattr(self, name) for name in ORDER_FIELDS))
        if self._plan_of is not None and self._plan_of[0] == settings:
            return self._plan_of[1]
        plan = self._make_plan(self.epoch)
        self._plan_of = (settings, plan)
        return plan

    def _make_plan(self, epoch: int) -> _Plan:
        total = len(self._shards)
        begin, size = self._cut(self.rank)
        if self.shuffle:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            # visit[g]: when shard group g is visited; records of a shard in a random order
            visit = np.empty(self._group_count, dtype=np.int64)
            visit[rng.permutation(self._group_count)] = np.arange(self._group_count)
            keys = visit[self._group] << 32
            keys |= rng.integers(0, 1 << 32, size=total, dtype=np.int64)
            sequence = np.argsort(keys)
            keys = keys[sequence[begin : begin + size]] >> 32  # visit number, this rank's part
            part = self._by_shard[sequence[begin : begin + size]]
        else:
            part = self._by_shard[begin : begin + size]
            keys = self._group[begin : begin + size]
        # This rank's windows: `window` consecutive visited shards each (a shard cut between two
        # ranks counts for both), its records shuffled together.
        windows = (keys - keys[0]) // self.window if size else keys
        if self.shuffle and size:
            mix = (windows << 32) | rng.integers(0, 1 << 32, size=size, dtype=np.int64)
            shuffled = np.argsort(mix)
            part, windows = part[shuffled], windows[shuffled]
        bounds = np.flatnonzero(np.diff(windows)) + 1
        bounds = np.concatenate(([0], bounds, [size])) if size else np.zeros(1, dtype=np.int64)
        if size > len(self):  # drop_last: this long rank leaves out its last record
            part, bounds = part[:-1], bounds.copy()
            bounds[-1] -= 1
            if bounds[-1] == bounds[-2]:  # its last window held only that record
                bounds = bounds[:-1]
        elif size < len(self):  # padding: repeat a record of this rank's own last window,
            if size:  # whose shards are being read already
                part, bounds = np.append(part, part[bounds[-2]]), bounds.copy()
                bounds[-1] += 1
            else:  # fewer records than ranks
                part, bounds = self._by_shard[[self.rank % total]], np.array([0, 1])
        return _Plan(part.astype(np.int64, copy=False), bounds.astype(np.int64), self._shards)

    def order(self) -> list[int]:
        """This rank's whole order for the current epoch (what a full iteration yields)."""
        return self._plan().order.tolist()

    def windows(self) -> list[list[int]]:
        """The shard numbers of each window of this rank's current epoch, in the order read."""
        plan = self._plan()
        return [plan.shards_of(w) for w in range(plan.count)]

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order from now on. The same epoch again keeps a loaded position."""
        epoch = _whole("epoch", epoch, 0)
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume = self._start = self._yielded = 0

    def __iter__(self) -> Iterator[int]:
        plan = self._plan()
        position = self._start = self._resume
        self._resume = 0
        self._yielded = position
        if position >= len(plan.order):
            return
        first = plan.window_of(position)
        fetcher = (
            _Prefetcher(self.prefetch, plan, first, self.ahead)
            if self.prefetch is not None
            else None
        )
        try:
            for window in range(first, plan.count):
                end = int(plan.bounds[window + 1])
                if fetcher is None:
                    for index in plan.order[position:end].tolist():
                        self._yielded += 1
                        yield index
                else:
                    fetcher.reading(window)
                    for index in plan.order[position:end].tolist():
                        if fetcher.error is not None:
                            raise fetcher.error
                        self._yielded += 1
                        yield index
                position = end
            if fetcher is not None:
                fetcher.close()
                if fetcher.error is not None:
                    raise fetcher.error
        finally:  # exhausted, broken off (GeneratorExit) or failed: the thread ends here
            if fetcher is not None:
                fetcher.close()

    # -- resuming -------------------------------------------------------------------------------
    def layout(self) -> str:
        """A fingerprint of the shard of every dataset index: states of other datasets are refused."""
        if self._layout is None:
            digest = hashlib.blake2b(digest_size=12)
            digest.update(len(self._shards).to_bytes(8, "little"))
            digest.update(self._shards.astype("<i8", copy=False).tobytes())
            self._layout = digest.hexdigest()
        return self._layout

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank's epoch stands: plain ints, bools and strings, for any checkpoint.

        `position` is `consumed` if given (the records of this epoch the training loop has
        actually used, counting from the epoch's start), else the indices yielded so far. The
        two agree for a DataLoader with num_workers=0; with workers the loader draws
        `prefetch_factor * num_workers` batches ahead, so pass
        `consumed=sampler.start + batches_done * batch_size`.
        """
        position = self._yielded
        if consumed is not None:
            consumed = _whole("consumed", consumed, 0)
            if consumed > self._yielded:
                raise ValueError(
                    f"consumed={consumed}, but this epoch has yielded only {self._yielded} "
                    f"indices (count from the epoch's start, {self.start} when resumed)"
                )
            position = consumed
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": position,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "window": self.window,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "rank": self.rank,
            "records": len(self._shards),
            "layout": self.layout(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields the rest of `state`'s epoch from its position.

        The sampler must have the same dataset (shard layout), shuffle, seed, window, drop_last
        and world_size. Its rank may differ: ranks consume their equal parts in step, so one
        rank's state resumes them all.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"not a ShardSampler state of version {STATE_VERSION}: {state.get('version')!r}"
            )
        if state["records"] != len(self._shards) or state["layout"] != self.layout():
            raise ValueError(
                f"this state is of another dataset: {state['records']} records with shard "
                f"layout {state['layout']}, not this sampler's {len(self._shards)} with "
                f"{self.layout()}; resume with the dataset (pack, split, indices) it was saved from"
            )
        differ = [
            f"{name}={state[name]!r} (this sampler has {getattr(self, name)!r})"
            for name in ORDER_FIELDS
            if state[name] != getattr(self, name)
        ]
        if differ:
            raise ValueError(
                "this state was saved by a sampler with another order: "
                + ", ".join(differ)
                + "; create the sampler with the same settings to resume"
            )
        epoch = _whole("epoch", state["epoch"], 0)
        position = _whole("position", state["position"], 0)
        if position > len(self):
            raise ValueError(f"position {position} is past this rank's epoch of {len(self)}")
        self.epoch = epoch
        self._resume = self._start = self._yielded = position


def shuffle_quality(
    order: Sequence[int] | np.ndarray,
    shards: Sequence[int] | np.ndarray,
    batch_size: int = 32,
) -> dict[str, float | int]:
    """How far apart the records of one shard land in `order` (dataset indices; `shards[i]` is
    index i's shard). Compare with a random permutation of the same indices:

    - `mean_gap`, `median_gap`: positions between consecutive records of the same shard (1 when
      shards are read one after another; about the number of shards for a random permutation);
    - `mean_span`: the part of the order from a shard's first record to its last, averaged over
      shards (1/shards read in sequence, near 1 for a random permutation);
    - `same_shard_neighbours`: the share of consecutive pairs from one shard;
    - `shards_per_batch`: distinct shards in each run of `batch_size` consecutive records.
    """
    order = np.asarray(order, dtype=np.int64)
    of = np.asarray(shards, dtype=np.int64)[order]
    count = len(of)
    if count < 2:
        raise ValueError("shuffle_quality needs an order of at least two records")
    positions = np.argsort(of, kind="stable")  # each shard's positions, ascending
    grouped = of[positions]
    same = grouped[1:] == grouped[:-1]
    gaps = np.diff(positions)[same]
    firsts = np.concatenate(([0], np.flatnonzero(~same) + 1))
    lasts = np.concatenate((firsts[1:] - 1, [count - 1]))
    spans = (positions[lasts] - positions[firsts] + 1) / count
    whole = count // batch_size * batch_size
    if whole:
        batches = np.sort(of[:whole].reshape(-1, batch_size), axis=1)
        per_batch = float((1 + (np.diff(batches, axis=1) != 0).sum(axis=1)).mean())
    else:
        per_batch = float("nan")
    return {
        "records": count,
        "shards": len(firsts),
        "mean_gap": float(gaps.mean()) if len(gaps) else float("nan"),
        "median_gap": float(np.median(gaps)) if len(gaps) else float("nan"),
        "mean_span": float(spans.mean()),
        "same_shard_neighbours": float((of[1:] == of[:-1]).mean()),
        "shards_per_batch": per_batch,
        "batch_size": batch_size,
    }
