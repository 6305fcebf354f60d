"""Pack stores original bytes and metadata in key order, deterministically, and publishes atomically."""

import hashlib
import os

import pytest

import imgpack
from imgpack.errors import InputError
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.write.pack import pack
from tests.conftest import png_bytes, source_files, write_tree


def ingest_and_pack(raw, tmp_path, params=None, name="p.lmdb"):
    manifest = tmp_path / f"{name}.jsonl"
    ingest(raw, manifest)
    header = pack(manifest, raw, tmp_path / name, params)
    return tmp_path / name, header


def test_pack_stores_every_original_byte_and_its_metadata(digits_tree, tmp_path):
    out, header = ingest_and_pack(digits_tree, tmp_path)
    with imgpack.open(out) as p:
        assert {r.key: r.data for r in p} == source_files(digits_tree)
        record = p.get("2/extra.jpg")
        assert record.meta["hash"] == hashlib.sha256(record.data).hexdigest()
        assert (record.label, record.meta["format"]) == ("2", "JPEG")
        assert record.meta["split"] in {"train", "val", "test"}
    assert header["count"] == 13 and header["classes"] == ["0", "1", "2"]
    assert os.listdir(tmp_path).count("p.lmdb") == 1 and not any(
        n.endswith("-lock") for n in os.listdir(tmp_path)
    )


def test_pack_is_byte_identical_whatever_the_listing_order(tmp_path):
    files = {
        f"{d}/{n:02d}.png": png_bytes(5, 5, shade=d * 30 + n) for d in range(4) for n in range(25)
    }
    forward = write_tree(tmp_path / "forward", files)
    backward = write_tree(tmp_path / "backward", dict(reversed(list(files.items()))))
    a, _ = ingest_and_pack(forward, tmp_path, name="a.lmdb")
    b, _ = ingest_and_pack(backward, tmp_path, name="b.lmdb")
    assert a.read_bytes() == b.read_bytes()


def test_a_pack_param_change_changes_the_header_digest(digits_tree, tmp_path):
    _, one = ingest_and_pack(digits_tree, tmp_path, PackParams(split_seed=1), "a.lmdb")
    _, two = ingest_and_pack(digits_tree, tmp_path, PackParams(split_seed=2), "b.lmdb")
    assert one["params_digest"] != two["params_digest"]
    assert one["manifest_digest"] == two["manifest_digest"]


def test_the_thread_count_does_not_change_the_bytes(digits_tree, tmp_path):
    one, _ = ingest_and_pack(digits_tree, tmp_path, PackParams(workers=1), "a.lmdb")
    two, _ = ingest_and_pack(digits_tree, tmp_path, PackParams(workers=3), "b.lmdb")
    assert one.read_bytes() == two.read_bytes()


def test_dedupe_stores_identical_bytes_once_and_resolves_the_alias(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {"0/a.png": png_bytes(shade=5), "0/b.png": png_bytes(shade=5)}
    )
    out, header = ingest_and_pack(raw, tmp_path, PackParams(duplicates="dedupe"))
    with imgpack.open(out) as p:
        assert (len(p), header["aliases"]) == (1, 1)
        assert p.get("0/b.png").data == (raw / "0/b.png").read_bytes()
        assert p.get("0/b.png").label == "0"
        assert dict(p.aliases()) == {"0/b.png": "0/a.png"}


@pytest.mark.parametrize("differ", ["label", "metadata"])
def test_dedupe_refuses_identical_images_with_other_labels_or_metadata_naming_both(
    tmp_path, differ
):
    same = png_bytes(shade=5)
    raw = write_tree(tmp_path / "raw", {"a.png": same, "b.png": same, "c.png": png_bytes(shade=9)})
    labels = {"label": ("cat", "dog"), "metadata": ("cat", "cat")}[differ]
    table = tmp_path / "labels.csv"
    table.write_text(
        f"path,label,bbox\na.png,{labels[0]},1 2 3 4\nb.png,{labels[1]},5 6 7 8\nc.png,cat,0 0 1 1\n"
    )
    manifest = tmp_path / "m.jsonl"
    ingest(raw, manifest, labels=table)
    out = tmp_path / "p.lmdb"
    with pytest.raises(InputError) as refused:
        pack(manifest, raw, out, PackParams(duplicates="dedupe"))
    message = str(refused.value)
    assert "b.png" in message and "a.png" in message and differ in message
    assert "pack.duplicates: keep" in message and "\n" not in message
    assert not out.exists()  # nothing published
    # the remedy, followed: every copy kept, each with its own label and metadata
    pack(manifest, raw, out, PackParams(duplicates="keep"))
    with imgpack.open(out) as p:
        assert p.get("b.png").label == labels[1]
        assert p.get("b.png").meta["extra"]["bbox"] == "5 6 7 8"


