"""The real dvc CLI runs the pipeline in a temporary git repo: repro, no-op, param changes, push and pull."""

import hashlib
import json
import re

import pytest
import yaml

import imgpack
from tests.conftest import dvc, flip_byte_of, git, run, source_files

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_param(project, block, key, value):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[block][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_builds_then_reruns_only_what_changed_and_reproduces_the_same_bytes(dvc_project):
    first = dvc("repro", cwd=dvc_project)
    assert stages_run(first.stdout) == ["ingest", "pack", "validate", "summarize"]
    pack_sha = sha256(dvc_project / PACK)
    assert json.loads((dvc_project / "reports/validation.json").read_text())["ok"] is True
    assert json.loads((dvc_project / "reports/summary.json").read_text())["images"] == 24
    # one data file: no -lock file and no temporary beside the DVC output
    assert sorted(p.name for p in (dvc_project / "data/packed").iterdir()) == [
        ".gitignore",
        "images.lmdb",
    ]

    assert stages_run(dvc("repro", cwd=dvc_project).stdout) == []

    set_param(dvc_project, "pack", "split_seed", 7)
    assert stages_run(dvc("repro", cwd=dvc_project).stdout) == ["pack", "validate", "summarize"]
    assert sha256(dvc_project / PACK) != pack_sha
    set_param(dvc_project, "pack", "split_seed", 0)
    dvc("repro", cwd=dvc_project)
    assert sha256(dvc_project / PACK) == pack_sha

    forced = dvc("repro", "-f", cwd=dvc_project)
    assert stages_run(forced.stdout) == ["ingest", "pack", "validate", "summarize"]
    assert sha256(dvc_project / PACK) == pack_sha

    shown = json.loads(dvc("metrics", "show", "--json", cwd=dvc_project).stdout)
    assert '"images": 24' in json.dumps(shown)
    plots = dvc("plots", "show", "--json", cwd=dvc_project).stdout
    assert "images_per_label.csv" in plots and "image_sizes.csv" in plots


def test_push_clone_pull_gives_back_every_image_byte_identical(dvc_project, tmp_path):
    remote = tmp_path / "remote"
    dvc("repro", cwd=dvc_project)
    dvc("remote", "add", "-d", "local", str(remote), cwd=dvc_project)
    git("add", "-A", cwd=dvc_project)
    git("add", "-f", "dvc.lock", cwd=dvc_project)
    git("commit", "-qm", "pipeline ran", cwd=dvc_project)
    dvc("push", cwd=dvc_project)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_project), str(clone)], tmp_path)
    assert not (clone / PACK).exists()
    dvc("pull", cwd=clone)
    assert sha256(clone / PACK) == sha256(dvc_project / PACK)
    sources = source_files(clone / "data/raw/images")
    with imgpack.open(clone / PACK) as pack:
        assert {r.key: r.data for r in pack} == sources
    assert stages_run(dvc("repro", cwd=clone).stdout) == []


def test_a_flipped_byte_makes_the_validate_stage_fail_and_name_the_key(dvc_project):
    dvc("repro", cwd=dvc_project)
    key = "square/square_001.png"
    flip_byte_of(dvc_project / PACK, key)
    failed = dvc("repro", "validate", "--single-item", cwd=dvc_project, check=False)
    assert failed.returncode != 0
    assert f"hash_mismatch 1: {key}" in failed.stderr + failed.stdout
