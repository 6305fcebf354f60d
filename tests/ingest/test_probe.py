"""The header probe agrees with Pillow on every PNG and JPEG variant, and never decodes pixels."""

import io
import json
import zlib

import pytest
from PIL import Image

import imgpack
from imgpack.ingest.probe import ProbeFailure, _pillow_probe, probe_image
from imgpack.ingest.run import ingest
from imgpack.write.build import build
from tests.conftest import jpeg_bytes, write_tree


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


def test_a_file_no_format_claims_is_reported_the_same_in_every_run(tmp_path):
    raw = write_tree(tmp_path / "raw", {"cat/a.png": b"hello, world", "cat/b.jpg": jpeg_bytes()})
    details = []
    for run in range(2):
        ingest(raw, tmp_path / f"m{run}.jsonl", tmp_path / f"r{run}.json", cache=False)
        details.append(json.loads((tmp_path / f"r{run}.json").read_text())["skipped_files"])
    assert details[0] == details[1]
    assert "0x" not in json.dumps(details[0]) and "header does not parse" in json.dumps(details[0])


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


def png_with_idat_byte_flipped(checksums: str) -> tuple[bytes, bytes]:
    """(a PNG made by Pillow, the same with one byte of its image data flipped). `checksums`:
    "kept" leaves the IDAT chunk's CRC as it was (the file is damaged); "recomputed" makes the
    CRC (and the zlib stream's Adler-32) agree again: a valid PNG whose pixels differ."""
    image = Image.frombytes("L", (16, 8), bytes(range(0, 256, 2)))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)  # stored deflate: a flipped byte stays decodable
    good = out.getvalue()
    data = bytearray(good)
    at = data.index(b"IDAT") - 4
    length = int.from_bytes(data[at : at + 4], "big")
    body = at + 8
    data[body + 2 + 5 + 1 + 3] ^= 0x10  # zlib header, stored-block header, filter byte, pixel 3
    if checksums == "recomputed":
        pixels = zlib.decompress(bytes(data[body + 2 : body + length - 4]), -15)
        data[body + length - 4 : body + length] = zlib.adler32(pixels).to_bytes(4, "big")
        crc = zlib.crc32(data[at + 4 : body + length])
        data[body + length : body + length + 4] = crc.to_bytes(4, "big")
    return good, bytes(data)


def test_a_png_whose_image_data_fails_its_crc_is_corrupt_naming_the_chunk():
    good, damaged = png_with_idat_byte_flipped("kept")
    with pytest.raises(OSError), Image.open(io.BytesIO(damaged)) as image:
        image.load()  # what training would meet
    with pytest.raises(ProbeFailure, match="CRC of its IDAT chunk at byte 33") as info:
        probe_image(damaged, max_pixels=10**9)
    assert info.value.kind == "corrupt"


def test_a_png_with_its_crc_recomputed_is_valid_and_probed_as_any_other():
    good, changed = png_with_idat_byte_flipped("recomputed")
    assert probe_image(changed, max_pixels=10**9) == probe_image(good, max_pixels=10**9)
    with Image.open(io.BytesIO(good)) as a, Image.open(io.BytesIO(changed)) as b:
        assert a.size == b.size and a.tobytes() != b.tobytes()  # it decodes, differently


def test_ingest_and_a_fresh_build_skip_a_png_with_a_bad_crc_and_pack_the_rest(tmp_path):
    good, damaged = png_with_idat_byte_flipped("kept")
    _, changed = png_with_idat_byte_flipped("recomputed")
    files = {"a/good.png": good, "a/damaged.png": damaged, "b/changed.png": changed}
    files["b/photo.jpg"] = jpeg_bytes(9, 7, shade=3)
    raw = write_tree(tmp_path / "raw", files)
    expected = {k: v for k, v in files.items() if k != "a/damaged.png"}
    report = ingest(raw, tmp_path / "m.jsonl").as_dict()
    build(raw, tmp_path / "p.lmdb", report_out=tmp_path / "built.json")
    for seen in (report, json.loads((tmp_path / "built.json").read_text())):
        assert (seen["packed"], seen["skipped_by_reason"]) == (3, {"corrupt": 1})
        [skipped] = seen["skipped_files"]
        assert skipped == {
            "path": "a/damaged.png",
            "reason": "corrupt",
            "detail": "damaged PNG: the CRC of its IDAT chunk at byte 33 does not match its "
            "data; restore the file from a good copy",
        }
    with imgpack.open(tmp_path / "p.lmdb") as pack:
        assert {r.key: r.data for r in pack} == expected
