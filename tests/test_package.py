"""Package-wide promises: nothing imports pickle; the public API is what the README shows."""

import ast
from pathlib import Path

import imgpack

SRC = Path(imgpack.__file__).parent


def test_nothing_in_the_package_imports_pickle():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in ("pickle", "cPickle", "dill")
            ]
    assert offenders == []


def test_the_public_api_is_exported():
    for name in ("open", "Pack", "Record", "ImageDataset", "ImgpackError", "PackCorruptError"):
        assert name in imgpack.__all__ and hasattr(imgpack, name)