def test_dedupe_refuses_one_image_in_two_split_folders_and_keeps_it_when_told(tmp_path):
    same = png_bytes(shade=5)
    raw = write_tree(
        tmp_path / "raw",
        {"train/cat/a.png": same, "test/cat/b.png": same, "val/cat/c.png": png_bytes(shade=9)},
    )
    manifest = tmp_path / "m.jsonl"
    ingest(raw, manifest, split_folders=True)
    out = tmp_path / "p.lmdb"
    with pytest.raises(InputError) as refused:
        pack(manifest, raw, out, PackParams(duplicates="dedupe", splits="folders"))
    message = str(refused.value)
    assert "train/cat/a.png" in message and "test/cat/b.png" in message and "split" in message
    assert not out.exists()
    pack(manifest, raw, out, PackParams(duplicates="keep", splits="folders"))
    with imgpack.open(out) as p:
        assert [p.get(k).meta["split"] for k in ("train/cat/a.png", "test/cat/b.png")] == [
            "train",
            "test",
        ]


def test_dedupe_in_one_split_folder_stores_the_image_once(tmp_path):
    same = png_bytes(shade=5)
    raw = write_tree(tmp_path / "raw", {"train/cat/a.png": same, "train/cat/b.png": same})
    manifest = tmp_path / "m.jsonl"
    ingest(raw, manifest, split_folders=True)
    header = pack(
        manifest, raw, tmp_path / "p.lmdb", PackParams(duplicates="dedupe", splits="folders")
    )
    assert header["aliases"] == 1


def test_keep_stores_both_copies_of_identical_bytes(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {"0/a.png": png_bytes(shade=5), "1/b.png": png_bytes(shade=5)}
    )
    out, header = ingest_and_pack(raw, tmp_path)
    assert header["count"] == 2 and header["aliases"] == 0


def test_a_file_changed_after_ingest_stops_pack_and_keeps_the_old_pack(digits_tree, tmp_path):
    out, _ = ingest_and_pack(digits_tree, tmp_path)
    before = out.read_bytes()
    (digits_tree / "0/1.png").write_bytes(png_bytes(30, 30))
    with pytest.raises(InputError, match="changed since ingest"):
        pack(tmp_path / "p.lmdb.jsonl", digits_tree, out)
    assert out.read_bytes() == before
    # Only whole shards may stay behind, hidden, for the next run to reuse.
    assert sorted(os.listdir(tmp_path)) in (
        ["digits", "p.lmdb", "p.lmdb.jsonl"],
        [".p.lmdb.resume", "digits", "p.lmdb", "p.lmdb.jsonl"],
    )
    for name in (
        os.listdir(tmp_path / ".p.lmdb.resume") if (tmp_path / ".p.lmdb.resume").exists() else []
    ):
        assert name.endswith(".lmdb") and not name.startswith(".")


def test_splits_follow_the_fractions(tmp_path):
    files = {f"x/{n:03d}.png": png_bytes(4, 4, shade=n) for n in range(200)}
    out, _ = ingest_and_pack(write_tree(tmp_path / "raw", files), tmp_path)
    with imgpack.open(out) as p:
        counts = p.metadata(columns=["split"])["split"].value_counts()
    assert 130 <= counts["train"] <= 190 and counts["val"] > 5 and counts["test"] > 5


def test_renamed_and_copied_files_are_matched_by_digest_and_no_shard_is_written(tmp_path):
    files = {
        f"{d}/{n:02d}.png": png_bytes(6, 6, shade=d * 40 + n) for d in range(3) for n in range(40)
    }
    raw = write_tree(tmp_path / "raw", files)
    params = PackParams(shard_mb=0.002)
    out, first = ingest_and_pack(raw, tmp_path, params)
    assert first["new_shards"] > 3
    os.rename(raw / "1/05.png", raw / "2/renamed.png")  # same bytes, another key
    (raw / "0/03.png").unlink()  # and written again under another name: its image is reused
    (raw / "0/copy.png").write_bytes(files["0/03.png"])
    again = pack(ingest(raw, tmp_path / "m2.jsonl") and tmp_path / "m2.jsonl", raw, out, params)
    assert again["new_shards"] == 0 and again["carried_shards"] == first["new_shards"]
    with imgpack.open(out) as packed:
        assert {r.key: r.data for r in packed} == source_files(raw)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda lines: lines.insert(3, "{not json"), r":4: not valid JSON"),
        (lambda lines: lines.insert(3, '{"key": "0/00b.png"}'), r":4: row lacks manifest fields"),
        (lambda lines: lines.insert(3, lines[1]), r":4: keys are not in ascending order"),
        (
            lambda lines: lines.insert(3, lines[2].replace('"key":"', '"key":null,"x":"')),
            r":4: key is not text",
        ),
        (
            lambda lines: lines.__setitem__(3, lines[3].replace('"hash":"', '"hash":"zz')),
            r":4: key, hash or size is not what ingest writes",
        ),
    ],
)
def test_a_damaged_manifest_is_refused_naming_its_line_and_the_pack_is_kept(
    tmp_path, damage, message
):
    files = {
        f"{d}/{n:02d}.png": png_bytes(6, 6, shade=d * 40 + n) for d in range(2) for n in range(9)
    }
    raw = write_tree(tmp_path / "raw", files)
    params = PackParams(shard_mb=0.0005)
    out, _ = ingest_and_pack(raw, tmp_path, params)  # a folder pack: the next run matches it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    manifest = tmp_path / "m.jsonl"
    lines = (tmp_path / "p.lmdb.jsonl").read_text().splitlines()
    damage(lines)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        pack(manifest, raw, out, params)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
