"""A map-style dataset over a pack for PyTorch's DataLoader (torch itself is never imported)."""

from __future__ import annotations

import io
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgpack.errors import PackChangedError, PackFormatError
from imgpack.format import tables as cat
from imgpack.read.pack import Pack
from imgpack.read.shards import ImageTable

if TYPE_CHECKING:
    from imgpack.read.sampler import ShardSampler
    from imgpack.read.stream import StreamSource

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


def _chosen(
    columns: pa.Table, split: str | None, indices: Iterable[int] | None, count: int
) -> Sequence[int]:
    """The records a dataset holds: those of `split` (a column of `columns`), then of `indices`."""
    chosen = None
    if split is not None:
        splits = columns.column("split")
        present = splits.unique()  # a value set without converting `split` (see targets below)
        names = present.to_pylist()
        at = present.slice(names.index(split), 1) if split in names else present.slice(0, 0)
        where = pc.indices_nonzero(pc.is_in(splits, value_set=at))
        chosen = array("q", cat.numpy_of(where).astype(np.int64).tobytes())
    if indices is not None:
        wanted = np.fromiter((int(i) for i in indices), dtype=np.int64)
        if split is not None:
            wanted = wanted[np.isin(wanted, np.frombuffer(chosen, dtype=np.int64))]
        bad = (wanted < 0) | (wanted >= count)
        if bad.any():
            raise IndexError(f"record {wanted[bad][0]} out of range for a pack of {count}")
        chosen = array("q", wanted.tobytes())
    # The whole pack in order is a range: no table, and no memory touched to map a position.
    return range(count) if chosen is None else chosen


