"""Process-wide handles: one map and one table per file, released with the last Pack, fork-inherited."""

import gc
import os
from pathlib import Path

import pytest

import imgpack
from imgpack.errors import PackChangedError
from tests.conftest import copy_pack


def mapped_here(path: Path) -> bool:
    """Whether this process still maps or holds a descriptor on `path`."""
    real = str(path.resolve())
    maps = Path("/proc/self/maps").read_text()
    fds = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
    return real in maps or real in fds


@pytest.fixture
def own_pack(sample_pack, tmp_path):
    return copy_pack(sample_pack, tmp_path / "own.lmdb")


def test_packs_on_one_file_share_one_map_and_one_table(own_pack):
    with imgpack.open(own_pack) as first, imgpack.open(own_pack) as second:
        assert first.locate() is second.locate()
        assert first.data(4) == second.data(4)
        dataset = imgpack.ImageDataset(own_pack, split="train")
        assert dataset.pack.locate() is first.locate()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_closing_every_pack_unmaps_the_file_and_closes_its_descriptors(own_pack):
    first, second = imgpack.open(own_pack), imgpack.open(own_pack)
    first.data(0), second.data(1)
    assert mapped_here(own_pack)
    first.close()
    assert second.data(2)  # still mapped for the other Pack
    second.close()
    gc.collect()
    assert not mapped_here(own_pack)


def test_a_file_replaced_while_open_is_never_mixed_with_the_one_opened(own_pack, tmp_path):
    with imgpack.open(copy_pack(own_pack, tmp_path / "same.lmdb")) as same:
        expected = same.data(0)
        table = same.locate()
        at = (table.starts[0] + table.ends[0]) // 2  # inside record 0's image, in its file
    with imgpack.open(own_pack) as pack:
        file = pack.shard_paths[0]  # the pack itself, or the shard holding record 0
        other = bytearray(file.read_bytes())
        other[at] ^= 0xFF
        (tmp_path / "other.lmdb").write_bytes(bytes(other))
        os.replace(tmp_path / "other.lmdb", file)  # what `dvc checkout` of another version does
        if file == own_pack:  # the one file is held open: the Pack reads the file it opened
            assert pack.data(0) == expected
        else:  # a shard it had not mapped yet: refused, never mixed into this version
            with pytest.raises(PackChangedError, match="changed since its pack was opened"):
                pack.data(0)
    with imgpack.open(own_pack) as again:  # the remedy: open it again
        assert again.data(0) != expected


def test_a_forked_child_reads_through_the_table_its_parent_located(own_pack):
    pack = imgpack.open(own_pack)
    images = pack.locate()
    expected = pack.data(7)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            same = pack.locate() is images and pack.data(7) == expected
            os.write(write, b"inherited" if same else b"rebuilt or wrong")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100)
    os.waitpid(pid, 0)
    assert answer == b"inherited"
    pack.close()
