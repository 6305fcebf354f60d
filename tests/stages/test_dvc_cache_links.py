"""With DVC's hardlink or symlink cache the pack *is* the cache object: reading must never change it."""

import hashlib
import os
import re

import pytest

import imgpack
from imgpack.check.verify import verify_pack
from imgpack.read.export import export_pack
from tests.conftest import dvc, run
from tests.stages.test_dvc_pipeline import set_param

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"


def cache_objects(project):
    """{object path: (md5 of its content, mtime)} for every object in the DVC cache."""
    root = project / ".dvc" / "cache" / "files" / "md5"
    objects = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            objects[path.relative_to(root).as_posix()] = (
                hashlib.md5(path.read_bytes()).hexdigest(),
                os.stat(path).st_mtime_ns,
            )
    return objects


@pytest.mark.parametrize("shard_mb", [64, 0.003])
@pytest.mark.parametrize("link", ["hardlink", "symlink"])
def test_repro_read_verify_export_leave_every_cache_object_unchanged(
    dvc_project, tmp_path, link, shard_mb
):
    dvc("config", "cache.type", link, cwd=dvc_project)
    set_param(dvc_project, "pack", "shard_mb", shard_mb)
    dvc("repro", cwd=dvc_project)
    pack = dvc_project / PACK
    files = [pack] if shard_mb > 1 else list(pack.iterdir())
    assert len(files) > 3 or shard_mb > 1
    for file in files:
        assert file.is_symlink() if link == "symlink" else os.stat(file).st_nlink > 1
    before = cache_objects(dvc_project)
    files_only = {n: v for n, v in before.items() if not n.endswith(".dir")}  # listings: own hash
    assert files_only and all(md5 == name.replace("/", "") for name, (md5, _) in files_only.items())

    with imgpack.open(pack) as opened:
        records = list(opened)
        opened.metadata()
    dataset = imgpack.ImageDataset(pack, decode="numpy")
    assert len([dataset[i] for i in range(len(dataset))]) == len(records)
    verify_pack(pack)
    export_pack(pack, tmp_path / "exported")
    run(["imgpack", "info", str(pack)], dvc_project)
    run(["imgpack", "verify", str(pack)], dvc_project)

    assert cache_objects(dvc_project) == before
    assert not any(p.name.endswith("-lock") for p in pack.parent.rglob("*"))
    # Only ingest, which always runs (it stats the raw folder), is reported: the pack is unchanged.
    assert dvc("status", cwd=dvc_project).stdout == "ingest:\n\talways changed\n"
    assert re.findall(r"Running stage '(\w+)'", dvc("repro", cwd=dvc_project).stdout) == ["ingest"]
