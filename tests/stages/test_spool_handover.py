"""The ingest stage keeps the bytes it read for the pack stage, which packs them without reading
the raw folder again, for that very manifest only, and deletes them once packed."""

import os
import shutil

import numpy as np
import yaml

from imgpack import open as open_pack
from imgpack.ingest.cache import state_dir
from imgpack.ingest.run import ingest
from imgpack.ingest.spool import INDEX_FILE, spool_for, stage_spool
from imgpack.stages import ingest as ingest_stage
from imgpack.stages import pack as pack_stage
from imgpack.write.pack import pack
from tests.conftest import REPO, digit_pngs


def project(tmp_path):
    """A folder with params.yaml (labels from folder names) and 3 x 8 drawn digits."""
    raw = digit_pngs(tmp_path / "raw", {1: 8, 2: 8, 3: 8})
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(folder=str(raw), labels="")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return raw, tmp_path / "params.yaml"


def test_the_pack_stage_packs_the_bytes_the_ingest_stage_read_without_the_raw_folder(tmp_path):
    raw, params = project(tmp_path)
    manifest, out = tmp_path / "manifest.jsonl", tmp_path / "images.lmdb"
    originals = {p.relative_to(raw).as_posix(): p.read_bytes() for p in raw.rglob("*.png")}
    args = ["--params", str(params), "--manifest", str(manifest)]
    assert ingest_stage.main([*args, "--report", str(tmp_path / "ingest.json")]) == 0
    spool = stage_spool(manifest, state_dir())
    assert spool_for(spool, manifest) == spool
    shutil.rmtree(raw)  # the pack stage does not need it: every byte is in the spool

    assert pack_stage.main([*args, "--out", str(out)]) == 0

    with open_pack(out) as packed:
        assert {r.key: r.data for r in packed} == originals
    assert not os.path.exists(spool)


def test_a_spool_is_taken_for_its_own_manifest_only(tmp_path):
    raw, params = project(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    args = [
        "--params",
        str(params),
        "--manifest",
        str(manifest),
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert ingest_stage.main(args) == 0
    spool = stage_spool(manifest, state_dir())
    ingest(raw, manifest)  # the manifest written again, by another run
    assert spool_for(spool, manifest) is None


def test_bytes_over_the_budget_are_not_spooled_and_the_pack_is_the_same(tmp_path):
    raw = digit_pngs(tmp_path / "raw", {1: 150, 2: 150})  # two tasks of files to read
    spool = tmp_path / "spool"
    spool.mkdir()
    ingest(raw, tmp_path / "m.jsonl", spool=spool, spool_budget=1)
    index = np.fromfile(spool / INDEX_FILE, "<i8").reshape(-1, 2)
    assert len(index) == 300 and (index[:256, 0] >= 0).all() and (index[256:, 0] < 0).all()

    pack(tmp_path / "m.jsonl", raw, tmp_path / "spooled.lmdb", spool=spool)
    pack(tmp_path / "m.jsonl", raw, tmp_path / "read.lmdb")
    assert (tmp_path / "spooled.lmdb").read_bytes() == (tmp_path / "read.lmdb").read_bytes()
