"""The planner places a block of records as columns exactly as it places them one by one: the
same shard cuts (by bytes, by count, an oversized first image), slots, sources and task names."""

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from imgpack.params import PackParams
from imgpack.write import pack_plan
from imgpack.write.layout import ShardLayout
from imgpack.write.pack_plan import Planner, Previous

LAYOUT = ShardLayout(shard_bytes=1000, map_size=8 << 20, batch_bytes=1 << 20)


def records(count: int, seed: int) -> list[dict]:
    """Rows as the manifest has them: sizes mostly small, some that fill a shard exactly (250,
    500, 1000), some over a whole shard."""
    rng = random.Random(seed)
    return [
        {
            "key": f"k/{n:05d}.png",
            "size": rng.choice(
                [rng.randint(1, 120)] * 6 + [250, 500, 1000, rng.randint(900, 3000)]
            ),
            "hash": hashlib.sha256(str(n).encode()).hexdigest(),
            "format": rng.choice(["PNG", "JPEG"]),
            "width": rng.randint(1, 99),
            "height": rng.randint(1, 99),
        }
        for n in range(count)
    ]


def planner(tmp_path, previous: Previous) -> Planner:
    folder, out = str(tmp_path / "raw"), tmp_path / "p.lmdb"
    return Planner(out, folder, "sha256", PackParams(), LAYOUT, tmp_path, previous, None)


def by_rows(planner: Planner, rows, claims):
    places, tasks = [], []
    for ordinal, row in enumerate(rows):
        claim = tuple(int(c) for c in claims[ordinal]) if claims[ordinal][0] >= 0 else None
        place, done = planner.place(ordinal, row, claim)
        places.append(place)
        tasks += [done] if done else []
    return places, tasks + [planner.finish()]


def by_blocks(planner: Planner, rows, claims, block: int):
    places, tasks = [], []
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        ordinals = np.arange(start, start + len(part))
        table = pa.Table.from_pylist(part)
        shards, slots, done = planner.place_block(ordinals, table, claims[start : start + block])
        places += list(zip(shards.tolist(), slots.tolist(), strict=True))
        tasks += done
    return places, tasks + [planner.finish()]


@pytest.mark.parametrize("block", [1, 7, 64, 5000])
def test_a_block_is_cut_and_named_as_its_records_one_by_one(tmp_path, monkeypatch, block):
    monkeypatch.setattr(pack_plan, "SHARD_IMAGES", 9)  # the count cut, at a test's size
    monkeypatch.setattr("imgpack.write.layout.SHARD_IMAGES", 9)
    rows = records(600, seed=block)
    claims = np.full((len(rows), 2), -1, np.int64)
    for ordinal in random.Random(1).sample(range(len(rows)), 40):  # in a shard being compacted
        claims[ordinal] = (0, ordinal % 13)
    previous = Previous(tmp_path, [tmp_path / "older.lmdb"], [{}])

    places, tasks = by_rows(planner(tmp_path, previous), rows, claims)
    block_places, block_tasks = by_blocks(planner(tmp_path, previous), rows, claims, block)

    assert block_places == places
    assert [t.path for t in block_tasks] == [t.path for t in tasks]
    assert [t.sources for t in block_tasks] == [t.sources for t in tasks]
    counts = [len(t.sources) for t in tasks]
    assert max(counts) == 9 and min(counts) == 1  # cut by count, and an oversized image alone
    kinds = b"".join(t.sources.kinds for t in tasks)
    assert kinds.count(b"o") == 40 and kinds.count(b"f") == 560
