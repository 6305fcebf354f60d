"""Floor: the putmulti packer plus the hashing imgpack must add (images; output files), on every core."""

import hashlib
import os
import sys

import lmdb

from bench.data import image_paths


def _pack(paths: list[str], raw: str, out: str, file_digest: bool) -> None:
    total = sum(os.path.getsize(p) for p in paths)
    env = lmdb.open(out, subdir=False, map_size=total * 2 + (64 << 20))
    for start in range(0, len(paths), 1000):
        batch = []
        for path in paths[start : start + 1000]:
            with open(path, "rb") as handle:
                data = handle.read()
            hashlib.sha256(data).digest()
            batch.append((os.path.relpath(path, raw).encode(), data))
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(batch)
    env.close()
    if not file_digest:
        return
    with open(out, "rb") as handle:
        hashlib.file_digest(handle, "sha256")


def main(raw: str, out: str, file_digest: bool = True) -> None:
    paths = image_paths(raw)
    cores = os.cpu_count() or 1
    children = []
    for number in range(cores):
        pid = os.fork()
        if pid == 0:
            try:
                _pack(paths[number::cores], raw, f"{out}.{number}", file_digest)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--no-file-digest" not in sys.argv[3:])
