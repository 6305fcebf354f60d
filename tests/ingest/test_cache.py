"""Ingest remembers each file by its stat and reads only what changed; validate remembers checked shards."""

import os
import time

from imgpack.ingest.manifest import read_manifest
from imgpack.ingest.run import ingest
from tests.conftest import png_bytes, write_tree


def hashes(manifest):
    return {row["key"]: row["hash"] for row in read_manifest(manifest)[1]}


def test_a_rerun_reads_only_files_whose_stat_changed_even_with_size_and_mtime_kept(tmp_path):
    raw = write_tree(
        tmp_path / "raw",
        {
            f"{label}/{n}.png": png_bytes(8 + n, 6, shade=10 * n + label)
            for label in (1, 2)
            for n in range(5)
        },
    )
    time.sleep(2.1)  # older than the racy window: remembered after the first run
    manifest = tmp_path / "m.jsonl"
    assert ingest(raw, manifest).read == 10
    first = hashes(manifest)
    assert ingest(raw, manifest).read == 0 and hashes(manifest) == first

    # Rewritten in place with the same size, its mtime put back: ctime tells.
    rewritten = raw / "1/2.png"
    st = rewritten.stat()
    other = png_bytes(10, 6, shade=200)
    assert len(other) == st.st_size
    rewritten.write_bytes(other)
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = ingest(raw, manifest)
    assert report.read == 1 and hashes(manifest)["1/2.png"] != first["1/2.png"]

    # Replaced by another file of the same size and mtime: the inode tells.
    replaced = raw / "2/3.png"
    st = replaced.stat()
    swap = tmp_path / "swap.png"
    swap.write_bytes(png_bytes(11, 6, shade=201))
    assert swap.stat().st_size == st.st_size
    os.utime(swap, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swap, replaced)
    assert ingest(raw, manifest).read == 2  # 1/2.png is still too recent to be trusted
    assert hashes(manifest)["2/3.png"] != first["2/3.png"]

    # Touched without a change: read again, and the manifest stays as it was.
    before = manifest.read_bytes()
    os.utime(raw / "1/0.png")
    assert ingest(raw, manifest).read == 3 and manifest.read_bytes() == before


def test_without_the_cache_every_file_is_read(digits_tree, tmp_path):
    ingest(digits_tree, tmp_path / "m.jsonl")
    assert ingest(digits_tree, tmp_path / "m.jsonl", cache=False).read == 13
