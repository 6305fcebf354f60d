"""The DVC project a path lies in."""

from __future__ import annotations

from pathlib import Path

__all__ = ["dvc_root"]


def dvc_root(folder: Path) -> Path | None:
    """The nearest of `folder` and the folders above it that holds a `.dvc/` folder, if any."""
    return next((p for p in (folder, *folder.parents) if (p / ".dvc").is_dir()), None)
