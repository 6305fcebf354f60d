"""Where each file of a DVC-tracked pack lives on a DVC remote, and one file fetched (spec: README.md)."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpack.errors import InputError, PackCorruptError
from imgpack.util.projects import dvc_root

__all__ = ["RemoteFile", "RemotePack"]

# DVC 2's outputs: objects at the remote's root, text files hashed with unix line ends
_LEGACY_HASH = "md5-dos2unix"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a pack as DVC recorded it: its name inside the pack folder, md5 and size."""

    name: str
    md5: str
    size: int | None = None


class RemotePack:
    """A DVC-tracked pack of one revision: its files and the remote they are fetched from."""

    def __init__(
        self,
        *,
        path: str,
        rev: str | None,
        files: list[RemoteFile],
        is_folder: bool,
        md5: str,
        size: int | None,
        remote_name: str,
        hash_name: str,
        fs_cls: type,
        fs_config: dict[str, Any],
        fs_path: str,
    ) -> None:
        self.path = path  # relative to the repository's root, posix
        self.rev = rev
        self.files = files
        self.is_folder = is_folder
        self.md5 = md5  # the output's hash: "<md5>.dir" for a folder
        self.size = size
        self.remote_name = remote_name
        self.hash_name = hash_name
        self._fs_cls = fs_cls
        self._fs_config = fs_config
        self._fs_path = fs_path
        self._fs: Any = None
        self._odb: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        at = "workspace" if self.rev is None else f"rev={self.rev!r}"
        return (
            f"RemotePack({self.path!r}, {at}, remote={self.remote_name!r}, "
            f"{len(self.files)} file{'s' if len(self.files) != 1 else ''})"
        )

    # -- pickling: settings travel, the filesystem is built again where it is used -----------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_fs=None, _odb=None, _pid=0, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __enter__(self) -> RemotePack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the remote's filesystem (its connections); the next fetch builds it again."""
        with self._lock:
            self._fs = self._odb = None
            self._pid = 0

    # -- locations and downloads ------------------------------------------------------------------
    def file(self, name: str) -> RemoteFile:
        """The file of this pack named `name` (e.g. "catalog.lmdb")."""
        for file in self.files:
            if file.name == name:
                return file
        raise KeyError(name)

    def url(self, file: RemoteFile) -> str:
        """Where `file` lives on the remote (a local path, s3://..., http://...)."""
        odb = self._object_db()
        return odb.fs.unstrip_protocol(odb.oid_to_path(file.md5))

    def fetch(self, file: RemoteFile, to: str | os.PathLike, verify: bool = True) -> None:
        """Download exactly `file`'s object from the remote into `to`, replacing it atomically.

        Nothing else is read from the remote and nothing is written to the DVC cache. With
        `verify`, the download's md5 (and size, when recorded) must match what DVC recorded.
        """
        odb = self._object_db()
        source = odb.oid_to_path(file.md5)
        target = Path(to)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part-{os.getpid()}-{threading.get_ident()}")
        try:
            odb.fs.get_file(source, os.fspath(part))
            if verify:
                self._verify(file, part)
            os.replace(part, target)
        except FileNotFoundError:
            raise self._missing(file) from None
        except (InputError, PackCorruptError):
            raise
        except Exception as exc:  # network, credentials, permissions
            raise self._unreachable(file, "download", exc) from None
        finally:
            if part.exists():
                part.unlink()

    def size_of(self, file: RemoteFile) -> int:
        """`file`'s size in bytes: as DVC recorded it, else asked of the remote (one request for
        its metadata: a stat, an HTTP HEAD, an S3 HeadObject), nothing downloaded."""
        if file.size is not None:
            return file.size
        odb = self._object_db()
        try:
            size = odb.fs.info(odb.oid_to_path(file.md5)).get("size")
        except FileNotFoundError:
            raise self._missing(file) from None
        except Exception as exc:  # network, credentials, permissions
            raise self._unreachable(file, "ask the size of", exc) from None
        if size is None:
            raise InputError(
                f"remote {self.remote_name!r} does not say the size of {file.name} of "
                f"{self._described()} ({self.url(file)}); use a remote that reports sizes"
            )
        return int(size)

    def _missing(self, file: RemoteFile) -> InputError:
        return InputError(
            f"{file.name} of {self._described()} (md5 {file.md5}) is missing on remote "
            f"{self.remote_name!r} ({self.url(file)}); run `dvc push -r {self.remote_name}` "
            "on a machine that has it"
        )

    def _unreachable(self, file: RemoteFile, doing: str, exc: BaseException) -> InputError:
        return InputError(
            f"cannot {doing} {file.name} of {self._described()} from remote "
            f"{self.remote_name!r} ({self.url(file)}): {_one_line(exc)}; check the remote's "
            "address and credentials (`dvc remote list`, `dvc remote modify`)"
        )

    def _verify(self, file: RemoteFile, part: Path) -> None:
        size = part.stat().st_size
        got = None
        if file.size is not None and size != file.size:
            got = f"{size} bytes, not {file.size}"
        elif self.hash_name != _LEGACY_HASH:  # dos2unix hashes text otherwise: not checked
            digest = _md5(part)
            if digest != file.md5:
                got = f"md5 {digest}, not {file.md5}"
        if got:
            raise PackCorruptError(
                f"{file.name} of {self._described()} from remote {self.remote_name!r} "
                f"({self.url(file)}) is damaged ({got}): delete it there and run "
                f"`dvc push -r {self.remote_name}` on a machine that has a good copy"
            )

    @property
    def described(self) -> str:
        """The pack's path, with `@rev` when it is of a revision: how messages name it."""
        return self.path if self.rev is None else f"{self.path}@{self.rev}"

    def _described(self) -> str:
        return self.described

    def _object_db(self):
        with self._lock:
            if self._odb is None or self._pid != os.getpid():  # built again after a fork
                self._fs = self._fs_cls(**self._fs_config)
                self._odb = _odb(self._fs, self._fs_path, self.hash_name, self._fs_config)
                self._pid = os.getpid()
            return self._odb

    # -- resolving ----------------------------------------------------------------------------------
    @classmethod
    def resolve(
        cls, path: str | os.PathLike, rev: str | None = None, remote: str | None = None
    ) -> RemotePack:
        """The files of the pack at `path` as of `rev` (None: the workspace's dvc.lock or .dvc
        file) and the remote holding them (`remote`, else the output's, else the default)."""
        from dvc.config import Config
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
        from dvc.scm import RevError, SCMError

        absolute = Path(path).absolute()
        root = dvc_root(absolute.parent)
        if root is None:
            raise InputError(
                f"{path}: not inside a DVC repository (no .dvc/ folder above it); give the pack's "
                "path inside a git+DVC project"
            )
        relative = absolute.relative_to(root).as_posix()
        try:
            workspace = Config(dvc_dir=str(root / ".dvc"))
        except DvcException as exc:
            raise InputError(
                f"cannot read the DVC config of {root}: {_one_line(exc)}; fix .dvc/config"
            ) from None
        try:
            repo = Repo(str(root), rev=rev) if rev is not None else Repo(str(root))
        except RevError:
            raise InputError(
                f"unknown revision {rev!r} in {root}: give a commit, branch or tag of its git "
                "history (`git log --oneline`, `git tag`)"
            ) from None
        except SCMError as exc:
            raise InputError(
                f"{root} has no git history to take revision {rev!r} from ({_one_line(exc)}); "
                "pass rev=None for the workspace's version"
            ) from None
        except DvcException as exc:
            raise InputError(f"cannot open the DVC repository {root}: {_one_line(exc)}") from None
        try:
            return cls._resolve(repo, workspace, root, relative, rev, remote)
        finally:
            repo.close()  # its git handles and state database, closed now rather than at exit

    @classmethod
    def _resolve(cls, repo, workspace, root: Path, relative: str, rev, remote) -> RemotePack:
        at = "the workspace" if rev is None else f"revision {rev!r}"
        out = _output(repo, relative, at)
        hash_info = out.hash_info
        if not hash_info or not hash_info.value:
            raise InputError(
                f"{relative} has no recorded version in {at}: its stage has not run or was not "
                "committed; run `dvc repro` (or `dvc commit`), commit dvc.lock and `dvc push`"
            )
        name, fs_cls, fs_config, fs_path = _remote(repo, workspace, root, remote or out.remote)
        size = out.meta.size if out.meta else None
        pack = cls(
            path=relative,
            rev=rev,
            files=[],
            is_folder=bool(hash_info.isdir),
            md5=hash_info.value,
            size=size,
            remote_name=name,
            hash_name=out.hash_name,
            fs_cls=fs_cls,
            fs_config=fs_config,
            fs_path=fs_path,
        )
        if not pack.is_folder:
            pack.files = [RemoteFile(relative.rsplit("/", 1)[-1], hash_info.value, size)]
            return pack
        tree = _listing(out, pack, at)
        pack.files = sorted(
            (
                RemoteFile("/".join(key), entry_hash.value, meta.size if meta else None)
                for key, (meta, entry_hash) in tree.iteritems()
            ),
            key=lambda f: f.name,
        )
        return pack


