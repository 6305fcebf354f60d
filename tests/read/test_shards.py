"""Format 2 as a user meets it: shards read like one file, relabelling rewrites only the catalog,
cutting is deterministic, and a missing, truncated or damaged shard is named, never a signal."""

import csv
import os
import random
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import imgpack
from imgpack.params import PackParams
from imgpack.write.build import build
from tests.conftest import SHARDED, copy_pack, pack_state, png_bytes, write_tree


def test_a_sharded_pack_reads_exactly_like_the_one_file_pack_of_the_same_inputs(
    sample_file_pack, sample_sharded_pack
):
    one, many = imgpack.open(sample_file_pack), imgpack.open(sample_sharded_pack)
    assert len(many.header["shards"]) > 3 and len(one.header["shards"]) == 1
    assert len(one) == len(many) == 36
    pd.testing.assert_frame_equal(one.metadata(), many.metadata())
    assert [(r.key, r.data, r.meta) for r in one] == [(r.key, r.data, r.meta) for r in many]
    order = random.Random(3).sample(range(36), 36)
    assert one.data_many(order) == many.data_many(order)
    assert [many[k].data for k in one.keys()] == [one[k].data for k in many.keys()]
    a, b = imgpack.ImageDataset(sample_file_pack), imgpack.ImageDataset(sample_sharded_pack)
    assert [a[i] for i in order] == [b[i] for i in order]
    assert a.__getitems__(order) == b.__getitems__(order) and a.classes == b.classes
    drop = {"params_digest", "catalog_parts", "shards", "layout_params"}  # shard_mb is a param
    assert {k: v for k, v in one.header.items() if k not in drop} == {
        k: v for k, v in many.header.items() if k not in drop
    }


def test_dedupe_aliases_resolve_across_shards(tmp_path):
    files = {f"a/{n}.png": png_bytes(9, 9, shade=n) for n in range(6)}
    files["a/copy.png"] = files["a/0.png"]
    raw = write_tree(tmp_path / "raw", files)
    out = tmp_path / "p.lmdb"
    build(raw, out, pack_params=PackParams(duplicates="dedupe", shard_mb=0.0002))
    with imgpack.open(out) as pack:
        assert out.is_dir() and len(pack) == 6 and dict(pack.aliases()) == {"a/copy.png": "a/0.png"}
        assert pack["a/copy.png"].data == files["a/0.png"] and "a/copy.png" in pack


def test_metadata_filters_select_rows_without_image_bytes_and_keep_record_indices(sample_pack):
    with imgpack.open(sample_pack) as pack:
        whole = pack.metadata()
        circles = pack.metadata(filters=[("label", "==", "circle")], columns=["key", "width"])
        assert list(circles.columns) == ["key", "width"]
        pd.testing.assert_frame_equal(circles, whole[whole.label == "circle"][["key", "width"]])
        either = pack.metadata(filters=[[("format", "==", "JPEG")], [("width", ">", 30)]])
        pd.testing.assert_frame_equal(either, whole[(whole.format == "JPEG") | (whole.width > 30)])
        chunks = list(pack.metadata(filters=[("split", "==", "train")], chunksize=5))
        assert all(len(c) == 5 for c in chunks[:-1])
        pd.testing.assert_frame_equal(pd.concat(chunks), whole[whole.split == "train"])
        for index, row in circles.iterrows():
            assert pack[index].key == row["key"]


def relabel(table, rows: int, tmp_path):
    with open(table, newline="") as handle:
        records = list(csv.DictReader(handle))
    for record in records[:rows]:
        record["label"] = record["label"] + "_fixed"
    out = tmp_path / "relabelled.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return out


def test_relabelling_ten_images_rewrites_the_catalog_and_no_shard(
    sample_raw, sample_sharded_pack, tmp_path
):
    labels = relabel(sample_raw / "labels.csv", 10, tmp_path)
    out = tmp_path / "relabelled.lmdb"
    build(sample_raw / "images", out, labels=labels, pack_params=SHARDED)
    before, after = pack_state(sample_sharded_pack), pack_state(out)
    shards = [name for name in before if name.startswith("shard-")]
    assert shards and sorted(shards) == sorted(n for n in after if n.startswith("shard-"))
    assert all(before[name][0] == after[name][0] for name in shards)
    assert before["catalog.lmdb"][0] != after["catalog.lmdb"][0]
    with imgpack.open(out) as pack:
        assert sum(label.endswith("_fixed") for label in pack.metadata()["label"]) == 10


