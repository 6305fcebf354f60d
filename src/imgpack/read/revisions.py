"""The pack of a git revision, fetched through DVC's own API into a local read-only cache."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from imgpack.errors import REFETCH, InputError, PackCorruptError, PackFormatError
from imgpack.util.projects import dvc_root

__all__ = ["PIPELINE_PACK", "cache_root", "cached_copy", "fetch_pack", "refetch_remedy"]

PIPELINE_PACK = "data/packed/images.lmdb"  # the pack stage's output in dvc.yaml


def cache_root() -> Path:
    """Where fetched packs live: $IMGPACK_CACHE, or imgpack/packs under the user's cache folder."""
    if os.environ.get("IMGPACK_CACHE"):
        return Path(os.environ["IMGPACK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgpack" / "packs"


def cached_copy(path: str | os.PathLike) -> Path | None:
    """The folder of imgpack's copy of a revision's pack that `path` lies in, if it lies in one."""
    root = cache_root().resolve()
    try:
        inside = Path(path).resolve().relative_to(root)
    except ValueError:
        return None
    if not inside.parts or inside.parts[0] == "stream":  # streamed shards: see read/shardcache
        return None
    return root / inside.parts[0]


def refetch_remedy(path: str | os.PathLike) -> str:
    """What gives an intact copy of the damaged pack at `path`: for imgpack's copy of a revision,
    deleting that copy (dvc pull and dvc checkout never touch it); in a DVC project, a forced
    checkout of that path; else restoring or rebuilding it."""
    copy = cached_copy(path)
    if copy is not None:
        return f"delete imgpack's copy {copy} (the next use of that revision fetches it again)"
    if dvc_root(Path(os.path.abspath(path)).parent) is not None:
        # `dvc pull` and a plain `dvc checkout` refuse to overwrite a modified output
        shown = os.path.relpath(path)
        shown = shown if not shown.startswith("..") else os.path.abspath(path)
        return f"restore it (dvc checkout --force {shown}) or rebuild it"
    return REFETCH


def fetch_pack(path: str | os.PathLike, rev: str) -> Path:
    """A local read-only copy of the pack at `path` (in this DVC repository) as of `rev`.

    The copy is keyed by the hash DVC recorded for that output, so a second open of the same
    revision (or of another revision with the same pack) reuses it; the workspace is not touched.
    A copy that no longer opens (a file of it deleted or truncated) is fetched again, once.
    """
    from dvc.api import DVCFileSystem

    absolute = Path(path).absolute()
    root = dvc_root(absolute.parent)
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
    info = _dvc_info(fs, relative, rev)
    digest = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not digest:
        raise InputError(f"{relative} at {rev!r} is not tracked by DVC: there is no pack to fetch")
    target = cache_root() / digest.replace(".dir", "-dir") / name
    if target.exists():
        if _damage(target) is None:
            return target
        shutil.rmtree(target.parent, ignore_errors=True)  # only a copy: fetch it again
    _download(fs, relative, info, target, rev)
    damage = _damage(target)
    if damage is not None:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise PackCorruptError(
            f"the pack {relative} of revision {rev!r} is damaged in DVC's cache too ({damage}); "
            "run `dvc fetch --all-commits` (it replaces damaged objects of DVC's cache from the "
            "remote) and try again"
        )
    return target


def _dvc_info(fs, relative: str, rev: str) -> dict:
    try:
        return fs.info(relative)
    except FileNotFoundError:
        pass
    except Exception as exc:  # unknown revision, broken repository
        raise InputError(f"cannot read revision {rev!r}: {_one_line(exc)}") from None
    if _in_git(fs, relative):
        raise InputError(
            f"{relative} at {rev!r} is in git, not a DVC-tracked pack: give the path of a pack "
            f"DVC tracks (the pipeline's is {PIPELINE_PACK})"
        )
    raise InputError(f"revision {rev!r} has no {relative} (check the path and the revision)")


def _in_git(fs, relative: str) -> bool:
    """Whether git holds `relative` at the revision (DVC does not show what .dvcignore hides)."""
    try:
        git = fs.repo.fs
        return bool(git.exists(git.join(fs.repo.root_dir, relative)))
    except Exception:  # not a git repository, or a DVC without this API: say only "has no"
        return False


def _download(fs, relative: str, info: dict, target: Path, rev: str) -> None:
    staging = target.parent.with_name(f".{target.parent.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fs.get(relative, str(staging / target.name), recursive=info["type"] == "directory")
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


def _damage(target: Path) -> str | None:
    """Why the copy at `target` does not open as a pack (a file missing, truncated), or None."""
    import lmdb

    from imgpack.format.codec import CATALOG_FILE, HEADER_KEY, decode_header
    from imgpack.read.handles import acquire_env, release_env
    from imgpack.read.shards import check_shard_files

    folder = target.is_dir()
    try:
        env, identity = acquire_env(target / CATALOG_FILE if folder else target)
        try:
            with env.begin() as txn:
                header_db = env.open_db(b"header", txn=txn, create=False)
                header = decode_header(txn.get(HEADER_KEY, db=header_db), str(target))
            if folder:
                check_shard_files(target, header["shards"])
        finally:
            release_env(identity)
    except (PackFormatError, lmdb.Error) as exc:
        return _one_line(exc)
    return None


def _read_only(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            file = os.path.join(dirpath, name)
            os.chmod(file, os.stat(file).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
