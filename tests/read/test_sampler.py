"""The shard-aware sampler: whole shards a window at a time, equal disjoint DDP parts, exact
mid-epoch resume, a prefetch thread that runs ahead and ends with the epoch, and a DataLoader."""

import json
import threading
import time

import numpy as np
import pytest

import imgpack
from imgpack.read.sampler import ShardSampler, shuffle_quality

# 23 shards of uneven sizes (the last one short, as a pack's is), 1,034 records
SIZES = [50, 37, 61, 44, 50, 50, 12, 70, 45, 3, 50, 50, 41, 66, 50, 29, 50, 58, 50, 50, 33, 50, 35]
SHARDS = np.repeat(np.arange(len(SIZES)), SIZES)


def window_ids(order, shards, windows):
    """The window of each yielded index, checking every shard belongs to exactly one window."""
    where = {}
    for w, chosen in enumerate(windows):
        for shard in chosen:
            assert shard not in where, f"shard {shard} in windows {where[shard]} and {w}"
            where[shard] = w
    return [where[int(shards[i])] for i in order]


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "imgpack-shard-prefetch"]


def test_an_epoch_is_a_permutation_reading_whole_shards_a_window_at_a_time():
    for window in (1, 2, 4, 30):
        sampler = ShardSampler(SHARDS, window=window, seed=5)
        order = list(sampler)
        assert sorted(order) == list(range(len(SHARDS))) and len(sampler) == len(SHARDS)
        assert all(type(i) is int for i in order)
        windows = sampler.windows()
        assert sorted(s for w in windows for s in w) == list(range(len(SIZES)))  # each once
        assert all(len(w) == window for w in windows[:-1]) and 0 < len(windows[-1]) <= window
        ids = window_ids(order, SHARDS, windows)
        assert ids == sorted(ids)  # a window's records are read together, then never again
        for w, chosen in enumerate(windows):  # ... and a window holds its shards' every record
            assert ids.count(w) == sum(SIZES[s] for s in chosen)
        if window > 1:  # records of a window are mixed, not read shard after shard
            first = [int(SHARDS[i]) for i in order[: sum(SIZES[s] for s in windows[0])]]
            assert len({first[k] for k in range(10)}) > 1


def test_shards_are_visited_in_a_shuffled_order_and_records_mixed_within_a_shard():
    sampler = ShardSampler(SHARDS, window=1, seed=2)
    order = list(sampler)
    visited = [w[0] for w in sampler.windows()]
    assert visited != sorted(visited)
    first = [i for i in order if SHARDS[i] == visited[0]]
    assert first == order[: SIZES[visited[0]]] and first != sorted(first)


def test_unsorted_dataset_indices_are_grouped_by_shard():
    shards = np.random.default_rng(0).permutation(SHARDS)  # e.g. a subset in another order
    sampler = ShardSampler(shards, window=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(shards)))
    ids = window_ids(order, shards, sampler.windows())
    assert ids == sorted(ids)
    plain = list(ShardSampler(shards, shuffle=False))
    assert plain == np.argsort(shards, kind="stable").tolist()  # by shard, dataset order within


def test_without_shuffle_it_is_the_dataset_order_split_between_ranks():
    assert list(ShardSampler(SHARDS, shuffle=False)) == list(range(len(SHARDS)))
    parts = [list(ShardSampler(SHARDS, shuffle=False, world_size=4, rank=r)) for r in range(4)]
    assert [len(p) for p in parts] == [259] * 4  # 1,034 = 4 * 258 + 2: two ranks pad one
    assert parts[0] == list(range(259)) and parts[1] == list(range(259, 518))
    assert parts[2][:-1] == list(range(518, 776)) and parts[2][-1] in parts[2][:-1]
    assert sorted(set().union(*parts)) == list(range(len(SHARDS)))


