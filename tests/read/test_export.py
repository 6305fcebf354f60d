"""Export writes records back byte for byte and refuses keys that would land outside the folder."""

import os

import pytest

import imgpack
from imgpack.errors import UnsafeKeyError
from imgpack.read.export import export_pack
from tests.conftest import write_pack


def pack_with_keys(path, keys):
    keys = sorted(keys)
    write_pack(path, keys, value=lambda i: f"bytes of {keys[i]}".encode())
    return path


@pytest.mark.parametrize(
    "bad", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "a\0b.png", "a//b.png"]
)
def test_keys_that_could_escape_are_refused_and_nothing_is_written(tmp_path, bad):
    pack = pack_with_keys(tmp_path / "p.lmdb", ["a/ok.png", bad])
    with pytest.raises(UnsafeKeyError, match="refusing to export key"):
        export_pack(pack, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.png").exists()


def test_a_symlinked_folder_inside_the_target_is_not_written_through(tmp_path):
    pack = pack_with_keys(tmp_path / "p.lmdb", ["link/x.png"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(elsewhere, tmp_path / "out" / "link")
    with pytest.raises(UnsafeKeyError, match="is a symlink"):
        export_pack(pack, tmp_path / "out")
    assert os.listdir(elsewhere) == []


def test_a_symlinked_file_in_the_target_is_not_written_through(tmp_path):
    pack = pack_with_keys(tmp_path / "p.lmdb", ["x.png"])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / "x.png")
    with pytest.raises(imgpack.ImgpackError, match="cannot write"):
        export_pack(pack, tmp_path / "out")
    assert victim.read_text() == "keep me"


def test_safe_nested_keys_export_exactly(tmp_path):
    pack = pack_with_keys(tmp_path / "p.lmdb", ["a/b/c.png", "top.png", "é/ü.png"])
    assert export_pack(pack, tmp_path / "out") == 3
    assert (tmp_path / "out/é/ü.png").read_bytes() == "bytes of é/ü.png".encode()
