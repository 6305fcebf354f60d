"""Where each image's bytes lie in the pack file, found by walking the `images` B-tree's LMDB pages."""

from __future__ import annotations

import mmap
import struct
from array import array

import numpy as np

from imgpack.errors import REFETCH, PackCorruptError, PackFormatError

__all__ = ["UnknownLayout", "locate_images", "KNOWN_DATA_VERSION"]


class UnknownLayout(PackFormatError):
    """The file is valid LMDB in a layout this walker does not know: read it through LMDB instead."""


# LMDB 0.9's on-disk layout (mdb.c), in the machine's byte order as LMDB writes it.
_DB_RECORD = struct.Struct(
    "=IHHQQQQQ"
)  # MDB_db: pad, flags, depth, branch, leaf, overflow, entries, root
_PAGE_HEADER = 16  # PAGEHDRSZ: pgno u64, pad u16, flags u16, lower u16, upper u16 (u16 words 0-7)
_NODE_HEADER = 8  # lo u16, hi u16, flags u16, key size u16; then the key; then the value or a pgno
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA = 0x01  # the value lives on overflow pages; the node holds the first one's pgno
_KEY_SIZE = 8  # the format's record index key: 8-byte big-endian (codec.encode_index)
_LEAF_PAGES_PER_STEP = 4096  # bounds the temporary arrays to a few MB whatever the pack's size
_META = struct.Struct(
    "=II"
)  # MDB_meta starts with mm_magic, mm_version, right after the page header
_MAGIC = 0xBEEFC0DE
KNOWN_DATA_VERSION = 1  # MDB_DATA_VERSION of LMDB 0.9, the only layout this walker reads


def locate_images(
    file: mmap.mmap, db_record: bytes, page_size: int, count: int, where: str
) -> tuple[array, array]:
    """Walk the `images` sub-database: record `i`'s image is bytes `[starts[i], ends[i])` of the file.

    `file` is the whole pack mapped read-only, `db_record` the sub-database's MDB_db entry in LMDB's
    main database. Pages, nodes and ranges are bounds-checked against the file and the indices must
    be exactly 0..count-1 in order, so a damaged file raises PackCorruptError, never maps garbage.
    """
    if db_record is None:
        raise PackCorruptError(
            f"{where} has no images sub-database: the pack is damaged; {REFETCH}"
        )
    magic, version = _META.unpack_from(file, _PAGE_HEADER)
    if magic != _MAGIC or version != KNOWN_DATA_VERSION or len(db_record) != _DB_RECORD.size:
        raise UnknownLayout(
            f"{where}: LMDB data version {version} (magic {magic:#x}) is not the layout "
            f"{KNOWN_DATA_VERSION} this reader walks"
        )
    _, flags, depth, _, _, _, entries, root = _DB_RECORD.unpack(db_record)
    if flags != 0:
        raise PackFormatError(
            f"{where}: the images sub-database has LMDB flags {flags:#x} and imgpack writes none: "
            "rebuild the pack with imgpack"
        )
    if entries == count == 0:
        return array("q"), array("q")  # LMDB keeps no pages for an empty database
    if entries != count or depth < 1:
        raise PackCorruptError(
            f"{where}: the images sub-database holds {entries} entries but the header says {count}: "
            f"the pack is damaged; {REFETCH}"
        )
    walker = _Walker(file, page_size, where)
    try:
        pages = np.array([root], dtype=np.int64)
        for _ in range(depth - 1):
            pages = walker.children(pages)
        starts, ends = array("q"), array("q")
        for step in range(0, len(pages), _LEAF_PAGES_PER_STEP):
            first = len(starts)
            s, e = walker.values(pages[step : step + _LEAF_PAGES_PER_STEP], first, count)
            starts.frombytes(s.tobytes())
            ends.frombytes(e.tobytes())
            if hasattr(file, "madvise"):  # the leaf pages just read leave RSS: memory stays flat
                file.madvise(mmap.MADV_DONTNEED)
    finally:
        walker.release()  # numpy views export the map's buffer; the map cannot close while they live
    if len(starts) != count:
        raise PackCorruptError(
            f"{where}: {len(starts)} images are reachable in its B-tree but the header says {count}: "
            f"the pack is damaged; {REFETCH}"
        )
    return starts, ends


