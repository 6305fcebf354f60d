"""A version where few files changed: ingest reads those only, carries the others over from its
last run's records, and writes exactly what a fresh ingest of the folder writes."""

import json
import os
import time

import pytest

from imgpack.errors import PolicyError
from imgpack.ingest import changes, records
from imgpack.ingest.cache import state_dir
from imgpack.ingest.run import ingest
from imgpack.ingest.snapshot import InputSnapshot
from imgpack.params import IngestParams
from tests.conftest import digit_pngs, png_bytes, write_tree


@pytest.fixture
def settled(tmp_path, monkeypatch):
    """60 drawn digits in three label folders plus a duplicate pair and a file that is no image,
    older than the racy window, ingested once; its records in batches of 7."""
    monkeypatch.setattr(records, "BATCH", 7)
    raw = digit_pngs(tmp_path / "raw", {1: 20, 2: 20, 3: 20})
    write_tree(raw, {"1/copy.png": (raw / "3/00005.png").read_bytes(), "2/readme.txt": "x"})
    settle()
    out = tmp_path / "out"
    first = ingest_into(raw, out)
    assert first.read == 61  # all but the text file
    return raw, out


def forget_the_ingest_cache():
    """Without its per-file cache, only a carried-over run can read less than every file."""
    for path in state_dir().glob("ingest-*.sqlite"):
        path.unlink()


def settle():
    time.sleep(2.1)  # out of the racy window: a stat can tell the next change


def ingest_into(raw, out, params=None):
    return ingest(
        raw, out / "manifest.jsonl", out / "ingest.json", None, params, reuse_unchanged=True
    )


def fresh(raw, tmp_path, params=None) -> tuple[bytes, dict]:
    """The manifest and report of an ingest that knows nothing of earlier runs."""
    out = tmp_path / "fresh"
    ingest(raw, out / "manifest.jsonl", out / "ingest.json", None, params, cache=False)
    return (out / "manifest.jsonl").read_bytes(), report_of(out)


def report_of(out) -> dict:
    report = json.loads((out / "ingest.json").read_text())
    report.pop("read")
    for name in ("skipped_files", "notes_list"):
        report[name].sort(key=lambda item: item["path"])
    return report


def many_changes(raw) -> int:
    """Files added before the first key, between keys and after the last; one rewritten, one
    removed; a copy of a packed image added and the first of a copied pair removed; a broken
    PNG, another file that is no image, and an image with bytes after its end. Returns how many
    new or changed files are to be read (the text file is not)."""
    write_tree(
        raw,
        {
            "0/first.png": png_bytes(9, 9, shade=1),
            "2/00004b.png": png_bytes(9, 9, shade=2),
            "9/last.png": png_bytes(9, 9, shade=3),
            "2/copy-of-2-1.png": (raw / "2/00001.png").read_bytes(),
            "2/broken.png": png_bytes(9, 9, shade=4)[:30],
            "3/notes.txt": "y",
            "3/motion.png": png_bytes(9, 9, shade=5) + b"a video after the image",
        },
    )
    (raw / "1/00003.png").write_bytes(png_bytes(12, 12, shade=6))
    (raw / "2/00007.png").unlink()
    (raw / "1/copy.png").unlink()  # 1/copy.png < 3/00005.png: the pair's first goes
    return 7


def test_a_version_reads_only_what_changed_and_writes_what_a_fresh_ingest_writes(settled, tmp_path):
    raw, out = settled
    changed = many_changes(raw)
    settle()
    forget_the_ingest_cache()

    report = ingest_into(raw, out)

    assert report.read == changed
    manifest, summary = fresh(raw, tmp_path)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert report_of(out) == summary
    assert summary["duplicates"] == {"groups": 1, "files": 2}  # the added copy, not the old pair
    assert {item["reason"] for item in summary["skipped_files"]} == {"not_image", "corrupt"}
    assert summary["notes"] == 1


