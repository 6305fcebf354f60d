"""The pack of a git revision, fetched through DVC's own API into a local read-only cache."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from imgpack.errors import InputError

__all__ = ["PIPELINE_PACK", "cache_root", "fetch_pack"]

PIPELINE_PACK = "data/packed/images.lmdb"  # the pack stage's output in dvc.yaml


def cache_root() -> Path:
    """Where fetched packs live: $IMGPACK_CACHE, or imgpack/packs under the user's cache folder."""
    if os.environ.get("IMGPACK_CACHE"):
        return Path(os.environ["IMGPACK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgpack" / "packs"


def fetch_pack(path: str | os.PathLike, rev: str) -> Path:
    """A local read-only copy of the pack at `path` (in this DVC repository) as of `rev`.

    The copy is keyed by the hash DVC recorded for that output, so a second open of the same
    revision (or of another revision with the same pack) reuses it; the workspace is not touched.
    """
    from dvc.api import DVCFileSystem

    absolute = Path(path).absolute()
    root = next((p for p in absolute.parents if (p / ".dvc").is_dir()), None)
    if root is None:
        raise InputError(f"{path}: not inside a DVC repository, so it has no revisions")
    relative = absolute.relative_to(root).as_posix()
    fs = None
    try:
        fs = DVCFileSystem(str(root), rev=rev)
        return _fetch(fs, relative, absolute.name, rev)
    finally:
        if fs is not None:  # its repository and git handles, closed now rather than at exit
            fs.close()


def _fetch(fs, relative: str, name: str, rev: str) -> Path:
    try:
        info = fs.info(relative)
    except FileNotFoundError:
        raise InputError(
            f"revision {rev!r} has no {relative} (check the path and the revision)"
        ) from None
    except Exception as exc:  # unknown revision, broken repository
        raise InputError(f"cannot read revision {rev!r}: {_one_line(exc)}") from None
    digest = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not digest:
        raise InputError(f"{relative} at {rev!r} is not tracked by DVC: there is no pack to fetch")
    target = cache_root() / digest.replace(".dir", "-dir") / name
    if target.exists():
        return target
    staging = target.parent.with_name(f".{target.parent.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fs.get(relative, str(staging / name), recursive=info["type"] == "directory")
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(
            f"the pack {relative} of revision {rev!r} is in neither the DVC cache nor the "
            f"remote ({_one_line(exc)}); run `dvc push` where that revision was built, or "
            f"`git checkout {rev} && dvc repro`"
        ) from None
    _read_only(staging)
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, target.parent)
    except OSError:  # another process fetched the same pack first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_only(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            file = os.path.join(dirpath, name)
            os.chmod(file, os.stat(file).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
