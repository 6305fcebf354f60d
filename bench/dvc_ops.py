"""DVC with the raw folder vs the pack: add, push, status, pull into a fresh clone; and dvc repro."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.data import WORK
from bench.timing import PYTHON, env, median, rounds, run_process

REPO = Path(__file__).resolve().parents[1]
DVC = [PYTHON, "-m", "dvc"]


def _quiet(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, env=env(), check=True, capture_output=True)


def _git_repo(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    _quiet(["git", "init", "-q"], path)
    _quiet(["git", "config", "user.email", "bench@imgpack.invalid"], path)
    _quiet(["git", "config", "user.name", "bench"], path)
    _quiet([*DVC, "init", "-q"], path)
    _quiet([*DVC, "config", "core.analytics", "false"], path)


def _copy_in(source: Path, target: Path) -> None:
    """Hard links: the copy is free, DVC still hashes and transfers every file."""
    if source.is_file():
        shutil.copyfile(source, target)
        return
    shutil.copytree(source, target, copy_function=os.link)


def pipeline_project(project: Path, raw: Path, remote: Path, params_edit, before_wait=None) -> Path:
    """A git + DVC project of this repository's pipeline (its src/, plots, dvc.yaml) over `raw`
    (hard links) with a local remote; `params_edit(params)` changes params.yaml's blocks, and
    `before_wait(project)` writes what else the project needs (a labels table)."""
    _git_repo(project)
    shutil.copytree(
        REPO / "src" / "imgpack",
        project / "src/imgpack",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(REPO / "plots", project / "plots")
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(REPO / ".dvcignore", project / ".dvcignore")  # DVC is not to walk the raw folder
    images = project / "data/raw/images"
    _copy_in(raw, images)
    (images / ".DS_Store").unlink(missing_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params_edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if before_wait is not None:
        before_wait(project)
    shutil.rmtree(remote, ignore_errors=True)
    _quiet([*DVC, "remote", "add", "-d", "local", str(remote)], project)
    # Linking the files in changed their ctime: wait out ingest's racy window (2 s), as any
    # folder older than a few seconds already has.
    time.sleep(2.1)
    return project


def _cycle(data: Path, tag: str) -> dict[str, float]:
    """One add/push/status/pull cycle on `data`; seconds per operation."""
    repo, remote, clone = (
        WORK / "dvc" / tag,
        WORK / "dvc" / f"{tag}-remote",
        WORK / "dvc" / f"{tag}-clone",
    )
    for path in (remote, clone):
        shutil.rmtree(path, ignore_errors=True)
    _git_repo(repo)
    name = "data" + (data.suffix if data.is_file() else "")
    _copy_in(data, repo / name)
    seconds = {"add": run_process([*DVC, "add", name], repo)[0]}
    _quiet([*DVC, "remote", "add", "-d", "local", str(remote)], repo)
    _quiet(["git", "add", "-A"], repo)
    _quiet(["git", "commit", "-qm", "data"], repo)
    seconds["push"] = run_process([*DVC, "push"], repo)[0]
    seconds["status"] = run_process([*DVC, "status"], repo)[0]
    _quiet(["git", "clone", "-q", str(repo), str(clone)], WORK)
    seconds["pull"] = run_process([*DVC, "pull"], clone)[0]
    for path in (repo, remote, clone):
        shutil.rmtree(path, ignore_errors=True)
    return seconds


def measure_transfer(raw: Path, pack: Path, runs: int) -> dict:
    results: dict[str, list[dict[str, float]]] = {"folder": [], "pack": []}

    def cycle(kind: str, data: Path):
        def once() -> float:
            results[kind].append(_cycle(data, kind))
            return 0.0

        return once

    rounds({"folder": cycle("folder", raw), "pack": cycle("pack", pack)}, runs)
    table = {}
    for op in ("add", "push", "status", "pull"):
        folder = median([r[op] for r in results["folder"]])
        packed = median([r[op] for r in results["pack"]])
        table[op] = {"folder_s": folder, "pack_s": packed, "speedup": folder / packed}
    push_pull = {k: median([r["push"] + r["pull"] for r in results[k]]) for k in results}
    table["push+pull"] = {
        "folder_s": push_pull["folder"],
        "pack_s": push_pull["pack"],
        "speedup": push_pull["folder"] / push_pull["pack"],
    }
    return table


def measure_repro(raw: Path, runs: int) -> dict:
    """This project's pipeline on `raw` (labels from folder names): full dvc repro, then a no-op one."""
    full, noop = [], []
    for round_number in range(runs):
        project = WORK / "dvc" / f"pipeline-{round_number}"
        _git_repo(project)
        shutil.copytree(
            REPO / "src" / "imgpack",
            project / "src" / "imgpack",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        _copy_in(raw, project / "data" / "raw" / "images")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["ingest"]["labels"] = ""
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
        shutil.copytree(REPO / "plots", project / "plots")
        full.append(run_process([*DVC, "repro"], project)[0])
        noop.append(run_process([*DVC, "repro"], project)[0])
        shutil.rmtree(project, ignore_errors=True)
    return {"full_s": median(full), "noop_s": median(noop), "full_runs": full, "noop_runs": noop}


if __name__ == "__main__":
    sys.exit("run `python -m bench` instead")
