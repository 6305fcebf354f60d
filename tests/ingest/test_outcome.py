"""What ingest learns of a file travels as a named record: to and from workers, and through the ingest cache."""

import pickle

from imgpack.ingest.cache import IngestCache
from imgpack.ingest.examine import ExamineTask, examine_files
from imgpack.ingest.outcome import Examined, Failed
from tests.conftest import png_bytes


def test_outcomes_are_told_apart_by_ok_and_pickle_as_they_are():
    examined = Examined(10, "ab", "PNG", 3, 4, 0, (2, 128))
    failed = Failed("corrupt", "truncated")
    assert examined.ok and not failed.ok
    assert pickle.loads(pickle.dumps([examined, failed])) == [examined, failed]


def test_the_ingest_cache_keeps_an_outcome_but_where_it_was_spooled(tmp_path):
    cache = IngestCache("", "", 0, tmp_path / "cache.sqlite")
    stat = (10, 1, 2, 1)  # long before the racy window
    cache.remember(
        [
            ("a.png", stat, Examined(10, "ab", "PNG", 3, 4, 5, (2, 128))),
            ("b.png", stat, Failed("not_image", "no image header")),
        ]
    )
    assert cache.lookup(["a.png", "b.png", "c.png"], [stat, stat, stat]) == [
        Examined(10, "ab", "PNG", 3, 4, 5),
        Failed("not_image", "no image header"),
        None,
    ]
    assert cache.lookup(["a.png"], [(10, 1, 3, 1)]) == [None]  # another inode
    cache.close()


def test_examined_files_say_where_their_bytes_were_spooled(tmp_path):
    data = png_bytes(8, 6)
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "c.png").write_bytes(data)
    paths = tuple(str(tmp_path / name) for name in ("a.png", "b.png", "c.png"))
    spool = tmp_path / "spool-7.bin"
    a, b, c = examine_files(ExamineTask(paths, "sha256", 1 << 20, str(spool), 7))
    assert (a.size, a.format, a.width, a.height, a.spooled) == (len(data), "PNG", 8, 6, (7, 0))
    assert not b.ok and b.kind
    assert c.spooled == (7, len(data)) and c.digest_hex == a.digest_hex
    assert spool.read_bytes() == data + data


def test_a_failure_the_operating_system_caused_is_reported_but_never_remembered(tmp_path):
    gone = str(tmp_path / "gone.png")  # listed, then deleted before it was read
    [outcome] = examine_files(ExamineTask((gone,), "sha256", 1 << 20))
    assert not outcome.ok and outcome.transient and outcome.kind == "corrupt"
    assert outcome.detail == (
        "unreadable (No such file or directory); skipped this run only, not remembered: "
        "it was moved or deleted while being read; rerun"
    )
    cache = IngestCache("", "", 0, tmp_path / "cache.sqlite")
    stat = (10, 1, 2, 1)
    cache.remember([("gone.png", stat, outcome), ("junk.png", stat, Failed("empty", "empty"))])
    assert cache.lookup(["gone.png", "junk.png"], [stat, stat]) == [None, Failed("empty", "empty")]
    cache.close()
