"""The built wheel, in a fresh virtual environment, sets up and runs a project with no file of this repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tool_env
from tests.project.conftest import RAW
from tests.project.test_pipeline import ALL, COUNTS, render
from tests.stages.test_dvc_pipeline import stages_run
from tests.stages.test_plots import marks

pytestmark = pytest.mark.slow


def run(args: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(list(map(str, args)), cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def fresh_venv_env(venv: Path) -> dict[str, str]:
    """The environment of a user who activated `venv`: its bin first, none of this checkout's."""
    env = tool_env()
    ours = os.path.dirname(sys.executable)
    path = [p for p in env["PATH"].split(os.pathsep) if p != ours]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source (the build leaves build/ beside its input)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", source]
    run(pip, work, tool_env())
    (built,) = (work / "dist").glob("imgpack-*.whl")
    return built


def test_the_wheel_ships_every_file_init_writes(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    for template in ("params.yaml", "plots/counts_by_category.json", "plots/dimensions.json"):
        assert f"imgpack/project/templates/{template}" in names


# Needs `init` registered in imgpack.cli.main: the venv's `imgpack init` is the product's own.
def test_pip_install_of_the_wheel_then_init_and_repro_in_a_new_project(wheel, project, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path, tool_env())
    env = fresh_venv_env(venv)
    run([venv / "bin/pip", "install", "-q", wheel], tmp_path, env)
    where = run(["python", "-c", "import imgpack; print(imgpack.__file__)"], project, env).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout's

    shown = run(["imgpack", "init", "--folder", RAW], project, env).stdout
    assert shown.splitlines()[-1] == "next: dvc repro"
    assert stages_run(run(["dvc", "repro"], project, env).stdout) == ALL
    assert json.loads((project / "reports/validation.json").read_text())["ok"] is True
    plots = render(project, run(["dvc", "plots", "show", "--json"], project, env).stdout)
    assert len(plots) == 4
    svg = plots["reports/plots/images_per_label.csv"][0]
    assert {b["label"]: int(b["images"]) for b in marks(svg, "bar")} == COUNTS
    again = run(["imgpack", "init"], project, env).stdout.splitlines()
    assert again[0].startswith("nothing to change")
