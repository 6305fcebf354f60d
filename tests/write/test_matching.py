"""Records matched to the previous version's images: by key and digest in one merge, left-overs by digest alone."""

import json
import random
import sqlite3

import pyarrow as pa
import pytest

from imgpack.errors import InputError
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.read.pack import Pack
from imgpack.write.match_columns import hex_to_raw, match_records
from imgpack.write.matching import match_rows
from imgpack.write.pack import pack
from tests.conftest import png_bytes, write_pack, write_tree


def previous_version(tmp_path, files):
    raw = write_tree(tmp_path / "raw", files)
    ingest(raw, tmp_path / "m1.jsonl")
    out = tmp_path / "p.lmdb"
    pack(tmp_path / "m1.jsonl", raw, out, PackParams(shard_mb=0.0004))
    with Pack(out) as opened:
        table = opened.catalog.table(["key", "shard", "slot"]).to_pydict()
    places = {
        k: (s, n) for k, s, n in zip(table["key"], table["shard"], table["slot"], strict=True)
    }
    return raw, out, places


def matched(tmp_path, out, manifest, dedupe=False):
    (tmp_path / "scratch").mkdir(exist_ok=True)
    with Pack(out) as opened:
        return match_records(
            opened, manifest, dedupe, sqlite3.connect(":memory:"), tmp_path / "scratch"
        )


def test_unchanged_records_keep_their_images_and_renamed_ones_find_theirs_by_digest(tmp_path):
    files = {
        f"{d}/{n:02d}.png": png_bytes(8, 8, shade=d * 50 + n) for d in range(3) for n in range(12)
    }
    raw, out, places = previous_version(tmp_path, files)
    (raw / "0/03.png").rename(raw / "0/renamed.png")  # same bytes, new key
    (raw / "1/05.png").write_bytes(png_bytes(9, 9, shade=250))  # same key, new bytes
    (raw / "2/new.png").write_bytes(png_bytes(7, 7, shade=251))  # new key, new bytes
    (raw / "2/07.png").unlink()
    ingest(raw, tmp_path / "m2.jsonl")
    keys = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))

    match = matched(tmp_path, out, tmp_path / "m2.jsonl")
    claims = {keys[ordinal]: (shard, slot) for ordinal, shard, slot in match.claims()}
    unchanged = set(files) - {"0/03.png", "1/05.png", "2/07.png"}
    assert claims == {**{k: places[k] for k in unchanged}, "0/renamed.png": places["0/03.png"]}
    assert [o for o, _, _ in match.claims()] == sorted(o for o, _, _ in match.claims())
    assert match.stored == len(keys) and sum(match.live.values()) == len(claims)
    new_bytes = (raw / "1/05.png").stat().st_size + (raw / "2/new.png").stat().st_size
    assert match.to_write(dict.fromkeys(match.live)) == (new_bytes, 2)  # every shard kept


def test_copies_of_one_image_take_the_unclaimed_images_of_that_digest_in_key_order(tmp_path):
    same = png_bytes(8, 8, shade=3)
    files = {"a/1.png": same, "a/2.png": same, "b/1.png": png_bytes(8, 8, shade=4)}
    raw, out, places = previous_version(tmp_path, files)
    for key in ("a/1.png", "a/2.png"):
        (raw / key).unlink()
    for key in ("c/1.png", "c/2.png", "c/3.png"):  # three copies where there were two
        (raw / key).parent.mkdir(exist_ok=True)
        (raw / key).write_bytes(same)
    ingest(raw, tmp_path / "m2.jsonl")
    match = matched(tmp_path, out, tmp_path / "m2.jsonl")
    keys = ["b/1.png", "c/1.png", "c/2.png", "c/3.png"]
    claims = {keys[o]: (shard, slot) for o, shard, slot in match.claims()}
    old = sorted([places["a/1.png"], places["a/2.png"]])
    assert claims == {"b/1.png": places["b/1.png"], "c/1.png": old[0], "c/2.png": old[1]}


