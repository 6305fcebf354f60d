"""The raw folder's walk: every non-folder entry in key order, with its stat when asked."""

import os

from imgpack.ingest.walk import walk_sorted
from tests.conftest import write_tree


def test_the_walk_with_stats_gives_the_same_entries_in_the_same_order_each_with_its_stat(tmp_path):
    raw = write_tree(
        tmp_path / "raw",
        {
            "a/b/c.png": b"1",
            "a/b.png": b"22",
            "a-b.png": b"333",
            "a.b/x.png": b"4444",
            "z.png": b"55555",
            "deep/er/and/deeper/one.png": b"666666",
            "labels.csv": b"path,label\n",
        },
    )
    (raw / "empty").mkdir()
    os.symlink("z.png", raw / "link.png")
    os.symlink("nowhere.png", raw / "dangling.png")
    os.mkfifo(raw / "pipe")
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
