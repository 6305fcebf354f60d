"""`imgpack compact` turns a pack grown version by version into exactly what a fresh build gives."""

import json

from tests.conftest import imgpack_cli as imgpack
from tests.conftest import pack_state


def files(pack):
    return {name: data for name, (data, _) in pack_state(pack).items()}


def test_a_grown_pack_compacts_to_the_bytes_of_a_fresh_build(sample_raw, tmp_path):
    images, labels = sample_raw / "images", sample_raw / "labels.csv"
    part = tmp_path / "part"
    for path in sorted(images.rglob("*.png"))[1::3]:  # version 1: a third of the images
        target = part / path.relative_to(images)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    grown, fresh = tmp_path / "grown.lmdb", tmp_path / "fresh.lmdb"
    options = ("--labels", labels, "--shard-mb", "0.0003", "--on-error", "missing_image=skip")
    imgpack("build", part, grown, *options)
    second = imgpack("build", images, grown, *options).stdout
    assert "carried over" in second and " 0 carried over" not in second
    imgpack("build", images, fresh, *options, "--fresh")
    assert files(grown) != files(fresh)
    info = json.loads(imgpack("info", grown, "--json").stdout)
    assert info["unreferenced_images"] == 0

    out = tmp_path / "compacted.lmdb"
    imgpack("compact", grown, out)
    assert files(out) == files(fresh)
    imgpack("compact", grown)  # in place: a new version at the same path
    assert files(grown) == files(fresh)


def test_the_same_inputs_over_the_same_previous_version_give_the_same_bytes(sample_raw, tmp_path):
    images = sample_raw / "images"
    part = tmp_path / "part"
    for path in sorted(images.rglob("*.png"))[1::3]:
        target = part / path.relative_to(images)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    first = tmp_path / "a" / "p.lmdb"
    imgpack("build", part, first, "--shard-mb", "0.0003")
    second = tmp_path / "b" / "p.lmdb"
    second.parent.mkdir()
    imgpack("compact", first, second, "--shard-mb", "0.0003")  # an equal previous version
    assert files(first) == files(second)
    for out, workers in ((first, 1), (second, 2)):
        imgpack("build", images, out, "--shard-mb", "0.0003", "--workers", workers)
    assert files(first) == files(second) and len(files(first)) > 3