def test_shard_cutting_is_deterministic_and_independent_of_the_listing_order(tmp_path):
    files = {
        f"{d}/{n:03d}.png": png_bytes(6 + n % 9, 6, shade=n * 2 + d)
        for d in range(3)
        for n in range(40)
    }
    params = PackParams(shard_mb=0.003)
    forward = write_tree(tmp_path / "forward", files)
    backward = write_tree(tmp_path / "backward", dict(reversed(list(files.items()))))
    build(forward, tmp_path / "a.lmdb", pack_params=params)
    build(backward, tmp_path / "b.lmdb", pack_params=params)
    a, b = pack_state(tmp_path / "a.lmdb"), pack_state(tmp_path / "b.lmdb")
    assert len(a) > 3 and {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
    with imgpack.open(tmp_path / "a.lmdb") as pack:
        sizes = [s["image_bytes"] for s in pack.header["shards"]]
        assert all(size <= params.shard_bytes for size in sizes)
        first_keys = pack.metadata(columns=["key", "shard"]).groupby("shard")["key"].min()
        assert list(first_keys) == sorted(first_keys)  # shards hold consecutive key ranges


def open_and_read_in_subprocess(path, command="read"):
    code = textwrap.dedent(
        f"""
        import sys, imgpack
        try:
            if {command!r} == "read":
                dataset = imgpack.ImageDataset({str(path)!r})
                for i in range(len(dataset)):
                    dataset[i]
            else:
                from imgpack.check.verify import verify_pack
                verify_pack({str(path)!r})
        except imgpack.ImgpackError as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
        print("read fine")
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def damage(pack, how):
    """Damage the shard holding record 20 as `how` says; returns the shard's file name."""
    with imgpack.open(pack) as opened:
        table = opened.locate()
        victim = opened.shard_paths[table.shard_of[20]]
        start, end = table.starts[20], table.ends[20]
    raw = bytearray(victim.read_bytes())
    victim.unlink()  # a new file: the copy's other links (none here) stay intact
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "one page":
        raw = raw[:4096]
    elif how == "page damaged":  # the leaf page holding the image names another page
        page = start // 4096
        raw[page * 4096 : page * 4096 + 8] = (page + 1).to_bytes(8, "little")
    elif how == "flipped image byte":
        raw[(start + end) // 2] ^= 0xFF
    if how != "missing":
        victim.write_bytes(bytes(raw))
    return victim.name


@pytest.mark.parametrize(
    "how, command, words",
    [
        ("missing", "read", "is missing"),
        ("truncated", "read", "is .* bytes but the catalog says"),
        ("one page", "read", "is .* bytes but the catalog says"),
        ("page damaged", "read", "is damaged: page"),
        ("flipped image byte", "verify", "shard file digest mismatch"),
    ],
)
def test_a_missing_truncated_or_damaged_shard_is_a_clear_error_naming_it(
    sample_sharded_pack, tmp_path, how, command, words
):
    pack = copy_pack(sample_sharded_pack, tmp_path / "copy.lmdb")
    name = damage(pack, how)
    result = open_and_read_in_subprocess(pack, command)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert name in result.stdout and re.search(words, result.stdout), result.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", "verify", str(pack)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1
    assert name in cli.stderr and "Traceback" not in cli.stderr


def test_a_flipped_image_byte_in_a_shard_is_named_by_key_in_verify(sample_sharded_pack, tmp_path):
    from tests.conftest import flip_byte_of

    pack = copy_pack(sample_sharded_pack, tmp_path / "copy.lmdb")
    with imgpack.open(pack) as opened:
        key = opened.key_of(20)
    flip_byte_of(pack, key)
    from imgpack.check.verify import verify_pack

    result = verify_pack(pack, raise_on_error=False)
    assert result.bad_keys == [key] and len(result.bad_shards) == 1


def test_the_catalog_loads_without_touching_any_shard_unless_digests_are_asked_for(
    sample_sharded_pack, tmp_path
):
    pack = copy_pack(sample_sharded_pack, tmp_path / "copy.lmdb")
    for shard in pack.iterdir():
        if shard.name.startswith("shard-"):  # garbage of the same size: never opened for metadata
            shard.write_bytes(os.urandom(shard.stat().st_size))
    with imgpack.open(pack) as opened:
        frame = opened.metadata(columns=["key", "label", "size"])
        assert len(frame) == 36 and list(frame["key"]) == list(opened.keys())
        # Digests live in the shards' props (format 3): asking for them reads the shards.
        with pytest.raises(imgpack.PackFormatError, match="shard-"):
            opened.metadata(columns=["key", "hash"])
        with pytest.raises(imgpack.PackFormatError, match="shard-"):
            opened.data(0)
