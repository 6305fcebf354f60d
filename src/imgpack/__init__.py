"""imgpack: many small images plus a labels table into one versioned, validated LMDB pack."""

from __future__ import annotations

__version__ = "0.3.0"

from imgpack.errors import (  # noqa: E402
    ImgpackError,
    InputError,
    PackChangedError,
    PackCorruptError,
    PackFormatError,
    PolicyError,
    UnsafeKeyError,
    ValidationError,
)

# Readers load on first use: `import imgpack` stays light, and the CLI can choose Arrow's
# allocator before pyarrow is imported (see imgpack.stages).
_LAZY = {
    "open": ("imgpack.read.pack", "open_pack"),
    "Pack": ("imgpack.read.pack", "Pack"),
    "Record": ("imgpack.read.pack", "Record"),
    "ImageDataset": ("imgpack.read.dataset", "ImageDataset"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imgpack' has no attribute {name!r}")


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
    "PackChangedError",
    "ValidationError",
    "UnsafeKeyError",
]
