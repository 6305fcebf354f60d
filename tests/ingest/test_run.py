"""Ingest finds images, joins labels from tables or folders, hashes and probes, and accounts for all files."""

import hashlib
import json

import pandas as pd
import pytest

from imgpack.errors import InputError, PolicyError
from imgpack.ingest.manifest import read_manifest
from imgpack.ingest.run import ingest
from imgpack.params import IngestParams
from tests.conftest import jpeg_bytes, png_bytes


def rows_of(manifest):
    header, rows = read_manifest(manifest)
    return header, list(rows)


def test_labels_come_from_parent_folders_without_a_table(digits_tree, tmp_path):
    report = ingest(digits_tree, tmp_path / "m.jsonl")
    header, rows = rows_of(tmp_path / "m.jsonl")
    assert report.packed == header["count"] == 13 == len(rows)
    assert {r["key"]: r["label"] for r in rows}["2/extra.jpg"] == "2"
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)


def test_hash_format_and_size_come_from_the_file_and_its_header(digits_tree, tmp_path):
    ingest(digits_tree, tmp_path / "m.jsonl")
    row = {r["key"]: r for r in rows_of(tmp_path / "m.jsonl")[1]}["2/extra.jpg"]
    data = (digits_tree / "2/extra.jpg").read_bytes()
    assert row["hash"] == hashlib.sha256(data).hexdigest()  # agrees with sha256sum
    assert (row["format"], row["width"], row["height"], row["size"]) == ("JPEG", 9, 7, len(data))


def test_blake2b_can_be_chosen(digits_tree, tmp_path):
    ingest(digits_tree, tmp_path / "m.jsonl", params=IngestParams(hash="blake2b"))
    header, rows = rows_of(tmp_path / "m.jsonl")
    data = (digits_tree / rows[0]["key"]).read_bytes()
    assert (
        header["hash_algorithm"] == "blake2b"
        and rows[0]["hash"] == hashlib.blake2b(data).hexdigest()
    )


def write_table(path, rows):
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_a_labels_table_gives_labels_and_keeps_extra_columns(tree, tmp_path, suffix):
    raw = tree(
        {"a.png": png_bytes(shade=1), "sub/b.jpg": jpeg_bytes(), "c.png": png_bytes(shade=2)}
    )
    table = write_table(
        tmp_path / f"labels{suffix}",
        [
            {"path": "./sub/b.jpg", "label": "cat", "text": "hello"},
            {"path": "a.png", "label": "dog", "text": "world"},
            {"path": "c.png", "label": "dog", "text": "x y"},
        ],
    )
    # chunksize=1 reads the table one row at a time: the join must not depend on chunking
    ingest(raw, tmp_path / "m.jsonl", labels=table, params=IngestParams(chunksize=1))
    rows = {r["key"]: r for r in rows_of(tmp_path / "m.jsonl")[1]}
    assert {k: (r["label"], r["extra"]["text"]) for k, r in rows.items()} == {
        "a.png": ("dog", "world"),
        "c.png": ("dog", "x y"),
        "sub/b.jpg": ("cat", "hello"),
    }


def test_the_manifest_is_byte_identical_whatever_the_table_row_order(tree, tmp_path):
    raw = tree({f"{i}.png": png_bytes(shade=i) for i in range(20)})
    rows = [{"path": f"{i}.png", "label": str(i % 3)} for i in range(20)]
    ingest(raw, tmp_path / "a.jsonl", labels=write_table(tmp_path / "a.csv", rows))
    ingest(raw, tmp_path / "b.jsonl", labels=write_table(tmp_path / "b.csv", rows[::-1]))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_keys_sort_by_bytes_even_when_folder_names_prefix_file_names(tree, tmp_path):
    raw = tree(
        {"a/x.png": png_bytes(shade=1), "a-b.png": png_bytes(shade=2), "a.png": png_bytes(shade=3)}
    )
    ingest(
        raw,
        tmp_path / "m.jsonl",
        labels=write_table(
            tmp_path / "l.csv", [{"path": p, "label": "z"} for p in ("a/x.png", "a-b.png", "a.png")]
        ),
    )
    assert [r["key"] for r in rows_of(tmp_path / "m.jsonl")[1]] == ["a-b.png", "a.png", "a/x.png"]


