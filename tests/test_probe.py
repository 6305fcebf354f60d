"""The header probe agrees with Pillow on every PNG and JPEG variant, and never decodes pixels."""

import io

import pytest
from PIL import Image

from imgpack.probe import ProbeFailure, _pillow_probe, probe_image


def encode(mode, size, fmt, **options):
    out = io.BytesIO()
    Image.new(mode, size, 0).save(out, fmt, **options)
    return out.getvalue()


VARIANTS = [
    ("L", (28, 28), "PNG", {}),
    ("RGB", (300, 17), "PNG", {"optimize": True}),
    ("RGBA", (5, 900), "PNG", {}),
    ("I;16", (33, 44), "PNG", {}),
    ("P", (64, 48), "PNG", {}),
    ("1", (70, 3), "PNG", {}),
    ("LA", (40, 30), "PNG", {}),
    ("RGB", (640, 480), "JPEG", {"quality": 90}),
    ("L", (31, 77), "JPEG", {}),
    ("RGB", (123, 45), "JPEG", {"progressive": True}),
    ("CMYK", (20, 10), "JPEG", {}),
    ("RGB", (50, 60), "JPEG", {"exif": Image.Exif().tobytes(), "dpi": (300, 300)}),
    ("RGB", (16, 16), "GIF", {}),
    ("RGB", (16, 9), "BMP", {}),
    ("RGB", (16, 9), "WEBP", {}),
    ("RGB", (7, 9), "TIFF", {}),
]


@pytest.mark.parametrize("mode, size, fmt, options", VARIANTS, ids=lambda v: str(v))
def test_probe_agrees_with_pillow(mode, size, fmt, options):
    data = encode(mode, size, fmt, **options)
    probe = probe_image(data, max_pixels=10**9)
    assert (probe.format, probe.width, probe.height) == _pillow_probe(data) == (fmt, *size)


def test_a_png_with_a_damaged_header_is_left_to_pillow_and_reported_corrupt():
    data = bytearray(encode("L", (8, 8), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: the CRC no longer matches
    with pytest.raises(ProbeFailure) as info:
        probe_image(bytes(data), max_pixels=10**9)
    assert info.value.kind == "corrupt"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_file_is_corrupt_even_when_its_header_parses(fmt):
    data = encode("RGB", (64, 64), fmt)
    with pytest.raises(ProbeFailure, match="truncated") as info:
        probe_image(data[: len(data) - 20], max_pixels=10**9)
    assert info.value.kind == "corrupt"


def test_text_is_not_an_image():
    with pytest.raises(ProbeFailure) as info:
        probe_image(b"hello, world", max_pixels=10**9)
    assert info.value.kind == "corrupt"


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003])
def test_read_file_returns_every_byte_whatever_the_size(tmp_path, size):
    import os

    from imgpack.probe import read_file

    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert read_file(str(tmp_path / "f")) == data