def test_a_previous_version_with_a_key_twice_is_no_source(tmp_path):
    write_pack(tmp_path / "p.lmdb", ["x/a.png", "x/a.png", "x/b.png"], shard_mb=0.001)
    raw = write_tree(
        tmp_path / "raw", {"x/a.png": png_bytes(shade=1), "x/b.png": png_bytes(shade=2)}
    )
    ingest(raw, tmp_path / "m.jsonl")
    assert matched(tmp_path, tmp_path / "p.lmdb", tmp_path / "m.jsonl") is None


def row_wise(tmp_path, out, manifest, dedupe):
    """The row-by-row merge the columnar match replaces, kept for damaged manifests."""
    scratch = tmp_path / "rows"
    scratch.mkdir(exist_ok=True)
    with Pack(out) as opened:
        return match_rows(opened, manifest, dedupe, sqlite3.connect(":memory:"), scratch)


@pytest.mark.parametrize("dedupe", [False, True], ids=["keep", "dedupe"])
def test_the_columnar_match_claims_what_the_row_by_row_merge_claims(tmp_path, dedupe):
    rng = random.Random(5)
    files = {
        f"{d}/{n:03d}.png": png_bytes(6 + n % 5, 6, shade=d * 60 + n % 40)  # some copies
        for d in range(3)
        for n in range(60)
    }
    raw, out, _ = previous_version(tmp_path, files)
    for key in rng.sample(sorted(files), 40):
        path = raw / key
        choice = rng.random()
        if choice < 0.3:
            path.unlink()
        elif choice < 0.6:
            path.rename(path.with_name("r" + path.name))
        else:
            path.write_bytes(png_bytes(9, 9, shade=rng.randrange(256)))
    write_tree(raw, {f"3/{n}.png": png_bytes(6, 7, shade=n) for n in range(10)})
    ingest(raw, tmp_path / "m2.jsonl")

    columns = matched(tmp_path, out, tmp_path / "m2.jsonl", dedupe)
    rows = row_wise(tmp_path, out, tmp_path / "m2.jsonl", dedupe)

    assert list(columns.claims()) == list(rows.claims()) and len(list(rows.claims())) > 100
    assert (columns.live, columns.claimed_bytes) == (rows.live, rows.claimed_bytes)
    assert (columns.stored, columns.stored_bytes) == (rows.stored, rows.stored_bytes)


def test_hex_digests_become_raw_bytes_and_other_text_is_refused():
    digests = [bytes(range(n, n + 32)) for n in (0, 100, 200)]
    column = pa.array([d.hex() for d in digests]).slice(1)
    assert [bytes(row) for row in hex_to_raw(column)] == digests[1:]
    assert [bytes(row) for row in hex_to_raw(pa.array([digests[0].hex().upper()]))] == digests[:1]
    for bad in (["zz" * 32], ["ab" * 32, "ab" * 31], ["ab" * 32, None]):
        with pytest.raises(ValueError):
            hex_to_raw(pa.array(bad, pa.string()))


def test_a_manifest_with_keys_out_of_order_is_refused_naming_its_line(tmp_path):
    files = {f"a/{n}.png": png_bytes(8, 8, shade=n) for n in range(5)}
    raw, out, _ = previous_version(tmp_path, files)
    lines = (tmp_path / "m1.jsonl").read_text().splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    (tmp_path / "swapped.jsonl").write_text("".join(lines))
    with pytest.raises(InputError, match=r"swapped.jsonl:5: keys are not in ascending order"):
        matched(tmp_path, out, tmp_path / "swapped.jsonl")


def test_a_manifest_with_a_digest_that_is_not_hex_is_refused_by_the_row_reader(tmp_path):
    files = {f"a/{n}.png": png_bytes(8, 8, shade=n) for n in range(5)}
    raw, out, _ = previous_version(tmp_path, files)
    text = (tmp_path / "m1.jsonl").read_text()
    row = text.splitlines()[2]
    digest = json.loads(row)["hash"]
    (tmp_path / "bad.jsonl").write_text(text.replace(digest, "x" + digest[1:]))
    with pytest.raises(InputError, match=r"bad.jsonl:3: key, hash or size is not what ingest"):
        matched(tmp_path, out, tmp_path / "bad.jsonl")