def test_junk_files_are_skipped_and_reported_so_every_file_is_accounted_for(tree, tmp_path):
    raw = tree(
        {
            "0/a.png": png_bytes(),
            "0/.DS_Store": b"\0\0\0\1Bud1",
            "0/notes.txt": "hi",
            "0/empty.png": b"",
            "0/broken.png": b"\x89PNG\r\n\x1a\nnope",
            "0/cut.png": png_bytes(20, 20)[:40],
            "top.png": png_bytes(shade=9),
        }
    )
    report = ingest(raw, tmp_path / "m.jsonl", tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    reasons = {item["path"]: item["reason"] for item in saved["skipped_files"]}
    assert reasons == {
        "0/.DS_Store": "not_image",
        "0/notes.txt": "not_image",
        "0/empty.png": "empty",
        "0/broken.png": "corrupt",
        "0/cut.png": "corrupt",
        "top.png": "unlabeled",
    }
    assert saved["discovered"] == 7 == saved["packed"] + saved["skipped"] == report.packed + 6


def test_conflicting_label_rows_fail_by_default_naming_the_path_and_write_nothing(tree, tmp_path):
    raw = tree({"a.png": png_bytes()})
    table = write_table(
        tmp_path / "l.csv", [{"path": "a.png", "label": "x"}, {"path": "a.png", "label": "y"}]
    )
    with pytest.raises(PolicyError, match=r"conflicting_labels 1: a\.png"):
        ingest(raw, tmp_path / "m.jsonl", tmp_path / "r.json", labels=table)
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "r.json").exists()


def test_label_rows_without_an_image_fail_by_default_or_are_reported_when_skipped(tree, tmp_path):
    raw = tree({"a.png": png_bytes()})
    table = write_table(
        tmp_path / "l.csv", [{"path": "a.png", "label": "x"}, {"path": "gone.png", "label": "y"}]
    )
    with pytest.raises(PolicyError, match=r"missing_image 1: gone\.png"):
        ingest(raw, tmp_path / "m.jsonl", labels=table)
    params = IngestParams(on_error={"missing_image": "skip"})
    report = ingest(raw, tmp_path / "m.jsonl", labels=table, params=params).as_dict()
    assert report["label_rows_without_image"] == 1 and report["packed"] == 1


def test_identical_images_under_two_paths_are_reported_and_marked(tree, tmp_path):
    raw = tree(
        {
            "0/a.png": png_bytes(shade=5),
            "1/b.png": png_bytes(shade=5),
            "1/c.png": png_bytes(shade=6),
        }
    )
    report = ingest(raw, tmp_path / "m.jsonl")
    assert report.duplicate_groups == [["0/a.png", "1/b.png"]]
    rows = {r["key"]: r["duplicate_of"] for r in rows_of(tmp_path / "m.jsonl")[1]}
    assert rows == {"0/a.png": None, "1/b.png": "0/a.png", "1/c.png": None}


def test_copies_anywhere_are_marked_with_the_first_key_of_their_content_and_no_row_is_lost(
    tree, tmp_path
):
    files = {f"0/{n:02d}.png": png_bytes(shade=n) for n in range(30)}
    files["0/00b.png"] = files["0/00.png"]  # the second row
    files["0/10b.png"] = files["0/10c.png"] = files["0/10.png"]  # a run
    files["0/99.png"] = files["0/29.png"]  # the last row
    raw = tree(files)
    ingest(raw, tmp_path / "m.jsonl")
    rows = rows_of(tmp_path / "m.jsonl")[1]
    assert [r["key"] for r in rows] == sorted(files)
    first_of: dict[bytes, str] = {}
    for key in sorted(files):
        first_of.setdefault(files[key], key)
    expected = {k: (first_of[d] if first_of[d] != k else None) for k, d in files.items()}
    assert {r["key"]: r["duplicate_of"] for r in rows} == expected


def test_a_missing_table_column_names_the_column_and_the_param(tree, tmp_path):
    raw = tree({"a.png": png_bytes()})
    table = write_table(tmp_path / "l.csv", [{"file": "a.png", "label": "x"}])
    with pytest.raises(InputError, match="no column 'path'.*ingest.path_column"):
        ingest(raw, tmp_path / "m.jsonl", labels=table)


def test_a_missing_raw_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="raw image folder not found"):
        ingest(tmp_path / "nope", tmp_path / "m.jsonl")