def test_the_next_version_carries_over_from_the_records_a_version_wrote(settled, tmp_path):
    raw, out = settled
    many_changes(raw)
    settle()
    ingest_into(raw, out)
    assert ingest_into(raw, out).read == 0  # nothing changed since: nothing read
    (raw / "3/motion.png").unlink()
    write_tree(raw, {"1/00003.png": png_bytes(13, 12, shade=7), "1/new.png": png_bytes(3, 3)})
    settle()
    forget_the_ingest_cache()

    assert ingest_into(raw, out).read == 2
    manifest, summary = fresh(raw, tmp_path)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert report_of(out) == summary


def test_a_version_refused_by_a_fail_policy_publishes_nothing_and_the_next_run_is_right(
    settled, tmp_path
):
    raw, out = settled
    strict = IngestParams(on_error={"corrupt": "fail"})
    ingest_into(raw, out, strict)  # params changed: a full run, its records kept
    before = (out / "manifest.jsonl").read_bytes(), (out / "ingest.json").read_bytes()
    write_tree(raw, {"2/broken.png": png_bytes(9, 9)[:30], "2/fine.png": png_bytes(4, 4)})
    settle()

    with pytest.raises(PolicyError, match=r"corrupt.*2/broken\.png"):
        ingest_into(raw, out, strict)

    assert ((out / "manifest.jsonl").read_bytes(), (out / "ingest.json").read_bytes()) == before
    assert not list(out.glob(".*tmp*"))
    (raw / "2/broken.png").unlink()
    settle()
    assert ingest_into(raw, out, strict).read == 1
    assert (out / "manifest.jsonl").read_bytes() == fresh(raw, tmp_path, strict)[0]


def records_file(out):
    look = InputSnapshot(
        out / "manifest.jsonl", out / "ingest.json", "raw", None, IngestParams(), False
    )
    return look.records_file


@pytest.mark.parametrize(
    "damage",
    [lambda path: path.write_bytes(path.read_bytes()[:200]), lambda path: path.unlink()],
    ids=["truncated", "deleted"],
)
def test_records_damaged_or_gone_make_a_full_run_that_keeps_new_ones(settled, tmp_path, damage):
    raw, out = settled
    damage(records_file(out))
    write_tree(raw, {"1/new.png": png_bytes(3, 3)})
    settle()

    assert ingest_into(raw, out).read == 1  # in full: the others known from the ingest cache
    assert (out / "manifest.jsonl").read_bytes() == fresh(raw, tmp_path)[0]
    write_tree(raw, {"1/newer.png": png_bytes(4, 3)})
    settle()
    assert ingest_into(raw, out).read == 1
    assert records_file(out).exists()
    assert (out / "manifest.jsonl").read_bytes() == fresh(raw, tmp_path)[0]


def test_a_name_in_another_unicode_normalization_is_judged_beside_its_twin(settled, tmp_path):
    raw, out = settled
    nfd, nfc = "1/cafe\u0301.png", "1/caf\u00e9.png"
    write_tree(raw, {nfd: png_bytes(5, 5)})
    settle()
    ingest_into(raw, out)
    write_tree(raw, {nfc: png_bytes(6, 5)})  # now the NFD spelling is the odd one out
    settle()

    ingest_into(raw, out)

    manifest, summary = fresh(raw, tmp_path)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert report_of(out) == summary
    assert [item["reason"] for item in summary["skipped_files"]] == ["bad_path", "not_image"]


def test_a_manifest_edited_since_is_never_spliced(settled, tmp_path):
    raw, out = settled
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace('"label":"1"', '"label":"x"'))
    write_tree(raw, {"1/new.png": png_bytes(3, 3)})
    settle()

    ingest_into(raw, out)

    assert manifest.read_bytes() == fresh(raw, tmp_path)[0]


def test_a_version_where_most_files_changed_is_read_in_full_and_its_cache_learns_them(
    settled, tmp_path, monkeypatch
):
    raw, out = settled
    monkeypatch.setattr(changes, "_FEW", 5)
    for path in raw.rglob("*.png"):
        os.chmod(path, 0o644)  # a new ctime: every stat line differs
    settle()
    assert ingest_into(raw, out).read == 61

    records_file(out).unlink()  # the next change cannot be carried over: a full run
    write_tree(raw, {"1/new.png": png_bytes(3, 3)})
    settle()
    assert ingest_into(raw, out).read == 1  # the others known from the cache
