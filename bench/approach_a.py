"""Contender (a): a small LMDB class storing each file's original bytes, putmulti in batches of 1000."""

import os
import sys

import lmdb

from bench.data import image_paths


def main(raw: str, out: str) -> None:
    paths = image_paths(raw)
    total = sum(os.path.getsize(p) for p in paths)
    env = lmdb.open(out, subdir=False, map_size=total * 2 + (64 << 20))
    for start in range(0, len(paths), 1000):
        batch = []
        for path in paths[start : start + 1000]:
            with open(path, "rb") as handle:
                batch.append((os.path.relpath(path, raw).encode(), handle.read()))
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(batch)
    env.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
