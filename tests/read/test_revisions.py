"""Every version visible: the pack of a git revision through DVC, and `imgpack diff --rev`."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import imgpack
from tests.conftest import dvc, git, pack_state, png_bytes, tool_env

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"


def cli(project, *args, cache):
    env = {**tool_env(), "IMGPACK_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", *map(str, args)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def edit_labels(project, edit):
    table = project / "data/raw/labels.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = edit(rows)
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "bbox"])
        writer.writeheader()
        writer.writerows(rows)


def commit(project, message):
    dvc("repro", cwd=project)
    git("add", "-A", cwd=project)
    git("add", "-f", "dvc.lock", cwd=project)
    git("commit", "-qm", message, cwd=project)


@pytest.fixture
def versions(dvc_project, tmp_path, monkeypatch):
    """v1 (pushed), v2 with one change of every kind in known numbers, v3 with two more images.

    Returns the project, v1's records {key: bytes} and the changes v1 -> v2.
    """
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "cache"))
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=dvc_project)
    commit(dvc_project, "v1")
    dvc("push", cwd=dvc_project)
    with imgpack.open(dvc_project / PACK) as pack:
        v1 = {r.key: r.data for r in pack}
    images = dvc_project / "data/raw/images"
    keys = sorted(v1)
    relabel, modify, remove, rename, meta = keys[0:2], keys[8], keys[16], keys[9], keys[17]
    (images / modify).write_bytes(png_bytes(11, 11, shade=99))
    (images / remove).unlink()
    (images / "new").mkdir()
    (images / "new/added.png").write_bytes(png_bytes(13, 9, shade=7))
    (images / "moved").mkdir()
    (images / rename).rename(images / "moved" / rename.split("/")[-1])
    moved = "moved/" + rename.split("/")[-1]

    def v2(rows):
        out = []
        for row in rows:
            if row["path"] == remove:
                continue
            if row["path"] in relabel:
                row["label"] = "blob"
            if row["path"] == rename:
                row["path"] = moved
            if row["path"] == meta:
                row["bbox"] = "0 0 1 1"
            out.append(row)
        return out + [{"path": "new/added.png", "label": "circle", "bbox": "1 1 2 2"}]

    edit_labels(dvc_project, v2)
    commit(dvc_project, "v2")
    for n in range(2):
        (images / f"new/more_{n}.png").write_bytes(png_bytes(5, 5, shade=n))
    edit_labels(
        dvc_project,
        lambda rows: (
            rows + [{"path": f"new/more_{n}.png", "label": "circle", "bbox": ""} for n in range(2)]
        ),
    )
    commit(dvc_project, "v3")
    changes = {
        "added": ["new/added.png"],
        "removed": [remove],
        "modified": [modify],
        "renamed": [[rename, moved]],
        "relabeled": relabel,
        "meta_changed": [meta],
    }
    return dvc_project, tmp_path / "cache", v1, changes


def test_diff_names_every_change_between_revisions_and_paths(versions):
    project, cache, _, changes = versions
    by_rev = json.loads(
        cli(project, "diff", "--rev", "HEAD~2", "--rev", "HEAD~1", "--json", cache=cache).stdout
    )
    assert {k: by_rev[k]["keys"] for k in changes} == changes
    assert {k: by_rev[k]["count"] for k in changes} == {k: len(v) for k, v in changes.items()}
    old = imgpack.open(project / PACK, rev="HEAD~2").path
    new = imgpack.open(project / PACK, rev="HEAD~1").path
    by_path = json.loads(cli(project, "diff", old, new, "--json", cache=cache).stdout)
    assert {k: by_path[k]["keys"] for k in changes} == changes
    itself = json.loads(cli(project, "diff", old, old, "--json", cache=cache).stdout)
    assert all(itself[k] == {"count": 0, "keys": []} for k in changes)
    against_workspace = json.loads(
        cli(project, "diff", "--rev", "HEAD~1", "--json", cache=cache).stdout
    )
    assert against_workspace["added"]["keys"] == ["new/more_0.png", "new/more_1.png"]


def test_the_first_revision_reads_byte_identical_while_the_workspace_holds_the_third(versions):
    project, cache, v1, _ = versions
    before = pack_state(project / PACK)
    with imgpack.open(project / PACK, rev="HEAD~2") as old:
        assert {r.key: r.data for r in old} == v1
        files = {p: os.stat(p).st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    with imgpack.open(project / PACK) as now:
        assert len(now) == len(v1) + 2 and "new/more_1.png" in now
    assert pack_state(project / PACK) == before
    assert {p: os.stat(p).st_mtime_ns for p in cache.rglob("*") if p.is_file()} == files


def test_a_revision_is_fetched_from_the_remote_when_the_local_cache_is_gone(versions):
    project, cache, v1, _ = versions
    shutil.rmtree(project / ".dvc" / "cache")
    with imgpack.open(project / PACK, rev="HEAD~2") as old:
        assert {r.key: r.data for r in old} == v1


def test_a_revision_without_the_pack_is_a_clear_error(versions):
    project, cache, _, _ = versions
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=project).stdout.strip()
    shown = cli(project, "info", PACK, "--rev", first, cache=cache)
    assert shown.returncode == 1 and "not tracked by DVC" in shown.stderr


def test_a_revision_opens_from_a_read_only_cache_reused_by_the_next_open(versions):
    project, cache, _, _ = versions
    os.chdir(project)
    old = imgpack.open(PACK, rev="HEAD~2")
    assert str(old.path).startswith(str(cache)) and len(old) == 24
    assert sum(label == "blob" for label in old.metadata()["label"]) == 0
    again = imgpack.open(PACK, rev="HEAD~2")
    assert again.path == old.path
    assert not os.access(old.path, os.W_OK) or os.geteuid() == 0  # root may write anyway
    assert not (os.stat(old.path).st_mode & 0o222)
    dataset = imgpack.ImageDataset(PACK, rev="HEAD~2", split="train")
    assert dataset.pack.path == old.path and len(dataset) > 0
    info = cli(project, "info", PACK, "--rev", "HEAD~2", "--json", cache=cache)
    assert json.loads(info.stdout)["count"] == 24
    assert cli(project, "verify", PACK, "--rev", "HEAD~2", cache=cache).returncode == 0


def test_a_revision_in_neither_cache_nor_remote_is_one_clear_line(versions, tmp_path):
    project, cache, _, _ = versions
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "remote")
    shown = cli(project, "info", PACK, "--rev", "HEAD~2", cache=tmp_path / "empty-cache")
    assert shown.returncode == 1
    lines = shown.stderr.strip().splitlines()
    assert len(lines) == 1 and "in neither the DVC cache nor the remote" in lines[0]
    assert "dvc push" in lines[0]
    missing = cli(project, "diff", "--rev", "no-such-rev", cache=cache)
    assert missing.returncode == 2 and "no-such-rev" in missing.stderr


# -- one pushed version: a path git holds, and damaged copies, each remedy followed ---------------
@pytest.fixture
def pushed(dvc_project, tmp_path, monkeypatch):
    """The pipeline's pack committed and pushed once: the project, imgpack's cache, its records."""
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "cache"))
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=dvc_project)
    commit(dvc_project, "v1")
    dvc("push", cwd=dvc_project)
    with imgpack.open(dvc_project / PACK) as pack:
        assert pack.path.is_file()  # the sample fits in one shard: a one-file pack
        return dvc_project, tmp_path / "cache", {r.key: r.data for r in pack}


def records_at(project, rev="HEAD"):
    with imgpack.open(project / PACK, rev=rev) as pack:
        return {r.key: r.data for r in pack}


def damaged(file, keep=None, at=None):
    """Replace `file` by a copy cut to `keep` bytes or with 8 bytes at `at` zeroed (a copy, so
    nothing linked to the file changes)."""
    raw = bytearray(file.read_bytes())
    if keep is not None:
        del raw[keep:]
    if at is not None:
        raw[at : at + 8] = bytes(8)
    copy = file.with_name(file.name + ".damaged")
    copy.write_bytes(bytes(raw))
    os.replace(copy, file)


def test_diff_of_a_file_git_holds_says_it_is_not_a_dvc_tracked_pack(pushed):
    project, cache, _ = pushed
    shown = cli(project, "diff", "--rev", "HEAD", "data/raw/labels.csv", cache=cache)
    lines = shown.stderr.strip().splitlines()
    assert shown.returncode == 2 and len(lines) == 1
    assert "data/raw/labels.csv at 'HEAD' is in git, not a DVC-tracked pack" in lines[0]
    assert PACK in lines[0]
    followed = cli(project, "diff", "--rev", "HEAD", PACK, "--json", cache=cache)  # the remedy
    assert followed.returncode == 0 and json.loads(followed.stdout)["old"]["name"] == "HEAD"


def test_a_truncated_copy_in_the_imgpack_cache_is_fetched_again(pushed):
    project, cache, records = pushed
    copy = imgpack.open(project / PACK, rev="HEAD").path
    damaged(copy, keep=os.path.getsize(copy) // 2)
    assert records_at(project) == records
    assert cli(project, "verify", PACK, "--rev", "HEAD", cache=cache).returncode == 0


def test_damage_found_in_a_cached_copy_names_the_copy_to_delete(pushed):
    project, cache, records = pushed
    with imgpack.open(project / PACK) as pack:
        page = pack.locate().starts[0] // 4096 * 4096  # the page holding record 0's image
    copy = imgpack.open(project / PACK, rev="HEAD").path
    damaged(copy, at=page)  # its page number: the open succeeds, the first image read does not
    with pytest.raises(imgpack.PackCorruptError) as caught:
        records_at(project)
    message = str(caught.value)
    assert f"delete imgpack's copy {copy.parent}" in message and "dvc pull" not in message
    shutil.rmtree(copy.parent)  # the remedy
    assert records_at(project) == records


def test_a_pack_damaged_in_dvcs_cache_too_names_dvc_fetch(pushed):
    project, cache, records = pushed
    digest = next(
        out["md5"]
        for stage in yaml.safe_load((project / "dvc.lock").read_text())["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] == PACK
    )
    stored = project / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    damaged(stored, keep=stored.stat().st_size // 2)
    with pytest.raises(imgpack.PackCorruptError) as caught:
        records_at(project)
    assert "run `dvc fetch --all-commits`" in str(caught.value)
    assert not any(cache.iterdir())  # no damaged copy is kept
    dvc("fetch", "--all-commits", cwd=project)  # the remedy
    assert records_at(project) == records