@pytest.mark.parametrize("world_size", [2, 3, 4, 7, 8])
def test_ranks_get_disjoint_parts_of_equal_length_covering_everything(world_size):
    total = len(SHARDS)
    parts = [
        ShardSampler(SHARDS, window=3, seed=1, rank=r, world_size=world_size).order()
        for r in range(world_size)
    ]
    length = -(-total // world_size)
    assert [len(p) for p in parts] == [length] * world_size
    assert sorted(set().union(*parts)) == list(range(total))
    assert sum(len(set(p)) for p in parts) == total  # disjoint: only padding repeats
    for rank, part in enumerate(parts):
        sampler = ShardSampler(SHARDS, window=3, seed=1, rank=rank, world_size=world_size)
        ids = window_ids(part, SHARDS, sampler.windows())
        assert ids == sorted(ids)  # a rank reads its shards a window at a time, each once
        if len(set(part)) < len(part):  # the padded record is one of its own last window
            assert len(set(part)) == len(part) - 1 and ids[-1] == ids[part.index(part[-1])]
    # shard-local: a shard is read by at most two (neighbouring) ranks
    readers = {}
    for rank, part in enumerate(parts):
        for shard in {int(SHARDS[i]) for i in part}:
            readers.setdefault(shard, []).append(rank)
    assert max(len(r) for r in readers.values()) <= 2
    assert sum(len(r) for r in readers.values()) <= len(SIZES) + world_size - 1

    dropped = [
        ShardSampler(SHARDS, window=3, seed=1, rank=r, world_size=world_size, drop_last=True)
        for r in range(world_size)
    ]
    kept = [s.order() for s in dropped]
    assert [len(p) for p in kept] == [total // world_size] * world_size
    assert len(dropped[0]) == total // world_size
    assert sum(len(set(p)) for p in kept) == len(set().union(*kept)) == world_size * len(kept[0])


def test_fewer_records_than_ranks_still_give_every_rank_one():
    parts = [ShardSampler([0, 0, 1], world_size=5, rank=r).order() for r in range(5)]
    assert [len(p) for p in parts] == [1] * 5 and set().union(*parts) == {0, 1, 2}
    assert [
        ShardSampler([0, 0, 1], world_size=5, rank=r, drop_last=True).order() for r in range(5)
    ] == [[]] * 5
    assert list(ShardSampler([])) == [] and len(ShardSampler([], world_size=3)) == 0


def test_each_epoch_has_its_own_order_and_the_same_seed_and_epoch_give_the_same_one():
    sampler = ShardSampler(SHARDS, seed=7)
    first = list(sampler)
    assert list(sampler) == first  # no set_epoch: the same epoch again
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == sorted(first)
    again = ShardSampler(SHARDS, seed=7)
    again.set_epoch(1)
    assert list(again) == second
    assert list(ShardSampler(SHARDS, seed=8)) != first
    for rank in range(3):  # ranks agree on the epoch's order: fresh objects give the same parts
        a, b = (
            ShardSampler(SHARDS, seed=7, rank=rank, world_size=3),
            ShardSampler(SHARDS, seed=7, rank=rank, world_size=3),
        )
        a.set_epoch(4)
        b.set_epoch(4)
        assert a.order() == b.order()


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_a_resumed_epoch_is_exactly_the_rest_of_the_uninterrupted_one(world_size, shuffle):
    settings = dict(shuffle=shuffle, seed=3, window=2, world_size=world_size)
    for rank in range(world_size):
        whole = ShardSampler(SHARDS, rank=rank, **settings)
        whole.set_epoch(2)
        expected = list(whole)
        bounds = np.cumsum([0] + [sum(SIZES[s] for s in w) for w in whole.windows()])
        for k in (0, 1, 17, int(bounds[1]) if world_size == 1 else 101, len(expected) - 1):
            sampler = ShardSampler(SHARDS, rank=rank, **settings)
            sampler.set_epoch(2)
            iterator = iter(sampler)
            taken = [next(iterator) for _ in range(k)]
            state = json.loads(json.dumps(sampler.state_dict()))  # plain values, any checkpoint
            assert state["position"] == k and state["epoch"] == 2 and state["rank"] == rank
            fresh = ShardSampler(SHARDS, rank=rank, **settings)
            fresh.load_state_dict(state)
            fresh.set_epoch(2)  # the training loop's usual call keeps the loaded position
            assert taken + list(fresh) == expected
            assert fresh.yielded == len(expected)
            fresh.set_epoch(3)  # the next epoch starts from its beginning
            assert len(list(fresh)) == len(expected)


def test_one_ranks_state_resumes_every_rank():
    samplers = [ShardSampler(SHARDS, seed=9, rank=r, world_size=4) for r in range(4)]
    wholes = [s.order() for s in samplers]
    iterators = [iter(s) for s in samplers]
    for _ in range(130):  # ranks consume in step
        for it in iterators:
            next(it)
    state = samplers[0].state_dict()
    for rank in range(4):
        fresh = ShardSampler(SHARDS, seed=9, rank=rank, world_size=4)
        fresh.load_state_dict(state)
        assert list(fresh) == wholes[rank][130:]


def test_a_state_of_another_dataset_or_order_is_refused():
    state = ShardSampler(SHARDS, window=4).state_dict()
    other = SHARDS.copy()
    other[[10, 60]] = other[[60, 10]]
    with pytest.raises(ValueError, match="another dataset"):
        ShardSampler(other, window=4).load_state_dict(state)
    with pytest.raises(ValueError, match="another dataset"):
        ShardSampler(SHARDS[:-1], window=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"window=4 \(this sampler has 8\)"):
        ShardSampler(SHARDS, window=8).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size=1"):
        ShardSampler(SHARDS, window=4, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="past this rank's epoch"):
        ShardSampler(SHARDS, window=4).load_state_dict({**state, "position": len(SHARDS) + 1})
    with pytest.raises(ValueError, match="yielded only 0"):
        ShardSampler(SHARDS).state_dict(consumed=5)


def test_prefetch_runs_ahead_in_another_thread_and_ends_with_the_epoch():
    calls, called = [], {}
    lock = threading.Lock()

    def prefetch(shards):
        with lock:
            calls.append((tuple(shards), threading.get_ident()))
            called.setdefault(tuple(shards), threading.Event()).set()

    def event(shards):
        with lock:
            return called.setdefault(tuple(shards), threading.Event())

    for ahead in (1, 2):
        calls.clear()
        called.clear()
        sampler = ShardSampler(SHARDS, window=3, seed=4, prefetch=prefetch, ahead=ahead)
        windows = sampler.windows()
        ids = window_ids(sampler.order(), SHARDS, windows)
        current = -1
        for position, _ in enumerate(sampler):
            if ids[position] != current:  # the first record of a window
                current = ids[position]
                if current:  # fetched before any of its records was read
                    assert event(windows[current]).is_set()
                for w in range(current, min(current + ahead, len(windows) - 1) + 1):
                    # fetched while this window is read
                    assert event(windows[w]).wait(10), f"window {w} never prefetched"
                with lock:
                    fetched = [windows.index(list(c[0])) for c in calls]
                assert max(fetched) <= current + ahead  # never more than `ahead` windows ahead
        assert [list(c[0]) for c in calls] == windows  # each window once, in order
        assert {c[1] for c in calls} != {threading.get_ident()} and len({c[1] for c in calls}) == 1
        assert prefetch_threads() == []  # ended with the epoch


def test_the_prefetch_thread_ends_when_the_epoch_is_broken_off():
    started = threading.Event()
    sampler = ShardSampler(SHARDS, window=2, prefetch=lambda shards: started.set())
    iterator = iter(sampler)
    next(iterator)
    assert started.wait(10) and len(prefetch_threads()) == 1
    assert prefetch_threads()[0].daemon
    iterator.close()  # what `del` or garbage collection does to a generator
    assert prefetch_threads() == []
    iterator = iter(sampler)
    next(iterator)
    del iterator
    assert prefetch_threads() == []


def test_a_prefetch_error_is_raised_by_the_iteration():
    def prefetch(shards):
        if shards == sampler.windows()[2]:
            raise OSError("cannot fetch the shard")

    sampler = ShardSampler(SHARDS, window=2, prefetch=prefetch)
    read = 0
    with pytest.raises(OSError, match="cannot fetch the shard"):
        for _ in sampler:
            read += 1
            time.sleep(0.0005)
    assert read < len(SHARDS) and prefetch_threads() == []

    entered = threading.Event()

    def failing(shards):
        entered.set()
        time.sleep(0.05)
        raise RuntimeError("down")

    iterator = iter(ShardSampler([0, 0, 1], window=1, prefetch=failing, ahead=0))
    assert sorted(next(iterator) for _ in range(3)) == [0, 1, 2]
    assert entered.wait(10)
    with pytest.raises(RuntimeError, match="down"):  # even when the reader is already done
        next(iterator)
    assert prefetch_threads() == []


def test_a_dataloader_with_workers_reads_in_the_samplers_order_and_resumes_exactly():
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    data = [i * 10 for i in range(len(SHARDS))]  # a map-style dataset: a list
    sampler = ShardSampler(SHARDS, window=2, seed=1)
    sampler.set_epoch(3)
    expected = sampler.order()
    loader = DataLoader(data, batch_size=16, sampler=sampler, num_workers=2)
    seen = [int(x) for batch in loader for x in batch]
    assert seen == [data[i] for i in expected]

    # resume with workers: the loader drew batches ahead, so record what the loop consumed
    loader = DataLoader(data, batch_size=16, sampler=sampler, num_workers=2, prefetch_factor=2)
    batches = iter(loader)
    consumed = [int(x) for _ in range(5) for x in next(batches)]
    assert sampler.yielded > len(consumed)  # the loader is ahead of the loop
    state = sampler.state_dict(consumed=sampler.start + 5 * 16)
    del batches
    fresh = ShardSampler(SHARDS, window=2, seed=1)
    fresh.load_state_dict(state)
    loader = DataLoader(data, batch_size=16, sampler=fresh, num_workers=2)
    rest = [int(x) for batch in loader for x in batch]
    assert consumed + rest == [data[i] for i in expected]

    # without workers the loader draws a batch when the loop asks: state_dict() is exact
    fresh = ShardSampler(SHARDS, window=2, seed=1)
    fresh.set_epoch(3)
    batches = iter(DataLoader(data, batch_size=16, sampler=fresh))
    head = [int(x) for _ in range(3) for x in next(batches)]
    assert fresh.state_dict()["position"] == 48
    again = ShardSampler(SHARDS, window=2, seed=1)
    again.load_state_dict(fresh.state_dict())
    tail = [int(x) for b in DataLoader(data, batch_size=16, sampler=again) for x in b]
    assert head + tail == [data[i] for i in expected]


def test_a_real_sharded_pack_through_its_catalogs_shard_column(sample_sharded_pack):
    dataset = imgpack.ImageDataset(sample_sharded_pack, split="train")
    with imgpack.open(sample_sharded_pack) as pack:
        shard_of_record = pack.catalog.table(["shard"]).column("shard").to_numpy()
    shards = shard_of_record[np.asarray(dataset.indices)]  # what ImageDataset.sampler() passes
    assert len(set(shards.tolist())) > 3
    sampler = ShardSampler(shards, window=2)
    order = list(sampler)
    assert sorted(order) == list(range(len(dataset)))
    assert [dataset[i] for i in order] == dataset.__getitems__(order)
    assert sorted(s for w in sampler.windows() for s in w) == sorted(set(shards.tolist()))
    ids = window_ids(order, shards, sampler.windows())
    assert ids == sorted(ids)


def test_shuffle_quality_lies_between_reading_in_sequence_and_a_random_permutation():
    shards = np.repeat(np.arange(60), 1000)
    sequential = shuffle_quality(np.arange(len(shards)), shards)
    randomly = shuffle_quality(np.random.default_rng(0).permutation(len(shards)), shards)
    assert sequential["mean_gap"] == 1 and sequential["shards_per_batch"] == pytest.approx(1, 0.1)
    assert randomly["mean_gap"] == pytest.approx(60, rel=0.05)
    assert randomly["mean_span"] > 0.99 and sequential["mean_span"] == pytest.approx(1 / 60)
    last = sequential
    for window in (2, 4, 8):
        quality = shuffle_quality(ShardSampler(shards, window=window).order(), shards)
        assert quality["mean_gap"] == pytest.approx(window, rel=0.1)
        assert quality["mean_span"] == pytest.approx(window / 60, rel=0.1)
        assert quality["same_shard_neighbours"] == pytest.approx(1 / window, rel=0.15)
        assert last["mean_gap"] < quality["mean_gap"] < randomly["mean_gap"]
        assert last["shards_per_batch"] < quality["shards_per_batch"] <= window + 1
        assert quality["shards_per_batch"] < randomly["shards_per_batch"]
        last = quality


def test_a_million_indices_are_planned_well_under_a_second():
    shards = np.repeat(np.arange(1000), 1000)
    start = time.perf_counter()
    sampler = ShardSampler(shards, window=4, world_size=2, rank=1)
    sampler.set_epoch(1)
    assert len(sampler.order()) == 500_000
    assert time.perf_counter() - start < 1.5  # about 0.1 s; generous for a loaded machine
