"""Contender: HDF5 as in the CIFAR comparison, one uint8 array dataset plus a label dataset."""

import os
import sys

import h5py
import numpy as np
from PIL import Image

from bench.data import image_paths


def main(raw: str, out: str) -> None:
    paths = image_paths(raw)
    images = np.stack([np.asarray(Image.open(p)) for p in paths])
    labels = [os.path.basename(os.path.dirname(p)) for p in paths]
    with h5py.File(out, "w") as handle:
        handle.create_dataset("images", data=images, dtype=np.uint8)
        handle.create_dataset("labels", data=np.array(labels, dtype="S"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
