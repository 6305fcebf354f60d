"""Fixtures of the read tests that need a real git + DVC project pushed to real remotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import git
from tests.read.remotes import remote_project


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """The project of `remote_project` (v1 and v2 pushed to local, HTTP and S3 remotes), built
    once for every test module that reads from a remote."""
    with remote_project(tmp_path_factory.mktemp("remote-project")) as built:
        yield built


@pytest.fixture
def clone(project, tmp_path) -> Path:
    """A fresh git clone of the project: no DVC cache, no pack on disk."""
    out = tmp_path / "clone"
    git("clone", "-q", str(project.root), str(out), cwd=tmp_path)
    return out
