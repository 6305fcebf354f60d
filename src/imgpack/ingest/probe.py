"""Read an image's format and size from its header, never decoding pixels, and hash its bytes."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
import zlib
from typing import NamedTuple

__all__ = ["Probe", "ProbeFailure", "probe_image", "digest", "read_file"]

_JPEG_END = b"\xff\xd9"


class Probe(NamedTuple):  # a tuple: made for every image, and a frozen dataclass is slow to make
    format: str
    width: int
    height: int
    trailing: int = 0  # bytes after the image's own end (motion photos, tool metadata): kept


class ProbeFailure(Exception):
    """Internal: the bytes are not a usable image; `kind` is an ERROR_KINDS kind."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


# A first read this size holds most images whole; a larger buffer would cost an mmap per file.
_FIRST_READ = 1 << 16


def read_file(path: str, size: int = 0) -> bytes:
    """A whole file in as few system calls as possible (open(...).read() adds fstat and EOF reads);
    a URL (s3://...) through fsspec. `size`, when known from the file's stat, makes one read of
    one exact buffer enough (no joining of parts) unless the file has grown since."""
    if "://" in path:
        from imgpack.ingest.remote import read_url

        return read_url(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        first = min(size + 1, 1 << 30) if size > 0 else _FIRST_READ  # Linux reads < 2 GiB
        data = os.read(fd, first)
        if len(data) < first:
            return data  # regular files read short only at the end
        parts = [data]
        want = max(os.fstat(fd).st_size - len(data), 0) + _FIRST_READ
        while block := os.read(fd, want):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sIIBBBBBI")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a well-formed IHDR (CRC checked), else None to let Pillow decide."""
    if len(data) < 33:
        return None
    length, kind, width, height, *_, crc = _IHDR.unpack_from(data, 8)
    if length != 13 or kind != b"IHDR" or zlib.crc32(data[12:29]) != crc:
        return None
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOF marker, walking segment lengths; None when malformed."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


def probe_image(data: bytes, max_pixels: int) -> Probe:
    """Format, width and height from the header; a truncated PNG or JPEG is reported as corrupt."""
    if data.startswith(_PNG_SIGNATURE):
        size = _png_size(data)
        if size is not None:
            return _checked(data, "PNG", *size, max_pixels)
    elif data.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(data)
        if size is not None:
            return _checked(data, "JPEG", *size, max_pixels)
    elif not data:
        raise ProbeFailure("empty", "empty file")
    return _checked(data, *_pillow_probe(data), max_pixels)


def _pillow_probe(data: bytes) -> tuple[str, int, int]:
    """Any format Pillow knows, opening only the header."""
    # Imported here: most images are PNG or JPEG, probed without it, and a build's workers
    # start sooner when its main process has not imported Pillow first.
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # The pixel limit is ours (max_pixels); Pillow's warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
        except Image.DecompressionBombError as exc:
            raise ProbeFailure("too_large", f"decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            # Pillow's own message names the in-memory buffer by its address: a report that
            # differed from run to run for the same file
            raise ProbeFailure(
                "corrupt", "header does not parse (no image format Pillow reads)"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ProbeFailure("corrupt", f"header does not parse ({exc})") from None
    return fmt, width, height


def _checked(data: bytes, fmt: str, width: int, height: int, max_pixels: int) -> Probe:
    if width <= 0 or height <= 0:
        raise ProbeFailure("corrupt", f"header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise ProbeFailure(
            "too_large", f"header declares {width}x{height} pixels, over max_pixels={max_pixels}"
        )
    end = len(data)
    if fmt == "PNG":
        end = _png_end(data)
    elif fmt == "JPEG" and not data.endswith(_JPEG_END):
        end = _jpeg_end(data)
        if end is None:
            raise ProbeFailure("corrupt", "truncated JPEG (no end-of-image marker after its scan)")
    return Probe(fmt, width, height, len(data) - end)


_CHUNK_HEAD = struct.Struct(">I4s")  # a PNG chunk's length and type
_CRC = struct.Struct(">I")


def _png_end(data: bytes) -> int:
    """Where a PNG's IEND chunk ends, walking chunk lengths and checking every chunk's CRC on
    the way (a damaged IDAT passes the header probe and fails only when decoded); raises
    ProbeFailure when a CRC does not match or the chunks run out before IEND."""
    view, crc32, head, crc = memoryview(data), zlib.crc32, _CHUNK_HEAD.unpack_from, _CRC.unpack_from
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length, kind = head(data, pos)
        end = pos + 12 + length
        if end > size:
            break
        if crc32(view[pos + 4 : end - 4]) != crc(data, end - 4)[0]:
            name = kind.decode("ascii", "backslashreplace")
            raise ProbeFailure(
                "corrupt",
                f"damaged PNG: the CRC of its {name} chunk at byte {pos} does not match its "
                "data; restore the file from a good copy",
            )
        if kind == b"IEND":
            return end
        pos = end
    raise ProbeFailure("corrupt", "truncated PNG (its chunks end before an IEND chunk)")


# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else
# is a real marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes) -> int | None:
    """Where a JPEG's end-of-image marker after its last scan ends; None if cut before it."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker == 0xD9:
            return pos + 2
        elif marker in _JPEG_STANDALONE:
            pos += 2
        elif marker == 0xDA:  # a scan: its header, then entropy-coded data up to the next marker
            found = _JPEG_MARKER.search(
                data, pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            )
            if found is None:
                return None
            pos = found.start()
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return pos + 2 if data[pos : pos + 2] == _JPEG_END else None
