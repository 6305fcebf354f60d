"""A pack's files found on a DVC remote at any revision, and one fetched alone: a local folder
remote, the same folder over HTTP (`python -m http.server`) and S3 (moto's server), each pushed to
by the real `dvc` CLI."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from imgpack.errors import InputError, PackCorruptError
from imgpack.read.remote_files import RemoteFile, RemotePack
from tests.conftest import git
from tests.read.remotes import ONE, PACK, S3

pytestmark = pytest.mark.slow


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def pushed_listing(project, rev: str) -> dict[str, str]:
    """{name: md5} of the .dir object `dvc push` put on the local remote for the pack at `rev`."""
    lock = yaml.safe_load(git("show", f"{rev}:dvc.lock", cwd=project.root).stdout)
    digest = lock["stages"]["pack"]["outs"][0]["md5"]
    path = project.remote / "files/md5" / digest[:2] / digest[2:]
    return {e["relpath"]: e["md5"] for e in json.loads(path.read_text())}


def by_name(pack: RemotePack) -> dict[str, str]:
    return {f.name: f.md5 for f in pack.files}


def object_path(file: RemoteFile) -> str:
    return f"files/md5/{file.md5[:2]}/{file.md5[2:]}"


def cache_objects(project: Path) -> list[Path]:
    return [p for p in (project / ".dvc" / "cache").rglob("*") if p.is_file()]


def test_resolve_lists_exactly_the_pack_files_with_the_md5s_dvc_recorded(project):
    for rev in ("v1", "v2"):
        pack = RemotePack.resolve(project.root / PACK, rev=rev)
        built = {name: md5(data) for name, data in project.packs[rev].items()}
        assert by_name(pack) == built == pushed_listing(project, rev)
        assert len(pack.files) > 3 and "catalog.lmdb" in built
        assert pack.is_folder and pack.remote_name == "local" and pack.md5.endswith(".dir")
        assert pack.size == sum(len(data) for data in project.packs[rev].values())
    assert by_name(RemotePack.resolve(project.root / PACK)) == by_name(pack)  # workspace = v2


def test_shared_shards_keep_their_md5_so_v2_after_v1_needs_only_what_v2_added(project):
    v1 = by_name(RemotePack.resolve(project.root / PACK, rev="v1"))
    v2 = by_name(RemotePack.resolve(project.root / PACK, rev="v2"))
    shared = [n for n in v1.keys() & v2.keys() if n.startswith("shard-")]
    assert shared and all(v1[n] == v2[n] for n in shared)
    added = set(v2.values()) - set(v1.values())
    assert added and len(added) < len(v2)  # the catalog and the new shards
    assert set(v1) - set(v2) == set()  # persist: every v1 shard carried over, none rewritten


def test_every_file_fetched_from_the_local_remote_is_byte_identical(project, tmp_path):
    pack = RemotePack.resolve(project.root / PACK, rev="v1")
    for file in pack.files:
        pack.fetch(file, tmp_path / "v1" / file.name)
    assert files_of(tmp_path / "v1") == project.packs["v1"]
    assert pack.url(pack.files[0]) == str(project.remote / object_path(pack.files[0]))


def test_a_one_file_pack_is_its_own_one_file(project, tmp_path):
    pack = RemotePack.resolve(project.root / ONE, rev="v1")
    assert not pack.is_folder
    assert pack.files == [RemoteFile("one.lmdb", md5(project.one), len(project.one))]
    pack.fetch(pack.files[0], tmp_path / "one.lmdb")
    assert (tmp_path / "one.lmdb").read_bytes() == project.one


def test_the_workspace_version_is_dvc_lock_s_not_the_files_on_disk(project, clone, monkeypatch):
    (clone / "data/packed").mkdir(parents=True, exist_ok=True)  # its .gitignore is there
    (clone / PACK).write_bytes(b"half built")  # what is on disk does not count
    monkeypatch.chdir(clone / "data")
    pack = RemotePack.resolve("packed/images.lmdb")  # relative to the working directory
    assert by_name(pack) == pushed_listing(project, "v2") and pack.rev is None


def test_one_shard_from_the_local_remote_downloads_nothing_else(project, clone, tmp_path):
    pack = RemotePack.resolve(clone / PACK, rev="v1")
    shard = next(f for f in pack.files if f.name.startswith("shard-"))
    pack.fetch(shard, tmp_path / "got" / shard.name)
    assert (tmp_path / "got" / shard.name).read_bytes() == project.packs["v1"][shard.name]
    assert cache_objects(clone) == []  # the .dir was read from the remote, not stored
    assert not (clone / PACK).exists()
    assert [p.name for p in (tmp_path / "got").iterdir()] == [shard.name]


def test_one_shard_over_http_requests_the_listing_and_that_shard_only(project, clone, tmp_path):
    mark = len(project.http.requests())
    pack = RemotePack.resolve(clone / PACK, rev="v2", remote="http")
    assert pack.remote_name == "http" and by_name(pack) == pushed_listing(project, "v2")
    shard = next(f for f in pack.files if f.name.startswith("shard-"))
    pack.fetch(shard, tmp_path / shard.name)
    assert (tmp_path / shard.name).read_bytes() == project.packs["v2"][shard.name]
    assert pack.url(shard) == f"{project.http.url}/{object_path(shard)}"
    listing = f"/files/md5/{pack.md5[:2]}/{pack.md5[2:]}"
    requests = project.http.requests_since(mark)
    assert {path for _, path in requests} == {listing, f"/{object_path(shard)}"}
    assert [r for r in requests if r[0] == "GET"] == [
        ("GET", listing),
        ("GET", f"/{object_path(shard)}"),
    ]
    assert cache_objects(clone) == []


@pytest.mark.skipif(not S3, reason="DVC's S3 remotes need its plugin: pip install dvc-s3")
def test_s3_through_moto_lists_and_fetches_one_shard_alone(project, clone, tmp_path):
    mark = len(project.s3.requests())
    pack = RemotePack.resolve(clone / PACK, rev="v1", remote="s3")
    assert pack.remote_name == "s3" and by_name(pack) == pushed_listing(project, "v1")
    shard = next(f for f in pack.files if f.name.startswith("shard-"))
    pack.fetch(shard, tmp_path / shard.name)
    assert (tmp_path / shard.name).read_bytes() == project.packs["v1"][shard.name]
    assert pack.url(shard) == f"s3://store/dvc/{object_path(shard)}"
    listing = f"/store/dvc/files/md5/{pack.md5[:2]}/{pack.md5[2:]}"
    requests = [(method, path.split("?")[0]) for method, path in project.s3.requests_since(mark)]
    assert {path for _, path in requests} == {listing, f"/store/dvc/{object_path(shard)}"}
    assert {path for method, path in requests if method == "GET"} == {
        listing,
        f"/store/dvc/{object_path(shard)}",
    }
    assert cache_objects(clone) == []


def test_a_pickled_pack_fetches_in_a_spawned_worker(project, clone, tmp_path):
    pack = RemotePack.resolve(clone / PACK, rev="v2", remote="http")
    pack.fetch(pack.files[0], tmp_path / "here")  # a live filesystem does not travel
    shard = pack.files[-1]
    assert pickle.loads(pickle.dumps(pack)).files == pack.files
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as workers:
        workers.submit(pack.fetch, shard, tmp_path / shard.name).result(timeout=60)
    assert (tmp_path / shard.name).read_bytes() == project.packs["v2"][shard.name]


# -- errors: one line each, saying what to do ---------------------------------------------------------
def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_a_path_outside_any_dvc_repository(tmp_path):
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(tmp_path / "images.lmdb")
    assert "not inside a DVC repository" in one_line(caught)


def test_an_unknown_revision(project):
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(project.root / PACK, rev="no-such-rev")
    assert "unknown revision 'no-such-rev'" in one_line(caught)


def test_a_plain_git_file_is_not_a_dvc_tracked_pack(project):
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(project.root / "notes.txt", rev="v1")
    assert "notes.txt in revision 'v1' is a plain git file, not a DVC-tracked pack" in one_line(
        caught
    )
    assert "dvc add notes.txt" in str(caught.value)
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(project.root / "data/nothing.lmdb", rev="v1")
    assert "revision 'v1' has no data/nothing.lmdb" in one_line(caught)
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(project.root / PACK / "catalog.lmdb", rev="v2")
    assert f"is a file inside the DVC output {PACK}; give the pack's own path" in one_line(caught)


def test_no_remote_no_default_and_an_unknown_remote_name(project, clone):
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(clone / PACK, remote="elsewhere")
    message = one_line(caught)
    configured = "http, local, s3" if S3 else "http, local"
    assert "no DVC remote named 'elsewhere'" in message and f"(configured: {configured})" in message
    assert "dvc remote add" in message
    config = (clone / ".dvc/config").read_text()
    (clone / ".dvc/config").write_text(config.replace("remote = local", ""))
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(clone / PACK)
    assert "no default DVC remote" in one_line(caught) and configured in str(caught.value)
    (clone / ".dvc/config").write_text("[core]\n    analytics = false\n")
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(clone / PACK)
    assert "no DVC remote is configured" in one_line(caught)
    assert "dvc remote add -d NAME URL" in str(caught.value)


def test_objects_missing_or_damaged_on_the_remote(project, clone, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(project.remote, partial)
    # a remote added after v1, in config.local, by a path relative to .dvc/ (as `dvc remote add` writes it)
    (clone / ".dvc/config.local").write_text("['remote \"partial\"']\n    url = ../../partial\n")
    pack = RemotePack.resolve(clone / PACK, rev="v1", remote="partial")
    assert by_name(pack) == pushed_listing(project, "v1")
    shard, other = [f for f in pack.files if f.name.startswith("shard-")][:2]
    (partial / object_path(shard)).unlink()
    with pytest.raises(InputError) as caught:
        pack.fetch(shard, tmp_path / "got" / shard.name)
    message = one_line(caught)
    assert f"{shard.name} of {PACK}@v1 (md5 {shard.md5}) is missing on remote 'partial'" in message
    assert "run `dvc push -r partial` on a machine that has it" in message
    assert list((tmp_path / "got").iterdir()) == []  # nothing half written
    (partial / object_path(other)).chmod(0o644)
    (partial / object_path(other)).write_bytes(b"not the shard")
    with pytest.raises(PackCorruptError) as caught:
        pack.fetch(other, tmp_path / "got" / other.name)
    assert "is damaged" in one_line(caught) and not (tmp_path / "got" / other.name).exists()
    (partial / "files/md5" / pack.md5[:2] / pack.md5[2:]).unlink()
    with pytest.raises(InputError) as caught:
        RemotePack.resolve(clone / PACK, rev="v1", remote="partial")
    message = one_line(caught)
    assert "is in neither the DVC cache nor remote 'partial'" in message and "dvc push" in message
