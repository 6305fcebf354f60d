"""The raw folder's walk: every non-folder entry in key order, with its stat when asked."""

import os

import pytest

from imgpack.ingest import walk as walk_module
from imgpack.ingest.walk import found_at, stat_line, walk_sorted, walk_stat_blocks
from imgpack.parallel.workers import worker_pool
from tests.conftest import write_tree


def odd_tree(raw):
    """Common files, and every entry the walk classifies otherwise."""
    write_tree(
        raw,
        {
            "a/b/c.png": b"1",
            "a/b.png": b"22",
            "a-b.png": b"333",
            "a.b/x.png": b"4444",
            "z.png": b"55555",
            "deep/er/and/deeper/one.png": b"666666",
            "labels.csv": b"path,label\n",
            "caf\u00e9/\u00e9t\u00e9.png": b"7",
            f"long/{'m' * 200}/{'m' * 200}/{'k' * 200}.png": b"8",  # a key over 511 bytes
        },
    )
    (raw / "empty").mkdir()
    os.symlink("z.png", raw / "link.png")
    os.symlink("nowhere.png", raw / "dangling.png")
    os.symlink("a", raw / "folder-link")
    os.symlink("/", raw / "outside")
    os.mkfifo(raw / "pipe")
    return raw


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_the_stat_blocks_are_the_walks_lines_whatever_the_entries(tmp_path, block):
    raw = odd_tree(tmp_path / "raw")
    exclude = {str(raw / "labels.csv")}
    lines = [stat_line(found) for found in walk_sorted(raw, exclude, stat=True)]
    assert {f.problem for f in walk_sorted(raw, exclude)} == {
        None,
        "bad_path",
        "bad_symlink",
        "not_image",
    }
    whole = len(lines) - len(lines) % block
    expected = ["".join(lines[n : n + block]) for n in range(0, whole, block)]
    expected.append("".join(lines[whole:]))  # the rest: shorter, or empty
    assert list(walk_stat_blocks(raw, exclude, block)) == expected
    assert "labels.csv" not in "".join(expected)


def test_a_file_whose_stat_fails_has_the_same_line_in_the_stat_blocks(tmp_path, monkeypatch):
    raw = write_tree(tmp_path / "raw", {"a/1.png": b"1", "a/2.png": b"22", "b/3.png": b"3"})
    real_stat = os.stat

    def stat(path, *args, **options):  # gone between the listing and the stat, say
        if os.fspath(path).endswith("2.png"):
            raise FileNotFoundError(path)
        return real_stat(path, *args, **options)

    monkeypatch.setattr(os, "stat", stat)
    lines = [stat_line(found) for found in walk_sorted(raw, stat=True)]
    assert lines[1] == "a/2.png\0None\0-\n"
    assert list(walk_stat_blocks(raw, None, 4096)) == ["".join(lines)]


def test_the_walk_with_stats_gives_the_same_entries_in_the_same_order_each_with_its_stat(tmp_path):
    raw = odd_tree(tmp_path / "raw")
    exclude = {str(raw / "labels.csv")}

    plain = list(walk_sorted(raw, exclude))
    stated = list(walk_sorted(raw, exclude, stat=True))

    assert [f._replace(stat=None) for f in stated] == plain
    keys = [f.key for f in plain]
    assert keys == sorted(keys, key=lambda k: k.encode()) and "labels.csv" not in keys
    for found in stated:
        if found.key == "dangling.png":
            assert found.stat is None
            continue
        st = os.stat(raw / found.key)  # follows a symlink, as the pack's read does
        assert found.stat == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns), found.key
    assert dict((f.key, f.stat[0]) for f in stated if f.stat)["link.png"] == 5


def test_a_walk_left_half_way_closes_the_folders_it_opened(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {f"d{i}/e{j}/f.png": b"x" for i in range(3) for j in range(3)}
    )
    before = len(os.listdir("/proc/self/fd"))
    walk = walk_sorted(raw, stat=True)
    next(walk)
    assert len(os.listdir("/proc/self/fd")) > before
    walk.close()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_the_stat_blocks_hold_no_folder_open_between_runs_and_are_the_same_from_workers(
    tmp_path, workers, monkeypatch
):
    monkeypatch.setattr(walk_module, "_RUN", 3)  # folders of five files stat'ed in two runs
    raw = odd_tree(tmp_path / "raw")
    write_tree(
        raw, {f"d{i}/e{j}/{k}.png": b"x" for i in range(3) for j in range(3) for k in range(5)}
    )
    before = len(os.listdir("/proc/self/fd"))
    with worker_pool(workers, fork=True) as pool:
        walk = walk_stat_blocks(raw, None, 7, pool)
        first = next(walk)
        if pool is None:
            assert len(os.listdir("/proc/self/fd")) == before
        text = first + "".join(walk)
    assert text == "".join(stat_line(f) for f in walk_sorted(raw, stat=True))


def test_a_file_looked_at_again_by_its_key_is_found_as_the_walk_found_it(tmp_path):
    raw = odd_tree(tmp_path / "raw")
    for found in walk_sorted(raw, {str(raw / "labels.csv")}, stat=True):
        assert found_at(raw, found.key) == found, found.key