def _output(repo, relative: str, at: str):
    """The DVC output tracked at `relative`, or the one-line error saying what `relative` is."""
    from dvc.exceptions import DvcException, OutputNotFoundError

    target = repo.fs.join(repo.root_dir, *relative.split("/"))
    every: list = []
    try:
        # DVC's trie of the outputs (which refuses duplicated and overlapping ones), not its
        # graph of them (the default): reading one output needs no pipeline graph, nor networkx
        # (0.1-0.2 s to import).
        every = list(repo.index.outs_trie.values())
        outs = repo.find_outs_by_path(target, outs=every, strict=True) if every else []
    except OutputNotFoundError:
        outs = []
    except DvcException as exc:  # a broken dvc.yaml, dvc.lock or .dvc file
        raise InputError(
            f"cannot read the DVC files (dvc.yaml, dvc.lock, *.dvc) of {at}: {_one_line(exc)}"
        ) from None
    if not outs:
        try:
            enclosing = repo.find_outs_by_path(target, outs=every, strict=False) if every else []
        except DvcException:
            enclosing = []
        if enclosing:
            owner = repo.fs.relpath(enclosing[0].fs_path, repo.root_dir).replace(os.sep, "/")
            raise InputError(
                f"{relative} in {at} is a file inside the DVC output {owner}; give the pack's "
                f"own path ({owner})"
            )
        if repo.fs.exists(target):
            kind = "folder" if repo.fs.isdir(target) else "file"
            where = (
                f"a plain git {kind}" if at != "the workspace" else f"a {kind} DVC does not track"
            )
            raise InputError(
                f"{relative} in {at} is {where}, not a DVC-tracked pack; track it with "
                f"`dvc add {relative}` (or as a stage's output) and `dvc push`"
            )
        raise InputError(
            f"{at} has no {relative}: no DVC output or file by that path; check the path and "
            "the revision"
        )
    out = outs[0]
    if not out.use_cache:
        raise InputError(
            f"{relative} in {at} is a DVC output with `cache: false`: git keeps it and no remote "
            "does, so it is not a DVC-tracked pack; drop `cache: false` and `dvc push`"
        )
    return out


