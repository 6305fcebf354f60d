"""The header probe agrees with Pillow on every PNG and JPEG variant, and never decodes pixels."""

import io

import pytest
from PIL import Image

from imgpack.ingest.probe import ProbeFailure, _pillow_probe, probe_image


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

    from imgpack.ingest.probe import read_file

    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert read_file(str(tmp_path / "f")) == data


@pytest.mark.parametrize("size", [1, 200, 65536, 300_001])
@pytest.mark.parametrize("hint", ["exact", "grown since", "shrunk since"])
def test_read_file_with_the_stat_size_returns_every_byte_even_if_the_file_changed(
    tmp_path, size, hint
):
    import os

    from imgpack.ingest.probe import read_file

    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    stated = {"exact": size, "grown since": max(size // 2, 1) - 1 or 1, "shrunk since": size * 2}
    assert read_file(str(tmp_path / "f"), stated[hint]) == data


def photo(fmt, **options):
    """A noisy image: its JPEG scan data holds many 0xFF bytes, as real photos do."""
    import random

    rng = random.Random(5)
    image = Image.frombytes("RGB", (96, 64), bytes(rng.randrange(256) for _ in range(96 * 64 * 3)))
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


TRAILER = bytes(range(256)) * 400  # 100 KB, with 0xFF D9 and IEND-like bytes inside


@pytest.mark.parametrize(
    "fmt, options",
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {})],
    ids=["jpeg", "progressive jpeg", "png"],
)
def test_bytes_after_the_images_own_end_are_kept_and_counted_not_corrupt(fmt, options):
    data = photo(fmt, **options)
    probe = probe_image(data + TRAILER, max_pixels=10**9)
    assert (probe.format, probe.width, probe.height, probe.trailing) == (fmt, 96, 64, len(TRAILER))
    assert probe_image(data, max_pixels=10**9).trailing == 0
    with Image.open(io.BytesIO(data + TRAILER)) as image:  # Pillow opens them too
        image.load()


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_jpeg_cut_in_its_scan_data_is_still_corrupt_even_with_bytes_after(cut):
    data = photo("JPEG")
    head = data[: int(len(data) * cut)]
    for candidate in (head, head + b"\x00" * 50):
        with pytest.raises(ProbeFailure, match="truncated JPEG") as info:
            probe_image(candidate, max_pixels=10**9)
        assert info.value.kind == "corrupt"
