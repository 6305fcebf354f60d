"""Shuffled and sequential reads of every image: imgpack vs files, the bare txn.get loop, (a), (b), HDF5."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import struct
from pathlib import Path

import lmdb

import imgpack
from bench.data import WORK
from bench.packing import CONTENDERS
from bench.timing import clock, median, rounds, run_process


def _build(raw: Path, out_dir: Path) -> dict[str, Path]:
    paths = {
        "imgpack": out_dir / "imgpack.lmdb",
        "a": out_dir / "a.lmdb",
        "b": out_dir / "b.lmdb",
        "hdf5": out_dir / "images.h5",
    }
    labels = {
        "imgpack": "imgpack build",
        "a": "(a) LMDB bytes, putmulti",
        "b": "(b) LMDB pickled arrays",
        "hdf5": "HDF5 arrays",
    }
    for kind, path in paths.items():
        run_process(CONTENDERS[labels[kind]](raw, path))
    return paths


def measure(raw: Path, name: str, runs: int, batch: int = 64) -> dict:
    out_dir = WORK / "reads" / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    built = _build(raw, out_dir)

    dataset = imgpack.ImageDataset(built["imgpack"])
    pack = dataset.pack
    keys = list(pack.keys())
    n = len(keys)
    order = list(range(n))
    random.Random(0).shuffle(order)
    files = [os.path.join(raw, keys[i]) for i in order]
    batches = [order[s : s + batch] for s in range(0, n, batch)]

    # LMDB allows one environment per file per process: the bare loop reads byte-identical
    # copies of the pack's shard files, record i at its catalog (shard, slot).
    shards = []
    for number, path in enumerate(pack.shard_paths):
        copy = out_dir / f"bare-{number}.lmdb"
        shutil.copyfile(path, copy)
        env = lmdb.open(str(copy), subdir=False, readonly=True, lock=False, max_dbs=8)
        txn = env.begin()
        shards.append((txn, env.open_db(b"images", txn=txn, create=False)))
    where = pack.catalog.table(["shard", "slot"])
    shard_of, slot_of = where.column("shard").to_pylist(), where.column("slot").to_pylist()
    bare_reads = [
        (shards[shard_of[i]][0].get, struct.pack(">Q", slot_of[i]), shards[shard_of[i]][1])
        for i in order
    ]

    a_env = lmdb.open(str(built["a"]), subdir=False, readonly=True, lock=False)
    a_txn = a_env.begin()
    a_keys = [keys[i].encode() for i in order]

    b_env = lmdb.open(str(built["b"]), subdir=False, readonly=True, lock=False)
    b_txn = b_env.begin()
    b_keys = [f"{i:08d}".encode() for i in order]  # (b) numbers images in sorted path order too

    import h5py

    h5 = h5py.File(built["hdf5"], "r")
    h5_images = h5["images"]

    in_order = [os.path.join(raw, key) for key in keys]

    def files_read(paths=files):
        for path in paths:
            with open(path, "rb") as handle:
                handle.read()

    contenders = {
        "imgpack dataset[i], shuffled": clock(lambda: [dataset[i] for i in order]),
        "imgpack batch of 64, shuffled": clock(lambda: [dataset.__getitems__(b) for b in batches]),
        "imgpack pack[i].data, shuffled": clock(lambda: [pack[i].data for i in order]),
        "imgpack iteration, in order": clock(lambda: [r.data for r in pack]),
        "individual files, shuffled": clock(files_read),
        "individual files, in key order": clock(lambda: files_read(in_order)),
        "bare txn.get loop, shuffled": clock(lambda: [get(k, db=db) for get, k, db in bare_reads]),
        "(a) txn.get by path, shuffled": clock(lambda: [a_txn.get(k) for k in a_keys]),
        "(b) get + unpickle, shuffled": clock(
            lambda: [pickle.loads(b_txn.get(k)).get_image() for k in b_keys]
        ),
        "HDF5 images[i], shuffled": clock(lambda: [h5_images[i] for i in order]),
    }
    for warm in contenders.values():  # page cache warm for everyone
        warm()
    times = rounds(contenders, runs)
    base = median(times["imgpack dataset[i], shuffled"])
    rows = {
        label: {
            "seconds": median(values),
            "runs": values,
            "us_per_image": median(values) / n * 1e6,
            "time_vs_imgpack_single": median(values) / base,
        }
        for label, values in times.items()
    }
    h5.close()
    for handle in (a_env, b_env, env):
        handle.close()
    dataset.pack.close()
    shutil.rmtree(out_dir, ignore_errors=True)
    files_time = rows["individual files, shuffled"]["seconds"]
    bare_time = rows["bare txn.get loop, shuffled"]["seconds"]
    return {
        "images": n,
        "contenders": rows,
        "targets": {
            "files_over_imgpack_single": files_time
            / rows["imgpack dataset[i], shuffled"]["seconds"],
            "files_over_imgpack_batch": files_time
            / rows["imgpack batch of 64, shuffled"]["seconds"],
            "imgpack_single_over_bare": rows["imgpack dataset[i], shuffled"]["seconds"] / bare_time,
            "imgpack_batch_over_bare": rows["imgpack batch of 64, shuffled"]["seconds"] / bare_time,
            "pack_item_over_dataset_item": rows["imgpack pack[i].data, shuffled"]["seconds"]
            / rows["imgpack dataset[i], shuffled"]["seconds"],
            "files_in_order_over_iteration": rows["individual files, in key order"]["seconds"]
            / rows["imgpack iteration, in order"]["seconds"],
        },
    }
