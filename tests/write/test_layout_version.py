"""The bytes a pack of given inputs and params gets are pinned to the versions this imgpack writes:
a change to the writer's rules fails here until LAYOUT_VERSION is bumped (and the pin renewed), so
a project's recorded format (`imgpack init`) makes DVC build its pack again."""

import hashlib
import json

import imgpack
from imgpack.params import PackParams, flow, written_format
from imgpack.write.build import build
from tests.conftest import write_tree

# The pack of `_folder()` built fresh with shard_mb 0.002: its shard names (their digests), and
# digests of its catalog's values and of its header without the imgpack version that wrote it.
PINNED = {
    "{layout: 1, pack: 3, shard: 2}": {
        "shards": ["shard-b40c336f5214aa43.lmdb", "shard-8784293de7deb1f2.lmdb"],
        "catalog": "690aafe7bae9bd7cbc73c5694521f1a232904d1f78a5d44b08a42afdd6ebed57",
        "header": "1f6bd20cc85c3affd868573be96ea36014eb9cf1db69bdaa0cd5263a9ec5bba0",
    },
}


def _folder(root):
    """40 PGM images (raw bytes, no encoder whose output could change) in 4 label folders."""
    files = {}
    for n in range(40):
        width, height = 8 + n % 7, 6 + n % 5
        pixels = bytes((n * 31 + i * 7) % 256 for i in range(width * height))
        files[f"c{n % 4}/{n:03d}.pgm"] = f"P5 {width} {height} 255\n".encode() + pixels
    return write_tree(root, files)


def _fingerprint(out) -> dict:
    with imgpack.open(out) as pack:
        header = dict(pack.header)
        rows = pack.catalog.table([*pack.catalog.columns, "shard", "slot"]).to_pylist()
    header.pop("imgpack_version")
    # The catalog as values, not its Parquet bytes (those name the pyarrow that wrote them).
    header.pop("catalog_parts", None)
    return {
        "shards": [entry["name"] for entry in header["shards"]],
        "catalog": _digest(rows),
        "header": _digest(header),
    }


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def test_the_same_inputs_give_the_pinned_bytes_for_the_format_this_imgpack_records(tmp_path):
    out = tmp_path / "p.lmdb"
    build(_folder(tmp_path / "raw"), out, pack_params=PackParams(shard_mb=0.002, incremental=False))
    assert len(_fingerprint(out)["shards"]) > 1
    assert {flow(written_format()): _fingerprint(out)} == PINNED, (
        "the writer now gives other bytes: bump LAYOUT_VERSION in imgpack/format/codec.py and pin "
        "the new fingerprint here"
    )
