"""A shard's images hashed again against its own props and the catalog: the worker tasks of validate and verify."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imgpack.util.digests import file_digest


def check_shard(task: tuple[str, str]) -> list[int]:
    """Hash every image of the shard at `task[0]` again (`task[1]`: the algorithm); returns the
    slots whose bytes do not match the digest its props recorded, or are missing."""
    path, algorithm = task
    from imgpack.read.handles import acquire_env, release_env
    from imgpack.read.shards import read_props

    digests = read_props(Path(path), algorithm)
    env, identity = acquire_env(Path(path))  # shared: this process may have the pack open
    try:
        with env.begin(buffers=True) as txn:
            images = env.open_db(b"images", txn=txn, create=False)
            bad, seen = [], 0
            new_hash = getattr(hashlib, algorithm)  # sha256 or blake2b: faster than hashlib.new
            for raw_slot, data in txn.cursor(images):
                slot = int.from_bytes(raw_slot, "big")
                if slot >= len(digests) or new_hash(data).digest() != digests[slot]:
                    bad.append(slot)
                seen += 1
            if seen != len(digests):
                bad.extend(range(seen, len(digests)))
            return bad
    finally:
        release_env(identity)


def verify_shard(task: tuple[str, str, str]) -> tuple[list[int], bool]:
    """(slots whose bytes miss their digest, whether the file's sha256 is `task[2]`) of one shard
    (`task`: path, hash algorithm, expected file sha256 or "" for a one-file pack)."""
    path, algorithm, sha256 = task
    file_ok = not sha256 or file_digest(Path(path)) == sha256
    return check_shard((path, algorithm)), file_ok
