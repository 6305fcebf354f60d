"""The real dvc CLI runs the pipeline in a temporary git repo: repro, no-op, param changes, push and pull."""

import hashlib
import json
import re

import pytest
import yaml

import imgpack
from tests.conftest import dvc, flip_byte_of, git, pack_state, run, source_files

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

    # ingest always runs (it stats the raw folder); its manifest is unchanged, so nothing else runs
    assert stages_run(dvc("repro", cwd=dvc_project).stdout) == ["ingest"]

    set_param(dvc_project, "pack", "split_seed", 7)
    assert stages_run(dvc("repro", cwd=dvc_project).stdout) == [
        "ingest",
        "pack",
        "validate",
        "summarize",
    ]
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


def test_dvc_never_walks_the_raw_folder_and_the_pipeline_does_not_need_it_to(dvc_project):
    raw_file = next(p for p in (dvc_project / "data/raw/images").rglob("*") if p.is_file())
    ignored = dvc("check-ignore", "-d", str(raw_file.relative_to(dvc_project)), cwd=dvc_project)
    assert ignored.stdout.startswith(".dvcignore:") and "/data/raw/" in ignored.stdout
    assert stages_run(dvc("repro", cwd=dvc_project).stdout)[0] == "ingest"
    with imgpack.open(dvc_project / PACK) as pack:
        assert len(pack) == 24
    status = dvc("status", cwd=dvc_project).stdout
    assert "pack" not in status and "validate" not in status  # only ingest: always changed


@pytest.mark.parametrize("shard_mb", [64, 0.003])
def test_push_clone_pull_gives_back_every_image_byte_identical(dvc_project, tmp_path, shard_mb):
    remote = tmp_path / "remote"
    set_param(dvc_project, "pack", "shard_mb", shard_mb)
    dvc("repro", cwd=dvc_project)
    assert (dvc_project / PACK).is_dir() == (shard_mb < 1)
    dvc("remote", "add", "-d", "local", str(remote), cwd=dvc_project)
    git("add", "-A", cwd=dvc_project)
    git("add", "-f", "dvc.lock", cwd=dvc_project)
    git("commit", "-qm", "pipeline ran", cwd=dvc_project)
    dvc("push", cwd=dvc_project)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_project), str(clone)], tmp_path)
    assert not (clone / PACK).exists()
    dvc("pull", cwd=clone)
    assert pack_state(clone / PACK).keys() == pack_state(dvc_project / PACK).keys()
    assert [v[0] for v in pack_state(clone / PACK).values()] == [
        v[0] for v in pack_state(dvc_project / PACK).values()
    ]
    sources = source_files(clone / "data/raw/images")
    with imgpack.open(clone / PACK) as pack:
        assert {r.key: r.data for r in pack} == sources
    # The clone rebuilds the manifest (not pushed) from its raw folder: the same, so no rerun.
    assert stages_run(dvc("repro", cwd=clone).stdout) == ["ingest"]


def test_switching_shard_mb_turns_the_one_file_into_a_folder_and_back_without_editing_dvc_yaml(
    dvc_project,
):
    dvc_yaml = (dvc_project / "dvc.yaml").read_text()
    dvc("repro", cwd=dvc_project)
    one_file = sha256(dvc_project / PACK)
    set_param(dvc_project, "pack", "shard_mb", 0.003)
    assert stages_run(dvc("repro", cwd=dvc_project).stdout) == [
        "ingest",
        "pack",
        "validate",
        "summarize",
    ]
    shards = sorted(p.name for p in (dvc_project / PACK).iterdir())
    assert "catalog.lmdb" in shards and len(shards) > 3
    assert (
        json.loads((dvc_project / "reports/summary.json").read_text())["shards"] == len(shards) - 1
    )
    status = dvc("status", "--json", cwd=dvc_project).stdout
    assert json.loads(status) == {"ingest": ["always changed"]}
    with imgpack.open(dvc_project / PACK) as pack:
        assert {r.key: r.data for r in pack} == source_files(dvc_project / "data/raw/images")
    set_param(dvc_project, "pack", "shard_mb", 64)
    dvc("repro", cwd=dvc_project)
    assert sha256(dvc_project / PACK) == one_file
    assert (dvc_project / "dvc.yaml").read_text() == dvc_yaml


def test_a_flipped_byte_makes_the_validate_stage_fail_and_name_the_key(dvc_project):
    dvc("repro", cwd=dvc_project)
    key = "square/square_001.png"
    flip_byte_of(dvc_project / PACK, key)
    failed = dvc("repro", "validate", "--single-item", cwd=dvc_project, check=False)
    assert failed.returncode != 0
    assert f"hash_mismatch 1: {key}" in failed.stderr + failed.stdout