def png_header_only(width, height):
    """A PNG whose IHDR declares width x height, with a valid CRC and no pixel data."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def skipped(report):
    return {
        item["path"]: (item["reason"], item["detail"]) for item in report.as_dict()["skipped_files"]
    }


def test_decompression_bombs_are_reported_not_decoded(tree, tmp_path):
    raw = tree(
        {
            "x/huge.png": png_header_only(100_000, 100_000),  # past Pillow's own bomb error
            "x/big.png": png_header_only(20_000, 20_000),  # past ingest.max_pixels
            "x/ok.png": png_bytes(),
        }
    )
    report = ingest(raw, tmp_path / "m.jsonl")
    reasons = skipped(report)
    assert reasons["x/huge.png"][0] == reasons["x/big.png"][0] == "too_large"
    assert report.packed == 1


def test_a_path_that_is_not_utf8_or_too_long_for_lmdb_is_reported(tree, tmp_path):
    import os

    raw = tree({"x/ok.png": png_bytes()})
    with open(os.path.join(os.fsencode(raw / "x"), b"bad\xff.png"), "wb") as handle:
        handle.write(png_bytes(shade=3))
    long_key = "/".join(["d" * 200, "e" * 200, "f" * 150 + ".png"])
    (raw / "x" / long_key).parent.mkdir(parents=True)
    (raw / "x" / long_key).write_bytes(png_bytes(shade=4))
    report = ingest(raw, tmp_path / "m.jsonl")
    reasons = skipped(report)
    assert reasons["x/bad\\xff.png"] == ("bad_path", "path is not valid UTF-8")
    assert reasons[f"x/{long_key}"][0] == "bad_path" and "511" in reasons[f"x/{long_key}"][1]
    assert report.packed == 1 and report.discovered == 3


def test_symlinks_that_loop_dangle_or_leave_the_folder_are_reported(tree, tmp_path):
    import os

    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(shade=7))
    raw = tree({"x/a.png": png_bytes(shade=1), "y/b.png": png_bytes(shade=2)})
    os.symlink("loop.png", raw / "x/loop.png")
    os.symlink(outside, raw / "x/out.png")
    os.symlink("gone.png", raw / "x/dangling.png")
    os.symlink("a.png", raw / "x/inside.png")
    os.symlink(raw / "y", raw / "x/folder")
    report = ingest(raw, tmp_path / "m.jsonl")
    reasons = {path: reason for path, (reason, _) in skipped(report).items()}
    assert reasons == {
        "x/loop.png": "bad_symlink",
        "x/out.png": "bad_symlink",
        "x/dangling.png": "bad_symlink",
        "x/folder": "bad_symlink",
    }
    assert skipped(report)["x/loop.png"][1] == "symlink loops"
    assert report.packed == 3  # a.png, inside.png (a link within the folder) and y/b.png
    assert report.duplicate_groups == [["x/a.png", "x/inside.png"]]


def test_a_skip_policy_can_be_turned_into_fail_naming_every_offender(tree, tmp_path):
    raw = tree({"x/a.png": png_bytes(), "x/e1.png": b"", "x/e2.png": b""})
    with pytest.raises(PolicyError, match=r"empty 2: x/e1\.png, x/e2\.png"):
        ingest(raw, tmp_path / "m.jsonl", params=IngestParams(on_error={"empty": "fail"}))
    assert not (tmp_path / "m.jsonl").exists()


def test_conflicting_labels_can_be_skipped_and_reported(tree, tmp_path):
    raw = tree({"a.png": png_bytes(shade=1), "b.png": png_bytes(shade=2)})
    table = write_table(
        tmp_path / "l.csv",
        [
            {"path": "a.png", "label": "x"},
            {"path": "a.png", "label": "y"},
            {"path": "b.png", "label": "z"},
        ],
    )
    params = IngestParams(on_error={"conflicting_labels": "skip"})
    report = ingest(raw, tmp_path / "m.jsonl", labels=table, params=params)
    assert skipped(report) == {"a.png": ("conflicting_labels", "label rows disagree: x, y")}
    assert report.packed == 1


def test_unknown_policy_kinds_and_actions_are_refused(tmp_path):
    with pytest.raises(InputError, match="unknown kind 'typo'"):
        IngestParams(on_error={"typo": "skip"})
    with pytest.raises(InputError, match="use 'skip' or 'fail'"):
        IngestParams(on_error={"empty": "ignore"})


def test_the_labels_table_inside_the_raw_folder_is_not_counted_as_an_input(tree, tmp_path):
    raw = tree({"a.png": png_bytes(), "labels.csv": "path,label\na.png,x\n"})
    report = ingest(raw, tmp_path / "m.jsonl", labels=raw / "labels.csv")
    assert (report.discovered, report.packed, report.skipped) == (1, 1, [])


def test_a_folder_with_no_usable_image_is_an_error_not_an_empty_pack(tree, tmp_path):
    raw = tree({"x/notes.txt": "hi", "x/e.png": b""})
    with pytest.raises(
        InputError, match=r"no images to pack \(2 files found, all skipped: empty 1, not_image 1\)"
    ):
        ingest(raw, tmp_path / "m.jsonl")
