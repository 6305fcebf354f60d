"""The shard-aware sampler's shuffle against reading in sequence and a full random permutation,
and the time it takes to plan an epoch. `python -m bench.shuffle_quality [records] [shards]`."""

from __future__ import annotations

import sys
import time

import numpy as np

from imgpack.read.sampler import ShardSampler, shuffle_quality

COLUMNS = ("mean_gap", "median_gap", "mean_span", "same_shard_neighbours", "shards_per_batch")


def table(records: int, shards: int, windows=(2, 4, 8)) -> list[tuple[str, dict]]:
    of = np.repeat(np.arange(shards), -(-records // shards))[:records]
    rows = [("sequential", shuffle_quality(np.arange(records), of))]
    for window in windows:
        sampler = ShardSampler(of, window=window)
        rows.append((f"window {window}", shuffle_quality(sampler.order(), of)))
    permutation = np.random.default_rng(0).permutation(records)
    rows.append(("random permutation", shuffle_quality(permutation, of)))
    return rows


def plan_seconds(records: int, shards: int, world_size: int = 1, rounds: int = 5) -> float:
    """Median time to build a sampler and plan (and list) one epoch of one rank."""
    of = np.repeat(np.arange(shards), -(-records // shards))[:records]
    times = []
    for epoch in range(rounds):
        start = time.perf_counter()
        sampler = ShardSampler(of, window=4, world_size=world_size, rank=world_size - 1)
        sampler.set_epoch(epoch)
        sampler.order()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str]) -> int:
    records, shards = (int(argv[0]), int(argv[1])) if len(argv) == 2 else (60_000, 60)
    print(f"{records:,} records in {shards} shards, batches of 32")
    print(f"{'order':<20}" + "".join(f"{c:>23}" for c in COLUMNS))
    for name, quality in table(records, shards):
        print(f"{name:<20}" + "".join(f"{quality[c]:>23.4g}" for c in COLUMNS))
    print()
    for count, groups, world in (
        (1_000_000, 1_000, 1),
        (1_000_000, 1_000, 8),
        (1_000_000, 16, 1),
        (1_000_000, 1_000_000, 1),
        (10_000_000, 10_000, 1),
    ):
        seconds = plan_seconds(count, groups, world)
        print(f"plan {count:>10,} records, {groups:>9,} shards, world {world}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
