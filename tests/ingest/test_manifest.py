"""The manifest's rows: the direct row encoder writes exactly the canonical JSON, and reads back."""

import json

import pytest

from imgpack.errors import InputError
from imgpack.ingest.manifest import read_manifest, row_text, write_manifest
from imgpack.util.jsonfiles import dumps

ROWS = [
    ("a/1.png", 120, "ab" * 32, "PNG", 8, 6, "cat", {}),
    ('quo"te\\back/ä ñ 猫.jpg', 0, "00" * 32, "JPEG", 1, 1, 'ラベル "x"', {}),
    ("tab\there/new\nline.png", 5, "ff" * 20, "WEBP", 65535, 2, "\x01\x1f", {}),
    ("emoji/🙂.png", 7, "12" * 32, "PNG", 3, 4, "", {}),
    ("extra/1.png", 9, "34" * 32, "PNG", 3, 4, "dog", {"bbox": [1, 2.5, None], "note": "é"}),
    ("odd/1.png", 9, "34" * 32, "PNG", None, None, "dog", {}),
]


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_a_row_is_written_exactly_as_the_canonical_encoder_writes_it(row):
    key, size, hash_hex, fmt, width, height, label, extra = row
    canonical = dumps(
        {
            "key": key,
            "size": size,
            "hash": hash_hex,
            "format": fmt,
            "width": width,
            "height": height,
            "label": label,
            "extra": extra,
            "duplicate_of": None,
        }
    )
    assert row_text(*row) == canonical
    assert json.loads(row_text(*row))["key"] == key


def test_rows_written_as_text_read_back_as_they_were(tmp_path):
    rows = sorted(ROWS)
    path = tmp_path / "m.jsonl"
    write_manifest(
        path, {"hash_algorithm": "sha256", "count": len(rows)}, (row_text(*r) + "\n" for r in rows)
    )
    header, read = read_manifest(path)
    assert header["count"] == len(rows)
    assert [(r["key"], r["label"], r["extra"], r["width"]) for r in read] == [
        (r[0], r[6], r[7], r[4]) for r in rows
    ]


def _long_manifest(path, count=9_000):
    rows = [(f"k/{n:05d}.png", n, f"{n:064x}", "PNG", 1, 1, str(n % 7), {}) for n in range(count)]
    write_manifest(
        path, {"hash_algorithm": "sha256", "count": count}, (row_text(*r) + "\n" for r in rows)
    )
    return path.read_text().splitlines(keepends=True)


def test_rows_read_in_blocks_are_the_rows_read_line_by_line(tmp_path):
    lines = _long_manifest(tmp_path / "m.jsonl")
    _, read = read_manifest(tmp_path / "m.jsonl")
    assert list(read) == [json.loads(line) for line in lines[1:]]


@pytest.mark.parametrize(
    "damaged, message",
    [
        ("{not json\n", "not valid JSON"),
        ('{"key": "k/05999a.png"} {"key": "k/05999b.png"}\n', "not valid JSON"),
        ("ROW, ROW", "not valid JSON"),  # two rows on one line, as one JSON array would take them
        ('{"key": "k/05999a.png"}\n', "row lacks manifest fields"),
    ],
)
def test_a_damaged_line_beyond_the_first_block_is_named_by_its_number(tmp_path, damaged, message):
    path = tmp_path / "m.jsonl"
    lines = _long_manifest(path)
    number = 6_001  # line 6,001 of the file: row 5,999, in the second block of 4,096 rows
    row = lines[number - 1].rstrip("\n")
    lines[number - 1] = damaged.replace("ROW", row) + ("\n" if "ROW" in damaged else "")
    path.write_text("".join(lines))
    _, read = read_manifest(path)
    with pytest.raises(InputError, match=rf":{number}: {message}"):
        list(read)
