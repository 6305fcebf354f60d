"""With nothing changed since ingest's last full run, its outputs are left as they are; any
change to a file, the labels table, the params or the outputs themselves runs it in full."""

import csv
import os
import time
from pathlib import Path

import pytest

from imgpack.ingest import snapshot
from imgpack.ingest.run import ingest
from imgpack.ingest.snapshot import InputSnapshot
from imgpack.params import IngestParams
from tests.conftest import png_bytes, write_tree


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture
def settled(tmp_path):
    """A labelled folder older than the racy window, ingested once."""
    raw = write_tree(
        tmp_path / "raw",
        {
            f"{label}/{n}.png": png_bytes(8 + n, 6, shade=9 * n + label)
            for label in (1, 2)
            for n in range(4)
        },
    )
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["path", "label"])
        rows.writerows(
            [p.relative_to(raw).as_posix(), p.parent.name] for p in sorted(raw.rglob("*.png"))
        )
    time.sleep(2.1)
    out = tmp_path / "out"
    run = ingest_into(raw, table, out)
    assert run.read == 8
    return raw, table, out


def ingest_into(raw, table, out, params=None):
    return ingest(
        raw, out / "manifest.jsonl", out / "ingest.json", table, params, reuse_unchanged=True
    )


def test_nothing_changed_reads_nothing_and_leaves_both_outputs_as_they_were(settled):
    raw, table, out = settled
    before = [identity(out / "manifest.jsonl"), identity(out / "ingest.json")]
    report = ingest_into(raw, table, out)
    assert (report.read, report.packed, report.discovered) == (0, 8, 8)
    assert [identity(out / "manifest.jsonl"), identity(out / "ingest.json")] == before


def rewrite_same_size_keep_mtime(raw, table, out):
    path = raw / "1/2.png"
    st = path.stat()
    other = png_bytes(10, 6, shade=250)
    assert len(other) == st.st_size
    path.write_bytes(other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_by_another(raw, table, out):
    path = raw / "2/3.png"
    st = path.stat()
    swap = raw.parent / "swap.png"
    swap.write_bytes(png_bytes(11, 6, shade=251))
    os.utime(swap, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swap, path)


def add_a_file(raw, table, out):
    (raw / "1/9.png").write_bytes(png_bytes(5, 5, shade=3))
    with open(table, "a", newline="") as handle:
        csv.writer(handle).writerow(["1/9.png", "1"])


def relabel(raw, table, out):
    table.write_text(table.read_text().replace("2/0.png,2", "2/0.png,7"))


def edit_the_manifest(raw, table, out):
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace('"label":"1"', '"label":"x"'))


def delete_the_report(raw, table, out):
    (out / "ingest.json").unlink()


CHANGES = [
    rewrite_same_size_keep_mtime,
    replace_by_another,
    add_a_file,
    relabel,
    edit_the_manifest,
    delete_the_report,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__)
def test_any_change_runs_ingest_in_full_and_writes_what_a_fresh_ingest_writes(
    settled, tmp_path, change
):
    raw, table, out = settled
    before = identity(out / "manifest.jsonl")
    change(raw, table, out)
    ingest_into(raw, table, out)
    assert identity(out / "manifest.jsonl") != before
    fresh = tmp_path / "fresh.jsonl"
    ingest(raw, fresh, labels=table, cache=False)
    assert (out / "manifest.jsonl").read_bytes() == fresh.read_bytes()
    assert (out / "ingest.json").exists()


def test_a_params_change_runs_ingest_in_full(settled):
    raw, table, out = settled
    before = identity(out / "manifest.jsonl")
    report = ingest_into(raw, table, out, IngestParams(max_pixels=60))
    assert identity(out / "manifest.jsonl") != before
    assert report.by_reason == {"too_large": 8 - report.packed} and report.packed < 8


def test_a_folder_changed_within_the_racy_window_is_checked_again_next_time(tmp_path):
    raw = write_tree(tmp_path / "raw", {"a/0.png": png_bytes(), "a/1.png": png_bytes(9, 6)})
    out = tmp_path / "out"
    ingest_into(raw, None, out)
    before = identity(out / "manifest.jsonl")
    ingest_into(raw, None, out)  # just written: its stat cannot yet tell a later change
    assert identity(out / "manifest.jsonl") != before


def test_the_check_for_changes_stops_at_the_first_block_of_files_that_differs(settled, monkeypatch):
    """Files added anywhere make ingest walk the folder once, not once to check and once to read."""
    raw, table, out = settled
    monkeypatch.setattr(snapshot, "_BLOCK", 2)
    ingest_into(raw, table, out, IngestParams(workers=1))  # params changed: saved in blocks of 2

    def check() -> tuple[bool, int]:
        """Whether the folder is unchanged, and the blocks of files walked to tell."""
        look = InputSnapshot(
            out / "manifest.jsonl", out / "ingest.json", raw, table, IngestParams(workers=1), False
        )
        return look.unchanged() is not None, len(look.blocks)

    assert check() == (True, 5)  # 8 files in blocks of 2, and the last, empty, block
    write_tree(raw, {"1/0a.png": png_bytes(3, 3)})  # the second key of nine
    time.sleep(2.1)
    assert check() == (False, 1)


def test_nothing_changed_is_told_over_every_kind_of_entry_with_the_labels_inside(tmp_path):
    from tests.ingest.test_walk import odd_tree

    raw = odd_tree(tmp_path / "raw")
    write_tree(raw, {"real/0.png": png_bytes(), "real/1.png": png_bytes(shade=4)})
    table = raw / "labels.csv"  # inside the folder: never one of its files
    table.write_text("path,label\nreal/0.png,x\nreal/1.png,y\n")
    time.sleep(2.1)
    out = tmp_path / "out"
    ingest_into(raw, table, out)
    before = identity(out / "manifest.jsonl")
    report = ingest_into(raw, table, out)
    assert report.read == 0 and identity(out / "manifest.jsonl") == before
    (raw / "real" / "1.png").write_bytes(png_bytes(shade=9))
    ingest_into(raw, table, out)
    assert identity(out / "manifest.jsonl") != before
