"""A user's own project: a fresh git + DVC repository, with digit images in its raw folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import digit_pngs, dvc, git

RAW = "data/raw/images"


def files_of(root: Path) -> dict[str, bytes]:
    """Every file of the project but git's and DVC's own: what init may have written."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".git", ".dvc"} & set(p.relative_to(root).parts)
    }


def new_repository(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("config", "core.analytics", "false", cwd=root)
    return root


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """190 drawn-digit PNGs in ImageFolder layout: 10 + 2*d images of digit d, so the bars differ."""
    return digit_pngs(tmp_path_factory.mktemp("digits"), {d: 10 + 2 * d for d in range(10)})


@pytest.fixture(scope="session")
def empty_repository(tmp_path_factory) -> Path:
    return new_repository(tmp_path_factory.mktemp("empty") / "project")


@pytest.fixture
def repository(empty_repository, tmp_path) -> Path:
    """An empty git + DVC repository (a copy of one made once: `dvc init` takes a second)."""
    return Path(shutil.copytree(empty_repository, tmp_path / "project", symlinks=True))


@pytest.fixture
def project(repository, digits) -> Path:
    """A git + DVC repository with the digits in data/raw/images, committed: a new user's."""
    shutil.copytree(digits, repository / RAW)
    git("add", "-A", cwd=repository)
    git("commit", "-qm", "images", cwd=repository)
    return repository
