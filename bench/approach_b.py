"""Contender (b): the published CIFAR comparison: decode each image, pickle one object per image, one put each.

Bench-only: it reproduces what that comparison did, pickle included. imgpack itself never pickles.
"""

import os
import pickle
import sys

import lmdb
import numpy as np
from PIL import Image

from bench.data import image_paths


class StoredImage:
    """The comparison's per-image object: pixel bytes, shape and label."""

    def __init__(self, image: np.ndarray, label: str):
        self.channels = image.shape[2] if image.ndim == 3 else 1
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.label = label

    def get_image(self) -> np.ndarray:
        shape = (*self.size, self.channels) if self.channels > 1 else self.size
        return np.frombuffer(self.image, dtype=np.uint8).reshape(shape)


def main(raw: str, out: str) -> None:
    paths = image_paths(raw)
    first = np.asarray(Image.open(paths[0]))
    env = lmdb.open(out, subdir=False, map_size=len(paths) * first.nbytes * 10 + (64 << 20))
    with env.begin(write=True) as txn:
        for i, path in enumerate(paths):
            value = StoredImage(
                np.asarray(Image.open(path)), os.path.basename(os.path.dirname(path))
            )
            txn.put(f"{i:08d}".encode(), pickle.dumps(value))
    env.close()


if __name__ == "__main__":
    # Pickle records the class by module name: run main from `bench.approach_b`, not `__main__`,
    # so readers can unpickle (one of pickle's traps for a shared format).
    from bench.approach_b import main as importable_main

    importable_main(sys.argv[1], sys.argv[2])