class _Walker:
    """Vectorised reads of LMDB page and node headers through numpy views of the mapped file."""

    def __init__(self, file: mmap.mmap, page_size: int, where: str):
        self.psize, self.where = page_size, where
        self.npages = len(file) // page_size
        usable = self.npages * page_size
        self.u8 = np.frombuffer(file, dtype=np.uint8, count=usable)
        self.u16 = self.u8.view(np.uint16)
        self.u64 = self.u8.view(np.uint64)

    def release(self) -> None:
        del self.u8, self.u16, self.u64

    def damaged(self, pages: np.ndarray, bad: np.ndarray, what: str):
        pgno = int(pages[np.argmax(bad)])  # the first bad one; `pages` and `bad` are parallel
        raise PackCorruptError(
            f"{self.where} is damaged: page {pgno} of the images B-tree ({what}); {REFETCH}"
        )

    def _check_pages(self, pages: np.ndarray, kind: int) -> None:
        outside = (pages < 2) | (pages >= self.npages)  # pages 0 and 1 are LMDB's meta pages
        if outside.any():
            self.damaged(pages, outside, "a page number outside the file")
        wrong = self.u64[pages * (self.psize // 8)] != pages.astype(np.uint64)
        if wrong.any():
            self.damaged(pages, wrong, "its header names another page")
        flags = self.u16[pages * (self.psize // 2) + 5]
        if (flags != kind).any():
            self.damaged(pages, flags != kind, f"page kind is not {kind:#x}")

    def _nodes(self, pages: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
        """Byte offset of every node on `pages` (page order, then slot order) and of its page."""
        self._check_pages(pages, kind)
        words = pages * (self.psize // 2)
        lower = self.u16[words + 6].astype(np.int64)
        upper = self.u16[words + 7].astype(np.int64)
        bad = (lower < _PAGE_HEADER) | (lower > upper) | (upper > self.psize) | (lower % 2 == 1)
        if bad.any():
            self.damaged(pages, bad, "free-space bounds outside the page")
        slots = (lower - _PAGE_HEADER) // 2
        base = np.repeat(pages * self.psize, slots)
        slot = np.arange(len(base)) - np.repeat(np.cumsum(slots) - slots, slots)
        ptr = self.u16[base // 2 + _PAGE_HEADER // 2 + slot].astype(np.int64)
        bad = (ptr % 2 == 1) | (ptr < np.repeat(upper, slots)) | (ptr > self.psize - _NODE_HEADER)
        if bad.any():
            self.damaged(np.repeat(pages, slots), bad, "a node outside the page")
        return base + ptr, base

    def _node_words(self, nodes: np.ndarray) -> tuple[np.ndarray, ...]:
        at = nodes // 2
        return tuple(self.u16[at + k].astype(np.int64) for k in range(4))

    def _u64_at(self, offsets: np.ndarray, dtype: str) -> np.ndarray:
        """The 8-byte integers at unaligned byte `offsets`."""
        raw = self.u8[offsets[:, None] + np.arange(8)]
        return np.ascontiguousarray(raw).view(dtype).ravel().astype(np.int64)

    def children(self, pages: np.ndarray) -> np.ndarray:
        """Child page numbers of branch `pages`, in key order."""
        nodes, _ = self._nodes(pages, _P_BRANCH)
        lo, hi, high, _ = self._node_words(nodes)
        return lo | hi << 16 | high << 32

    def values(self, pages: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the values on leaf `pages`, whose records must be `first`, `first+1`, ..."""
        nodes, base = self._nodes(pages, _P_LEAF)
        owner = base // self.psize
        lo, hi, node_flags, key_size = self._node_words(nodes)
        bad = (key_size != _KEY_SIZE) | (nodes + _NODE_HEADER + _KEY_SIZE > base + self.psize)
        if bad.any():
            self.damaged(owner, bad, "a key that is not a record index")
        expected = np.arange(first, first + len(nodes), dtype=np.int64)
        keys = self._u64_at(nodes + _NODE_HEADER, ">u8")
        if first + len(nodes) > count or (keys != expected).any():
            self.damaged(owner, keys != expected, f"record indices out of sequence after {first}")
        sizes = lo | hi << 16
        starts = nodes + _NODE_HEADER + _KEY_SIZE
        limits = base + self.psize
        big = node_flags == _F_BIGDATA
        if ((node_flags != 0) & ~big).any():
            self.damaged(owner, (node_flags != 0) & ~big, "unknown node flags")
        if big.any():
            first_page = self._u64_at(starts[big], "=u8")
            self._check_pages(first_page, _P_OVERFLOW)
            words = first_page * (self.psize // 2)
            run = self.u16[words + 6].astype(np.int64) | self.u16[words + 7].astype(np.int64) << 16
            if ((run < 1) | (first_page + run > self.npages)).any():
                self.damaged(first_page, (run < 1) | (first_page + run > self.npages), "overflow")
            starts[big] = first_page * self.psize + _PAGE_HEADER
            limits[big] = (first_page + run) * self.psize
        ends = starts + sizes
        if (ends > limits).any():
            self.damaged(owner, ends > limits, "a value runs past its pages")
        return starts, ends