def _remote(repo, workspace, root: Path, name: str | None):
    """(name, filesystem class, its settings, the remote's path) of the remote to read from."""
    from dvc.exceptions import DvcException
    from dvc.fs import get_cloud_fs

    remotes = {**repo.config.get("remote", {}), **workspace.get("remote", {})}
    configured = ", ".join(sorted(remotes)) or "none"
    if not name:
        name = workspace.get("core", {}).get("remote") or repo.config.get("core", {}).get("remote")
    if not name:
        if not remotes:
            raise InputError(
                f"no DVC remote is configured in {root}: add one with "
                "`dvc remote add -d NAME URL` and `dvc push` the pack to it"
            )
        raise InputError(
            f"no default DVC remote in {root}: pass remote= one of {configured}, or set one with "
            "`dvc remote default NAME`"
        )
    name = name.lower()  # as DVC looks them up
    if name not in remotes:
        raise InputError(
            f"no DVC remote named {name!r} in {root} (configured: {configured}); add it with "
            f"`dvc remote add {name} URL` or `dvc remote add -d NAME URL`"
        )
    config = {"core": workspace.get("core", {}), "remote": remotes}
    try:
        fs_cls, fs_config, fs_path = get_cloud_fs(config, name=name)
    except DvcException as exc:  # a plugin not installed (dvc-s3, dvc-ssh, ...), bad settings
        raise InputError(f"cannot use DVC remote {name!r}: {_one_line(exc)}") from None
    if fs_config.get("version_aware") or fs_config.get("worktree"):
        raise InputError(
            f"DVC remote {name!r} is cloud-versioned (version_aware/worktree): it keeps no "
            "object store to fetch single files from; use a plain remote (`dvc remote add`)"
        )
    return name, fs_cls, fs_config, fs_path


def _odb(fs, fs_path: str, hash_name: str, config: dict[str, Any]):
    """The remote's object database, as dvc.data_cloud.Remote.odb / legacy_odb build it."""
    from dvc.cachemgr import CacheManager
    from dvc_data.hashfile.db import get_odb

    if hash_name == _LEGACY_HASH:
        return get_odb(fs, fs_path, hash_name=_LEGACY_HASH, **config)
    path = fs.join(fs_path, CacheManager.FILES_DIR, "md5")
    return get_odb(fs, path, hash_name="md5", **config)


def _listing(out, pack: RemotePack, at: str):
    """The folder's `.dir` listing: from the DVC cache if there, else read from the remote."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    hash_info = HashInfo(out.hash_name, pack.md5)
    if out.cache is not None:
        try:
            return Tree.load(out.cache, hash_info, hash_name=out.hash_name)
        except Exception:  # not in the cache (or damaged there): the remote has it
            pass
    listing = RemoteFile(pack.path, pack.md5)
    try:
        return Tree.load(pack._object_db(), hash_info, hash_name=out.hash_name)
    except FileNotFoundError:
        raise InputError(
            f"the file list of {pack.path} in {at} (md5 {pack.md5}) is in neither the DVC cache "
            f"nor remote {pack.remote_name!r} ({pack.url(listing)}); run "
            f"`dvc push -r {pack.remote_name}` on a machine that has it"
        ) from None
    except Exception as exc:
        raise InputError(
            f"cannot read the file list of {pack.path} in {at} from remote "
            f"{pack.remote_name!r} ({pack.url(listing)}): {_one_line(exc)}; check the remote's "
            "address and credentials (`dvc remote list`, `dvc remote modify`)"
        ) from None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
