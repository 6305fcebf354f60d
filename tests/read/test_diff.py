"""`imgpack diff` names every change between two packs by kind, from catalogs alone."""

import json
import subprocess
import sys

import pytest

from imgpack.params import PackParams
from imgpack.write.build import build
from tests.conftest import png_bytes, write_tree


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", *map(str, args)], capture_output=True, text=True
    )


def version(tmp_path, name, files, rows, shard_mb=64):
    raw = write_tree(tmp_path / name / "raw", files)
    table = tmp_path / name / "labels.csv"
    table.write_text("path,label,note\n" + "".join(f"{p},{lab},{n}\n" for p, lab, n in rows))
    out = tmp_path / name / "images.lmdb"
    build(raw, out, labels=table, pack_params=PackParams(shard_mb=shard_mb))
    return out


@pytest.fixture
def two_versions(tmp_path):
    files = {f"img/{n:02d}.png": png_bytes(8, 8, shade=n * 7) for n in range(12)}
    rows = [(p, "cat" if n % 2 else "dog", "x") for n, p in enumerate(sorted(files))]
    old = version(tmp_path, "v1", files, rows, shard_mb=0.0005)
    new_files = dict(files)
    del new_files["img/00.png"]  # removed
    new_files["img/01.png"] = png_bytes(8, 8, shade=250)  # modified
    new_files["moved/02.png"] = new_files.pop("img/02.png")  # renamed
    new_files["img/50.png"] = png_bytes(9, 9, shade=1)  # added
    new_files["img/51.png"] = png_bytes(9, 9, shade=2)  # added
    labels = {p: (lab, note) for p, lab, note in rows}
    labels["img/03.png"] = ("bird", "x")  # relabeled
    labels["img/04.png"] = (labels["img/04.png"][0], "blurry")  # meta_changed
    labels["moved/02.png"] = labels.pop("img/02.png")
    new_rows = [(p, *labels.get(p, ("new", "x"))) for p in sorted(new_files)]
    new = version(tmp_path, "v2", new_files, new_rows)
    return old, new


def test_every_kind_of_change_is_named_with_its_keys(two_versions):
    old, new = two_versions
    result = cli("diff", old, new, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "added",
        "removed",
        "modified",
        "renamed",
        "relabeled",
        "meta_changed",
        "old",
        "new",
    }
    assert report["added"] == {"count": 2, "keys": ["img/50.png", "img/51.png"]}
    assert report["removed"] == {"count": 1, "keys": ["img/00.png"]}
    assert report["modified"] == {"count": 1, "keys": ["img/01.png"]}
    assert report["renamed"] == {"count": 1, "keys": [["img/02.png", "moved/02.png"]]}
    assert report["relabeled"] == {"count": 1, "keys": ["img/03.png"]}
    assert report["meta_changed"] == {"count": 1, "keys": ["img/04.png"]}
    assert report["old"]["count"] == 12 and report["new"]["count"] == 13


def test_exit_codes_follow_git_diff(two_versions, tmp_path):
    old, new = two_versions
    assert cli("diff", old, new, "--exit-code").returncode == 1
    same = cli("diff", old, old, "--exit-code")
    assert same.returncode == 0 and "added: 0" in same.stdout
    missing = cli("diff", old, tmp_path / "nope.lmdb")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_the_terminal_shows_counts_and_keys(two_versions):
    old, new = two_versions
    shown = cli("diff", old, new).stdout
    assert "renamed: 1\n  img/02.png -> moved/02.png" in shown and "relabeled: 1" in shown
