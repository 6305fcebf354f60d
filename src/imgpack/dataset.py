"""A map-style dataset over a pack for PyTorch's DataLoader (torch itself is never imported)."""

from __future__ import annotations

import io
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from imgpack.handles import MappedImages
from imgpack.reader import Pack

__all__ = ["ImageDataset"]

DECODERS = ("bytes", "pil", "numpy")


def _decode(data: bytes, how: str, mode: str | None) -> Any:
    if how == "bytes":
        return data
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    if mode is None and image.mode == "P":
        mode = "RGB"  # palette indices are not pixel values
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    if how == "pil":
        return image
    import numpy as np

    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels  # always HWC


class ImageDataset:
    """`dataset[i]` is `(image, target)` (or `(image, target, meta)`), image as bytes, PIL or HWC uint8.

    `mode` converts decoded images (e.g. "RGB", "L"); by default palette images become RGB.
    Picklable for spawn/forkserver workers: only the path and two small arrays travel, and each
    process opens the pack once, lazily. `target` is the label's index in `classes`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        decode: str = "bytes",
        mode: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        split: str | None = None,
        indices: Iterable[int] | None = None,
        return_meta: bool = False,
    ):
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {', '.join(DECODERS)}, not {decode!r}")
        self.path = os.fspath(path)
        self.decode = decode
        self.mode = mode
        self.transform = transform
        self.target_transform = target_transform
        self.return_meta = return_meta
        self._pack: Pack | None = None
        self._images: MappedImages | None = None
        pack = self.pack
        self.classes: list[str] = list(pack.header["classes"])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        # One pass over metadata (never image bytes): class index of every record, and the split.
        self._all_targets = array("i")
        chosen = array("q")
        for index, meta in pack.iter_meta():
            self._all_targets.append(self.class_to_idx[meta["label"]])
            if split is None or meta["split"] == split:
                chosen.append(index)
        if indices is not None:
            wanted = array("q", (int(i) for i in indices))
            if split is not None:
                allowed = set(chosen)
                wanted = array("q", (i for i in wanted if i in allowed))
            for i in wanted:
                if not 0 <= i < len(pack):
                    raise IndexError(f"record {i} out of range for a pack of {len(pack)}")
            chosen = wanted
        self.split = split
        # The whole pack in order is a range: no table, and no memory touched to map a position.
        self._indices = range(len(pack)) if split is None and indices is None else chosen
        # Located here, so forked DataLoader workers inherit the table instead of rebuilding it.
        self._images = pack.locate()
        # Raw bytes with no callbacks: the hot path skips decoding and transform dispatch.
        self._plain = decode == "bytes" and not (transform or target_transform or return_meta)

    # -- process-local handle ----------------------------------------------------------------------
    @property
    def pack(self) -> Pack:
        if self._pack is None:
            self._pack = Pack(self.path)
        return self._pack

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pack"] = state["_images"] = None  # handles never travel; each worker opens its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- map-style protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    @property
    def indices(self) -> Sequence[int]:
        """Record index in the pack of each position of this dataset."""
        return self._indices

    @property
    def targets(self) -> list[int]:
        return [self._all_targets[i] for i in self._indices]

    def _sample(self, index: int, data: bytes) -> tuple:
        image = _decode(data, self.decode, self.mode)
        if self.transform is not None:
            image = self.transform(image)
        target = self._all_targets[index]
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.return_meta:
            return image, target, self.pack.meta(index)
        return image, target

    def _located(self) -> MappedImages:
        self._images = self.pack.locate()
        return self._images

    def __getitem__(self, position: int) -> tuple:
        index = self._indices[position]  # checked against the pack in __init__
        images = self._images or self._located()
        data = images.map[images.starts[index] : images.ends[index]]
        if self._plain:
            return data, self._all_targets[index]
        return self._sample(index, data)

    def __getitems__(self, positions: Sequence[int]) -> list[tuple]:
        """A whole batch in one call (DataLoader calls this for batched samplers)."""
        chosen = self._indices
        images = self._images or self._located()
        mapped, starts, ends = images.map, images.starts, images.ends
        indices = [chosen[p] for p in positions]
        if self._plain:
            targets = self._all_targets
            return [(mapped[starts[i] : ends[i]], targets[i]) for i in indices]
        return [self._sample(i, mapped[starts[i] : ends[i]]) for i in indices]

    # -- selection ---------------------------------------------------------------------------------
    def subset(self, rows: Any) -> ImageDataset:
        """A dataset of the given records: a DataFrame or Series from `metadata()`, or indices."""
        import pandas as pd

        if isinstance(rows, (pd.DataFrame, pd.Series)):
            rows = rows.index
        clone = object.__new__(ImageDataset)
        clone.__dict__.update(self.__getstate__())
        clone._indices = array("q", (int(i) for i in rows))
        return clone

    def metadata(self, columns: Sequence[str] | None = None):
        """The catalog of this dataset's records (indexed by record index), without image bytes."""
        frame = self.pack.metadata(columns=columns)
        return frame.loc[list(self._indices)]
