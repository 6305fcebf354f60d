"""The imgpack command: build, info, export, verify; failures are one line and a non-zero exit."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from imgpack import open as open_pack
from tests.conftest import flip_byte_of, png_bytes, source_files, tool_env, write_tree

IMGPACK = [sys.executable, "-m", "imgpack.cli.main"]


def imgpack(*args, cwd=None):
    return subprocess.run(
        [*IMGPACK, *map(str, args)], capture_output=True, text=True, env=tool_env(), cwd=cwd
    )


def assert_one_line_error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgpack: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("imgpack")
    assert subprocess.run([script, "--version"], capture_output=True, text=True).stdout.startswith(
        "imgpack "
    )


def test_python_dash_m_imgpack_cli_is_the_same_command():
    ran = subprocess.run(
        [sys.executable, "-m", "imgpack.cli", "--version"], capture_output=True, text=True
    )
    assert ran.returncode == 0 and ran.stdout.startswith("imgpack ")


@pytest.mark.parametrize("shard_mb, shards", [(64, 1), (0.0003, 4)])
def test_build_with_folder_labels_then_info_export_verify(digits_tree, tmp_path, shard_mb, shards):
    out = tmp_path / "out" / "d.lmdb"
    built = imgpack(
        "build", digits_tree, out, "--report", tmp_path / "r.json", "--shard-mb", shard_mb
    )
    assert built.returncode == 0, built.stderr
    assert "packed 13 of 13 files" in built.stdout
    info = json.loads(imgpack("info", out, "--json").stdout)
    assert (
        info["count"] == 13 and info["format_version"] == 3 and info["classes"] == ["0", "1", "2"]
    )
    assert info["shards"] == shards and out.is_file() == (shards == 1)
    assert "count: 13" in imgpack("info", out).stdout
    exported = imgpack("export", out, tmp_path / "exp")
    assert exported.returncode == 0
    assert source_files(tmp_path / "exp") == source_files(digits_tree)
    verified = imgpack("verify", out)
    assert verified.returncode == 0 and "13 records" in verified.stdout


def test_build_with_a_labels_table_and_dedupe(sample_raw, tmp_path):
    out = tmp_path / "s.lmdb"
    result = imgpack(
        "build",
        sample_raw / "images",
        out,
        "--labels",
        sample_raw / "labels.csv",
        "--duplicates",
        "dedupe",
    )
    assert result.returncode == 0, result.stderr
    exported = imgpack("export", out, tmp_path / "exp")
    assert exported.returncode == 0
    assert source_files(tmp_path / "exp") == source_files(sample_raw / "images")


def test_export_of_the_sample_pack_equals_the_source_folder_byte_for_byte(
    sample_pack, sample_raw, tmp_path
):
    assert imgpack("export", sample_pack, tmp_path / "exp").returncode == 0
    assert source_files(tmp_path / "exp") == source_files(sample_raw / "images")


def test_verify_names_the_key_of_a_flipped_byte(digits_tree, tmp_path):
    out = tmp_path / "d.lmdb"
    assert imgpack("build", digits_tree, out).returncode == 0
    flip_byte_of(out, "1/2.png")
    assert_one_line_error(imgpack("verify", out), "1/2.png", "sha256 mismatch")


def test_verify_names_a_damaged_page_that_lmdb_itself_would_read_past(digits_tree, tmp_path):
    out = tmp_path / "d.lmdb"
    assert imgpack("build", digits_tree, out).returncode == 0
    with open_pack(out) as pack:
        page = pack.locate().starts[0] // 4096
    with open(out, "r+b") as handle:  # the page's header names another page; its records are intact
        handle.seek(page * 4096)
        handle.write(struct.pack("=Q", page + 1))
    assert_one_line_error(imgpack("verify", out), f"page {page} of the images B-tree")


@pytest.mark.parametrize("command", ["info", "verify", "export"])
def test_a_missing_or_garbage_pack_is_one_line_not_a_traceback(tmp_path, command):
    extra = [tmp_path / "exp"] if command == "export" else []
    assert_one_line_error(imgpack(command, tmp_path / "nope.lmdb", *extra), "no such pack file")
    garbage = tmp_path / "g.lmdb"
    garbage.write_bytes(os.urandom(50_000))
    assert_one_line_error(imgpack(command, garbage, *extra), "not a readable LMDB file")


def test_build_refusal_names_offenders_and_publishes_nothing(tmp_path):
    raw = write_tree(tmp_path / "raw", {"a.png": png_bytes()})
    (tmp_path / "l.csv").write_text("path,label\na.png,x\nb.png,y\n")
    result = imgpack("build", raw, tmp_path / "p.lmdb", "--labels", tmp_path / "l.csv")
    assert_one_line_error(result, "missing_image 1: b.png")
    assert not (tmp_path / "p.lmdb").exists()


def test_build_reports_skipped_files(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {"x/a.png": png_bytes(), "x/.DS_Store": b"junk", "x/e.png": b""}
    )
    result = imgpack("build", raw, tmp_path / "p.lmdb")
    assert result.returncode == 0
    assert (
        "packed 1 of 3 files" in result.stdout
        and "not_image 1" in result.stdout
        and "empty 1" in result.stdout
    )


def test_phone_photos_with_bytes_after_the_image_are_packed_with_a_note_and_export_unchanged(
    tmp_path,
):
    from tests.ingest.test_probe import TRAILER, photo

    jpeg, png = photo("JPEG"), photo("PNG")
    files = {
        "a/motion.jpg": jpeg + TRAILER,  # a motion photo: video appended after the JPEG
        "a/trailing.png": png + b"tool metadata after IEND",
        "a/plain.png": png,
        "b/cut.jpg": jpeg[: len(jpeg) // 2],
        "b/ok.jpg": jpeg,
        "b/page.webp": encode_webp(),
    }
    raw = write_tree(tmp_path / "raw", files)
    out = tmp_path / "p.lmdb"
    built = imgpack("build", raw, out, "--report", tmp_path / "r.json")
    assert built.returncode == 0, built.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["packed"] == 5 and report["skipped"] == 1
    assert report["skipped_files"][0]["path"] == "b/cut.jpg"
    assert report["skipped_files"][0]["reason"] == "corrupt"
    assert [n["path"] for n in report["notes_list"]] == ["a/motion.jpg", "a/trailing.png"]
    assert f"{len(TRAILER)} bytes after the end of the JPEG image" in built.stdout
    assert imgpack("export", out, tmp_path / "exp").returncode == 0
    exported = source_files(tmp_path / "exp")
    assert exported == {k: v for k, v in files.items() if k != "b/cut.jpg"}


def encode_webp() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (5, 4), (9, 9, 9)).save(out, "WEBP")
    return out.getvalue()
