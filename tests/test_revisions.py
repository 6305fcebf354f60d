"""Every version visible: the pack of a git revision through DVC, and `imgpack diff --rev`."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import imgpack
from tests.conftest import dvc, git, pack_state, tool_env
from tests.test_dvc_pipeline import set_param

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"


def cli(project, *args, cache):
    env = {**tool_env(), "IMGPACK_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "imgpack.cli", *map(str, args)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def two_commits(dvc_project, tmp_path, monkeypatch):
    """v1 pushed to a local remote, then v2 with three images relabelled, in the workspace."""
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "cache"))
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=dvc_project)
    dvc("repro", cwd=dvc_project)
    git("add", "-A", cwd=dvc_project)
    git("add", "-f", "dvc.lock", cwd=dvc_project)
    git("commit", "-qm", "v1", cwd=dvc_project)
    dvc("push", cwd=dvc_project)
    table = dvc_project / "data/raw/labels.csv"
    lines = table.read_text().splitlines()
    relabelled = [lines[0]]
    for n, line in enumerate(lines[1:]):
        path, label, *rest = line.split(",")
        relabelled.append(",".join([path, "blob" if n < 3 else label, *rest]))
    table.write_text("\n".join(relabelled) + "\n")
    set_param(dvc_project, "pack", "shard_mb", 64)
    dvc("repro", cwd=dvc_project)
    git("add", "-A", cwd=dvc_project)
    git("commit", "-qm", "v2", cwd=dvc_project)
    return dvc_project, tmp_path / "cache"


def test_diff_of_a_revision_against_the_workspace_names_the_relabelled_images(two_commits):
    project, cache = two_commits
    before = pack_state(project / PACK)
    shown = cli(project, "diff", "--rev", "HEAD~1", "--json", cache=cache)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["relabeled"]["count"] == 3 and report["modified"]["count"] == 0
    assert report["old"]["name"] == "HEAD~1" and report["new"]["name"] == "workspace"
    both = json.loads(
        cli(project, "diff", "--rev", "HEAD~1", "--rev", "HEAD", "--json", cache=cache).stdout
    )
    assert both["relabeled"] == report["relabeled"]
    assert pack_state(project / PACK) == before  # the workspace is never touched


def test_a_revision_opens_from_a_read_only_cache_reused_by_the_next_open(two_commits):
    project, cache = two_commits
    os.chdir(project)
    old = imgpack.open(PACK, rev="HEAD~1")
    assert str(old.path).startswith(str(cache)) and len(old) == 24
    assert sum(label == "blob" for label in old.metadata()["label"]) == 0
    again = imgpack.open(PACK, rev="HEAD~1")
    assert again.path == old.path
    assert not os.access(old.path, os.W_OK) or os.geteuid() == 0  # root may write anyway
    assert not (os.stat(old.path).st_mode & 0o222)
    dataset = imgpack.ImageDataset(PACK, rev="HEAD~1", split="train")
    assert dataset.pack.path == old.path and len(dataset) > 0
    info = cli(project, "info", PACK, "--rev", "HEAD~1", "--json", cache=cache)
    assert json.loads(info.stdout)["count"] == 24
    assert cli(project, "verify", PACK, "--rev", "HEAD~1", cache=cache).returncode == 0


def test_a_revision_in_neither_cache_nor_remote_is_one_clear_line(two_commits, tmp_path):
    project, cache = two_commits
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "remote")
    shown = cli(project, "info", PACK, "--rev", "HEAD~1", cache=tmp_path / "empty-cache")
    assert shown.returncode == 1
    lines = shown.stderr.strip().splitlines()
    assert len(lines) == 1 and "in neither the DVC cache nor the remote" in lines[0]
    assert "dvc push" in lines[0]
    missing = cli(project, "diff", "--rev", "no-such-rev", cache=cache)
    assert missing.returncode == 2 and "no-such-rev" in missing.stderr
