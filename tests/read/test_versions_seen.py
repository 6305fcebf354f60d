"""Another version published at an open pack's path: open() gives it, nothing opened mixes two."""

import hashlib
import pickle
import shutil

import pytest

import imgpack
from imgpack.errors import PackChangedError
from imgpack.params import PackParams
from imgpack.write.build import build
from tests.conftest import png_bytes, write_tree

SHARDS = 0.0005  # a few images a shard: a folder pack of several shards
LAYOUTS = {"one file": 64, "shards": SHARDS}


def publish(tmp_path, version: int, shard_mb: float = SHARDS):
    """Build version 1 or 2 of a 24-image folder into tmp_path/images.lmdb (over the last one).

    Version 2 has the same keys with other bytes, and a third of them relabelled: a fresh
    build, so none of version 1's shards is carried over.
    """
    raw = tmp_path / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    files = {}
    for n in range(24):
        label = ("cat", "dog")[(n + (version == 2 and n % 3 == 0)) % 2]
        files[f"{label}/{n:02d}.png"] = png_bytes(8, 8, shade=n * 5 + version * 100)
    write_tree(raw, files)
    out = tmp_path / "images.lmdb"
    build(raw, out, pack_params=PackParams(shard_mb=shard_mb, incremental=False))
    return out, {key.split("/")[1]: (data, key.split("/")[0]) for key, data in files.items()}


def contents(pack) -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, label)} of every record, as `publish` describes a version."""
    return {r.key.split("/")[1]: (r.data, r.label) for r in pack}


def samples_of(version: dict[str, tuple[bytes, str]], classes: list[str]) -> list[tuple]:
    """(bytes, target) of every record of `version`, in key order."""
    by_key = sorted((f"{label}/{name}", data) for name, (data, label) in version.items())
    return [(data, classes.index(key.split("/")[0])) for key, data in by_key]


# -- 1. reopening returns the new version; what was opened before never mixes the two -------------
def test_open_after_a_publish_gives_the_new_version_while_the_old_pack_reads_its_own(tmp_path):
    out, v1 = publish(tmp_path, 1)
    old = imgpack.open(out)
    assert contents(old) == v1  # it has read: every shard of version 1 is mapped
    _, v2 = publish(tmp_path, 2)  # version 1's shards are deleted
    assert contents(imgpack.open(out)) == v2
    assert contents(old) == v1
    digests = [hashlib.sha256(data).hexdigest() for data in old.iter_data()]
    assert list(old.metadata().hash) == digests  # read from its own shards' maps
    dataset = imgpack.ImageDataset(out)
    assert [dataset[i] for i in range(len(dataset))] == samples_of(v2, dataset.classes)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_pack_opened_before_a_publish_reads_its_version_or_says_to_open_again(tmp_path, layout):
    out, v1 = publish(tmp_path, 1, LAYOUTS[layout])
    untouched = imgpack.open(out)  # no image read yet: nothing of version 1 is mapped
    _, v2 = publish(tmp_path, 2, LAYOUTS[layout])
    assert len(untouched) == 24 and untouched.label_of(0) == "cat"  # its catalog is held open
    if layout == "one file":  # the one file is held open too: it reads version 1 to the end
        assert contents(untouched) == v1
    else:  # version 1's shards are gone
        for read in (lambda: untouched.data(0), lambda: list(untouched)):
            with pytest.raises(PackChangedError) as caught:
                read()
            assert str(caught.value) == (
                f"{out} changed since it was opened (another version was published); open it again"
            )
    assert contents(imgpack.open(out)) == v2  # the remedy, followed


def test_a_pickled_pack_refuses_a_version_published_since(tmp_path):
    out, _ = publish(tmp_path, 1)
    payload = pickle.dumps(imgpack.open(out))
    assert pickle.loads(payload).data(0)  # the same version: reopened
    publish(tmp_path, 2)
    with pytest.raises(PackChangedError, match="changed since it was opened"):
        pickle.loads(payload)
