"""The catalog side of a Pack: keys and aliases found by bisection, each record's metadata, frames."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from imgpack.format import tables as cat
from imgpack.read.catalog import Catalog, SortedKeys

__all__ = ["CatalogLookups"]


class CatalogLookups:
    """Pack's methods that read the catalog and never an image byte (a mixin of `Pack`).

    Pack provides `catalog`, `header` and `_index` (a range-checked record index); the tables
    cached here are dropped by `_forget_lookups` when the pack closes. With `_lazy_digests` (a
    pack streamed from its DVC remote) the digests, which live in the shards, are read only when
    asked for: a record's own with `meta(i)`, every record's with the `hash` column.
    """

    catalog: Catalog
    header: dict[str, Any]
    _index: Callable[[Any], int]
    _lazy_digests = False

    def _forget_lookups(self) -> None:
        self._rows = self._keys = self._aliases = self._labels = None

    def _full_catalog(self):
        if self._rows is None:
            if self._lazy_digests:  # every column but the digests, and where each record lies
                wanted = [c for c in self.catalog.columns if c != "hash"]
                self._rows = self.catalog.table(wanted + list(cat.LOCATION_COLUMNS))
            else:
                self._rows = self.catalog.table()
        return self._rows

    def _sorted_keys(self) -> SortedKeys:
        if self._keys is None:
            self._keys = SortedKeys(self.catalog.table(["key"]).column("key"))
        return self._keys

    def _alias_table(self) -> tuple[SortedKeys, SortedKeys]:
        if self._aliases is None:
            table = self.catalog.aliases()
            self._aliases = (SortedKeys(table.column("alias")), SortedKeys(table.column("key")))
        return self._aliases

    def meta(self, i: int) -> dict[str, Any]:
        """Record `i`'s metadata: key, label, hash (hex), size, format, width, height, split, extra.

        (A streamed pack reads the digest from the record's shard, fetching it if need be.)"""
        i = self._index(i)
        rows = self._full_catalog()
        if not self._lazy_digests:
            return self.catalog.row(rows, i)
        values = {name: rows.column(name)[i].as_py() for name in rows.column_names}
        import numpy as np

        shard, slot = (np.array([values[c]], dtype=np.int64) for c in cat.LOCATION_COLUMNS)
        values["hash"] = self.catalog.digests(shard, slot)[0].as_py()
        return self.catalog.meta_dict(values)

    def label_of(self, i: int) -> str:
        if self._labels is None:  # one column: no digest read from the shards for a label
            rows = self._rows if self._rows is not None else self.catalog.table(["label"])
            self._labels = rows.column("label")
        return self._labels[self._index(i)].as_py()

    def key_of(self, i: int) -> str:
        return self._sorted_keys().text(self._index(i))

    def index_of(self, key: str) -> int:
        """Index of the record stored under `key` or under an alias of it (deduplicated content)."""
        raw = key.encode("utf-8", "surrogateescape")
        keys = self._sorted_keys()
        found = keys.find(raw)
        if found is None and self.header["aliases"]:
            aliases, targets = self._alias_table()
            at = aliases.find(raw)
            found = None if at is None else keys.find(targets[at])
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self.index_of(key)
        except KeyError:
            return False
        return True

    def keys(self) -> Iterator[str]:
        """Record keys in index order (aliases not included)."""
        keys = self._sorted_keys()
        return (keys.text(i) for i in range(len(keys)))

    def aliases(self) -> Iterator[tuple[str, str]]:
        """(alias, key of the stored record) for content stored once under several keys."""
        aliases, targets = self._alias_table()
        return ((aliases.text(i), targets.text(i)) for i in range(len(aliases)))

    def iter_meta(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, metadata) of every record, a catalog part at a time, without image bytes."""
        catalog = self.catalog
        for start, table in catalog.tables():
            for offset, values in enumerate(table.to_pylist()):
                yield start + offset, catalog.meta_dict(values)

    def metadata(
        self,
        columns: Sequence[str] | None = None,
        chunksize: int | None = None,
        filters: Any = None,
    ):
        """The catalog as a pandas DataFrame indexed by record, or an iterator of `chunksize` frames.

        `filters` selects rows like `pandas.read_parquet`'s: `[("label", "==", "3")]`, a list of
        such lists (OR of ANDs), or a `pyarrow.compute.Expression`. No image byte is read.

        A pack streamed from its DVC remote keeps its digests in its shards: there `columns=None`
        gives every column but `hash`, fetching nothing beyond the catalog; name `hash` among
        `columns` to have it, which fetches every shard the rows lie in (each is cached).
        """
        from imgpack.read.metadata import metadata_chunks, metadata_frame

        if columns is None and self._lazy_digests:
            columns = [c for c in self.catalog.columns if c != "hash"]

        if chunksize is None:
            return metadata_frame(self.catalog, columns, filters)
        return metadata_chunks(self.catalog, columns, filters, chunksize)
