"""imgpack: many small images plus a labels table into one versioned, validated LMDB file."""

from __future__ import annotations

__version__ = "0.1.0"

from imgpack.dataset import ImageDataset  # noqa: E402
from imgpack.errors import (  # noqa: E402
    ImgpackError,
    InputError,
    PackCorruptError,
    PackFormatError,
    PolicyError,
    UnsafeKeyError,
    ValidationError,
)
from imgpack.reader import Pack, Record, open_pack  # noqa: E402

open = open_pack  # noqa: A001 - `imgpack.open(path)` is the documented entry point

__all__ = [
    "__version__",
    "open",
    "Pack",
    "Record",
    "ImageDataset",
    "ImgpackError",
    "InputError",
    "PolicyError",
    "PackFormatError",
    "PackCorruptError",
    "ValidationError",
    "UnsafeKeyError",
]