class ImageDataset:
    """`dataset[i]` is `(image, target)` (or `(image, target, meta)`), image as bytes, PIL or HWC uint8.

    `mode` converts decoded images (e.g. "RGB", "L"); by default palette images become RGB.
    Picklable for spawn/forkserver workers: only the path, the pack's version and two small
    arrays travel, and each process opens the pack once, lazily, refusing another version
    (PackChangedError). `target` is the label's index in `classes`.

    `stream=True` reads the pack straight from its DVC remote (`rev`, `remote`, `cache_limit`
    as `imgpack.open` takes them): a shard is fetched into the machine's shard cache the first
    time one of its records is read; the resolved remote travels to workers with the dataset.
    `sampler()` gives a DataLoader the shard-aware order that reads each shard once an epoch.
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
        rev: str | None = None,
        stream: bool = False,
        cache_limit: int | str | None = None,
        remote: str | None = None,
    ):
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {', '.join(DECODERS)}, not {decode!r}")
        self._pack: Pack | None = None
        self._stream: StreamSource | None = None
        if stream:  # straight from the DVC remote, a shard at a time (see read/stream.py)
            self._pack = Pack(path, rev, stream=True, cache_limit=cache_limit, remote=remote)
            self._stream = self._pack.stream
        elif cache_limit is not None or remote is not None:
            raise ValueError("cache_limit and remote apply to a streamed pack: pass stream=True")
        elif rev is not None:  # train on the dataset as of a git revision, fetched through DVC
            from imgpack.read.revisions import fetch_pack

            path = fetch_pack(path, rev)
        self.path = os.fspath(path)
        self.decode = decode
        self.mode = mode
        self.transform = transform
        self.target_transform = target_transform
        self.return_meta = return_meta
        self._images: ImageTable | None = None
        self._version: str | None = None
        pack = self.pack
        # Indices and targets below are this version's: a worker must read no other.
        self._version = pack.identity
        self.classes: list[str] = list(pack.header["classes"])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        # Two catalog columns, never image bytes: each record's class index, and the split.
        columns = pack.catalog.table(["label"] if split is None else ["label", "split"])
        # Through the labels present, not pa.array(classes): making Arrow values from Python
        # objects imports pandas (0.3 s) on the first call, which the first record would wait for.
        labels = columns.column("label")
        present = labels.unique()
        to_class = np.array([self.class_to_idx.get(v, -1) for v in present.to_pylist()], np.int32)
        targets = to_class[cat.numpy_of(pc.index_in(labels, value_set=present))]
        if (targets < 0).any():
            raise PackFormatError(f"{pack.path}: a record's label is not in the header's classes")
        self._all_targets = array("i", targets.tobytes())
        self.split = split
        self._indices = _chosen(columns, split, indices, len(pack))
        # Located here, so forked DataLoader workers inherit the table instead of rebuilding it.
        self._images = pack.locate()
        # Raw bytes with no callbacks: the hot path skips decoding and transform dispatch.
        self._plain = decode == "bytes" and not (transform or target_transform or return_meta)

    # -- process-local handle ----------------------------------------------------------------------
    @property
    def pack(self) -> Pack:
        if self._pack is None:
            pack = Pack(self.path) if self._stream is None else Pack.from_stream(self._stream)
            if self._version is not None and pack.identity != self._version:
                pack.close()
                raise self._changed()
            self._pack = pack
        return self._pack

    def _changed(self) -> PackChangedError:
        return PackChangedError(
            f"{self.path} changed since this dataset was made (another version was published); "
            "create the dataset (and its DataLoader) again"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pack"] = state["_images"] = None  # handles never travel; each worker opens its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._version = None  # pickled by an imgpack that did not record the version
        self._stream = None  # nor streamed
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
            return image, target, self._meta(index)
        return image, target

    def _meta(self, index: int) -> dict[str, Any]:
        try:
            return self.pack.meta(index)
        except PackChangedError:  # a forked worker's pack, reopening its catalog after a publish
            raise self._changed() from None

    def _located(self) -> ImageTable:
        self._images = self.pack.locate()
        return self._images

    def __getitem__(self, position: int) -> tuple:
        index = self._indices[position]  # checked against the pack in __init__
        data = (self._images or self._located()).read(index)
        if self._plain:
            return data, self._all_targets[index]
        return self._sample(index, data)

    def __getitems__(self, positions: Sequence[int]) -> list[tuple]:
        """A whole batch in one call (DataLoader calls this for batched samplers)."""
        chosen = self._indices
        images = self._images or self._located()
        indices = [chosen[p] for p in positions]
        datas = images.read_many(indices)
        if self._plain:
            targets = self._all_targets
            return [(data, targets[i]) for i, data in zip(indices, datas, strict=True)]
        return [self._sample(i, data) for i, data in zip(indices, datas, strict=True)]

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
        """The catalog of this dataset's records (indexed by record index), without image bytes.

        (Streamed: without `hash` unless named, as `Pack.metadata` says.)"""
        frame = self.pack.metadata(columns=columns)
        return frame.iloc[np.asarray(self._indices, dtype=np.int64)]

    # -- the shard-aware order -----------------------------------------------------------------------
    def sampler(
        self,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 4,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        ahead: int = 1,
    ) -> ShardSampler:
        """Positions of this dataset for a DataLoader's `sampler=`, a window of shards at a time.

        Each epoch visits the shards in an order drawn from (seed, epoch), `window` shards at a
        time, their records shuffled together, so each shard is read once an epoch; rank `rank`
        of `world_size` (DDP) gets its own equal, disjoint part. Call `set_epoch(epoch)` before
        each epoch; `state_dict()`/`load_state_dict()` resume one exactly (see
        read/sampler.py). A background thread of this process works `ahead` windows ahead: for
        a streamed pack it fetches those shards into the shard cache (and tells the cache which
        shards are read next, so it keeps them), for a local one it asks the kernel to read them
        ahead. Streamed, each reading process holds at most `window` shards at once (fewer if
        the cache_limit is tight); a window the cache cannot hold is refused (InputError).
        """
        from imgpack.read.sampler import ShardSampler

        pack = self.pack
        shard_of = cat.numpy_of(pack.catalog.table(["shard"]).column("shard"))
        shards = shard_of[np.asarray(self._indices, dtype=np.int64)]
        sampler = ShardSampler(
            shards,
            shuffle=shuffle,
            seed=seed,
            window=window,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            ahead=ahead,
        )
        pack.check_window(sampler.window)
        sampler.prefetch = pack.prefetcher(sampler.ahead)
        if self._stream is not None:
            self._stream.keep = sampler.window  # travels to the workers with the dataset
        return sampler
