"""The image-bytes side of a Pack: Record, reads by index or key, batches and RSS-flat scans."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from imgpack.read.shards import ImageTable

__all__ = ["ImageReads", "Record"]

_CHUNK_RECORDS = 256  # a full scan reads this many records at a time (photos: ~25 MB)
_RELEASE_BYTES = 16 << 20  # and drops the pages it has read from RSS after this many bytes


class _Described(Protocol):
    """What a Record asks its pack for (`CatalogLookups` gives it to `Pack`)."""

    def key_of(self, i: int) -> str: ...

    def meta(self, i: int) -> dict[str, Any]: ...

    def label_of(self, i: int) -> str: ...


class Record:
    """One stored image: `index`, original file bytes `data`; `key`, `meta`, `label` from the catalog."""

    __slots__ = ("index", "data", "_pack")

    def __init__(self, index: int, data: bytes, pack: _Described):
        self.index, self.data, self._pack = index, data, pack

    @property
    def key(self) -> str:
        return self._pack.key_of(self.index)

    @property
    def meta(self) -> dict[str, Any]:
        return self._pack.meta(self.index)

    @property
    def label(self) -> str:
        return self._pack.label_of(self.index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.index, self.key, self.data) == (other.index, other.key, other.data)

    __hash__ = None

    def __repr__(self) -> str:
        return f"<imgpack.Record {self.index} {self.key!r} {len(self.data)} bytes>"


class ImageReads:
    """Pack's methods that read image bytes, through its `ImageTable` (a mixin of `Pack`).

    Pack provides `_table` (None until `locate()` builds it), `locate`, `_count`, `_index` (a
    range-checked record index) and, from `CatalogLookups`, `index_of`.
    """

    _table: ImageTable | None
    _count: int
    _index: Callable[[Any], int]
    locate: Callable[[], ImageTable]
    index_of: Callable[[str], int]

    def __getitem__(self, i: Any) -> Record:
        if isinstance(i, str):
            return self.get(i)
        if isinstance(i, slice):
            return self.read_many(range(*i.indices(self._count)))
        i = self._index(i)
        return Record(i, (self._table or self.locate()).read(i), self)

    def get(self, key: str) -> Record:
        return self[self.index_of(key)]

    def data(self, i: int) -> bytes:
        """The original image bytes of record `i`."""
        return (self._table or self.locate()).read(self._index(i))

    def data_many(self, indices: Iterable[int], checked: bool = False) -> list[bytes]:
        """Original bytes of many records, in the order asked.

        `checked=True` skips range checks for indices the caller already validated.
        """
        if not checked:
            indices = [self._index(i) for i in indices]
        return (self._table or self.locate()).read_many(indices)

    def read_many(self, items: Iterable[int | str]) -> list[Record]:
        """Read many records, by index or key, in the order asked."""
        indices = [self.index_of(x) if isinstance(x, str) else self._index(x) for x in items]
        table = self._table or self.locate()
        return [
            Record(i, data, self) for i, data in zip(indices, table.read_many(indices), strict=True)
        ]

    def __iter__(self) -> Iterator[Record]:
        """All records in key order, read a chunk at a time; pages already read leave the RSS."""
        for first, chunk in self.scan():
            for offset, data in enumerate(chunk):
                yield Record(first + offset, data, self)

    def iter_data(self) -> Iterator[bytes]:
        """The image bytes of every record in key order, as `scan` reads them."""
        for _, chunk in self.scan():
            yield from chunk

    def scan(self, chunk: int = _CHUNK_RECORDS) -> Iterator[tuple[int, list[bytes]]]:
        """(first index, image bytes of the next `chunk` records), in key order.

        Every full read (iteration, validate, verify, export) goes through here: every
        `_RELEASE_BYTES` the pages already read leave this process's RSS, so memory stays flat
        however large the pack.
        """
        table = self._table or self.locate()
        since_release = 0
        for first in range(0, self._count, chunk):
            indices = range(first, min(first + chunk, self._count))
            datas = table.read_many(indices)
            yield first, datas
            since_release += sum(map(len, datas))
            if since_release >= _RELEASE_BYTES:
                table.release_pages(indices)
                since_release = 0
