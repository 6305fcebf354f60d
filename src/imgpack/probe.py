"""Read an image's format and size from its header, never decoding pixels, and hash its bytes."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

__all__ = ["Probe", "ProbeFailure", "probe_image", "digest"]

_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


@dataclass(frozen=True, slots=True)
class Probe:
    format: str
    width: int
    height: int


class ProbeFailure(Exception):
    """Internal: the bytes are not a usable image; `kind` is an ERROR_KINDS kind."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def probe_image(data: bytes, max_pixels: int) -> Probe:
    """Format, width and height from the header; a truncated PNG or JPEG is reported as corrupt."""
    if not data:
        raise ProbeFailure("empty", "empty file")
    with warnings.catch_warnings():
        # The pixel limit is ours (max_pixels); Pillow's warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
        except Image.DecompressionBombError as exc:
            raise ProbeFailure("too_large", f"decompression bomb: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ProbeFailure("corrupt", f"header does not parse ({exc})") from None
    if width <= 0 or height <= 0:
        raise ProbeFailure("corrupt", f"header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise ProbeFailure(
            "too_large", f"header declares {width}x{height} pixels, over max_pixels={max_pixels}"
        )
    if fmt == "PNG" and not data.endswith(_PNG_END):
        raise ProbeFailure("corrupt", "truncated PNG (no IEND chunk at the end)")
    if fmt == "JPEG" and not data.rstrip(b"\x00\r\n ").endswith(_JPEG_END):
        raise ProbeFailure("corrupt", "truncated JPEG (no end-of-image marker)")
    return Probe(fmt, width, height)
