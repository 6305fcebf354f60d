"""Versions cost what changed: real dvc repro and push over a growing folder, counted in files and bytes."""

import csv
import io
import json
import os
import random
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml
from PIL import Image

import imgpack
from tests.conftest import dvc, git, run, source_files

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"
SHARD_MB = 0.006  # about 18 of these images a shard: 11 shards for 200 images


def noise_png(rng: random.Random) -> bytes:
    image = Image.frombytes("L", (16, 16), bytes(rng.getrandbits(8) for _ in range(256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def shard_files(project: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (project / PACK).glob("shard-*.lmdb")}


def same_records(a: Path, b: Path) -> bool:
    """The same keys, bytes, labels, splits and metadata, whatever the layout."""
    columns = ["key", "label", "split", "format", "width", "height", "size", "hash"]
    with imgpack.open(a) as left, imgpack.open(b) as right:
        same_meta = left.metadata(columns=columns).equals(right.metadata(columns=columns))
        return same_meta and all(x.data == y.data for x, y in zip(left, right, strict=True))


@pytest.fixture
def growing(tmp_path, monkeypatch):
    """A DVC project of 200 images in 10 class folders (labels from folder names), pushed."""
    monkeypatch.delenv("IMGPACK_STATE")  # the pipeline's own place: .dvc/tmp/imgpack
    repo = Path(__file__).resolve().parents[2]
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(repo / "dvc.yaml", project)
    shutil.copytree(repo / "plots", project / "plots")
    shutil.copytree(
        repo / "src" / "imgpack", project / "src/imgpack", ignore=shutil.ignore_patterns("__py*")
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["labels"] = ""
    params["pack"]["shard_mb"] = SHARD_MB
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rng = random.Random(5)
    images = project / "data/raw/images"
    for n in range(200):
        path = images / f"c{n % 10}" / f"{n:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(noise_png(rng))
    time.sleep(2.1)  # files changed within 2 s of a run are read again next time (coarse clocks)
    git("init", "-q", cwd=project)
    dvc("init", "-q", cwd=project)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=project)
    first = dvc("repro", cwd=project)
    assert stages_run(first.stdout) == ["ingest", "pack", "validate", "summarize"]
    git("add", "-A", cwd=project)
    git("commit", "-qm", "v1", cwd=project)
    dvc("push", cwd=project)
    assert len(shard_files(project)) >= 8
    assert (project / ".dvc/tmp/imgpack").is_dir()  # ingest's cache beside DVC's own state
    return project, rng


def remote_bytes(project: Path) -> int:
    return tree_bytes(project.parent / "remote")


def test_adding_images_under_random_names_costs_one_new_shard_in_repro_and_push(growing, tmp_path):
    project, rng = growing
    before, remote_before = shard_files(project), remote_bytes(project)
    images = project / "data/raw/images"
    for n in range(15):  # spread over every class folder, names sorting anywhere
        (images / f"c{n % 10}" / f"{uuid.UUID(int=rng.getrandbits(128)).hex}.png").write_bytes(
            noise_png(rng)
        )

    ran = dvc("repro", cwd=project)
    assert stages_run(ran.stdout) == ["ingest", "pack", "validate", "summarize"]
    after = shard_files(project)
    assert {n: after[n] for n in before} == before  # every shard carried over, byte-identical
    new = sorted(set(after) - set(before))
    assert len(new) == 1
    ingest = json.loads((project / "reports/ingest.json").read_text())
    assert ingest["read"] == 15 and ingest["packed"] == 215  # only the new files were read
    validation = json.loads((project / "reports/validation.json").read_text())
    assert validation["shards_hashed"] == 1 and validation["shards_known"] == len(before)

    dvc("push", cwd=project)
    grown = remote_bytes(project) - remote_before
    catalog = (project / PACK / "catalog.lmdb").stat().st_size
    listing = 4096  # DVC's .dir object: one line per file of the pack
    assert grown <= len(after[new[0]]) + catalog + listing

    built = tmp_path / "scratch.lmdb"  # a from-scratch build of the same folder
    run(["imgpack", "build", str(images), str(built), "--shard-mb", str(SHARD_MB)], project)
    assert same_records(project / PACK, built)

    git("add", "-A", cwd=project)
    git("commit", "-qm", "v2", cwd=project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dvc("remote", "add", "-f", "-d", "local", str(tmp_path / "remote"), cwd=clone)
    dvc("pull", cwd=clone)
    with imgpack.open(clone / PACK) as pack:
        assert {r.key: r.data for r in pack} == source_files(images)


def test_nothing_changed_reruns_only_the_cheap_ingest_and_reads_no_image(growing):
    project, _ = growing
    state = {p.name: p.stat().st_mtime_ns for p in (project / PACK).iterdir()}
    outputs = [project / "data/interim/manifest.jsonl", project / "reports/ingest.json"]
    written = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs]
    out = dvc("repro", cwd=project).stdout
    assert stages_run(out) == ["ingest"]
    assert ": 0 read," in out
    assert {p.name: p.stat().st_mtime_ns for p in (project / PACK).iterdir()} == state
    # nothing changed at all: the manifest and report are left as the last full run wrote them
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs] == written


def test_relabeling_rewrites_the_catalog_and_no_shard(growing):
    project, _ = growing
    images = project / "data/raw/images"
    table = project / "data/raw/labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for n, key in enumerate(sorted(source_files(images))):
            writer.writerow([key, "relabeled" if n < 10 else key.split("/")[0]])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["labels"] = "data/raw/labels.csv"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before, remote_before = shard_files(project), remote_bytes(project)

    dvc("repro", cwd=project)
    assert shard_files(project) == before
    with imgpack.open(project / PACK) as pack:
        assert list(pack.metadata(columns=["label"])["label"]).count("relabeled") == 10
    dvc("push", cwd=project)
    catalog = (project / PACK / "catalog.lmdb").stat().st_size
    assert remote_bytes(project) - remote_before <= catalog + 4096


def test_deleting_images_drops_them_and_rewrites_only_shards_left_thin(growing, tmp_path):
    project, _ = growing
    images = project / "data/raw/images"
    with imgpack.open(project / PACK) as pack:
        table = pack.metadata(columns=["key", "shard"])
        shard_names = [s["name"] for s in pack.header["shards"]]
    thin = shard_names[int(table["shard"].iloc[0])]
    gone = list(table[table["shard"] == table["shard"].iloc[0]]["key"])  # most of one shard
    gone = gone[: len(gone) - 2]
    gone += list(table["key"].iloc[100:200:10])  # and some scattered ones
    for key in gone:
        (images / key).unlink(missing_ok=True)
    before, remote_before = shard_files(project), remote_bytes(project)

    dvc("repro", cwd=project)
    after = shard_files(project)
    with imgpack.open(project / PACK) as pack:
        assert not set(gone) & set(pack.keys()) and len(pack) == len(source_files(images))
    assert thin not in after  # under half of it was left: rewritten into a new shard
    kept = set(before) & set(after)
    assert len(kept) >= len(before) - 3 and all(after[n] == before[n] for n in kept)
    dvc("push", cwd=project)
    rewritten = sum(len(after[n]) for n in set(after) - kept)
    catalog = (project / PACK / "catalog.lmdb").stat().st_size
    assert remote_bytes(project) - remote_before <= rewritten + catalog + 4096
    built = tmp_path / "scratch.lmdb"
    run(["imgpack", "build", str(images), str(built), "--shard-mb", str(SHARD_MB)], project)
    assert same_records(project / PACK, built)


@pytest.mark.parametrize("link", ["hardlink", "symlink"])
def test_an_incremental_repro_over_linked_cache_files_leaves_every_cache_object_intact(
    growing, link
):
    project, rng = growing
    dvc("config", "cache.type", link, cwd=project)
    dvc("checkout", "--relink", cwd=project)
    (project / "data/raw/images/c3/new.png").write_bytes(noise_png(rng))
    dvc("repro", cwd=project)
    objects = [p for p in (project / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    assert len(objects) > 10
    for path in objects:
        if not path.name.endswith(".dir"):
            digest = __import__("hashlib").md5(path.read_bytes()).hexdigest()
            assert digest == path.parent.name + path.name
    assert os.path.exists(project / PACK / "catalog.lmdb")
    with imgpack.open(project / PACK) as pack:
        assert (
            pack[pack.index_of("c3/new.png")].data
            == (project / "data/raw/images/c3/new.png").read_bytes()
        )


def _flip_a_byte(shard: Path) -> None:
    """One byte of an image inside `shard` changed in place, its size and name unchanged."""
    data = bytearray(shard.read_bytes())
    where = data.find(b"IDAT")  # inside a stored PNG
    data[where + 8] ^= 0xFF
    os.chmod(shard, 0o644)
    with open(shard, "r+b") as handle:
        handle.write(data)


def test_a_damaged_shard_is_never_carried_into_the_next_version(growing, tmp_path):
    project, _ = growing
    damaged = sorted((project / PACK).glob("shard-*.lmdb"))[3]
    _flip_a_byte(damaged)

    ran = dvc("repro", cwd=project)
    assert "pack" in stages_run(ran.stdout)
    assert f"{damaged.name}" in ran.stderr and "building every shard again" in ran.stderr
    run(["imgpack", "verify", PACK], project)  # every stored image matches its digest
    validation = json.loads((project / "reports/validation.json").read_text())
    assert validation["ok"] and validation["hash_mismatch"] == 0
    built = tmp_path / "scratch.lmdb"
    images = project / "data/raw/images"
    run(["imgpack", "build", str(images), str(built), "--shard-mb", str(SHARD_MB)], project)
    assert same_records(project / PACK, built)
    # dvc.lock records the sound pack: nothing but ingest (always run) is out of date
    assert dvc("status", cwd=project).stdout.split() == ["ingest:", "always", "changed"]


_READ_ALL = "import imgpack, sys; pack = imgpack.open(sys.argv[1]); [r.data for r in pack]"


@pytest.mark.parametrize("how", ["python", "verify"])
def test_a_readers_remedy_for_a_truncated_shard_works_when_followed(growing, how):
    project, _ = growing
    shard = sorted((project / PACK).glob("shard-*.lmdb"))[2]
    os.chmod(shard, 0o644)
    os.truncate(shard, shard.stat().st_size // 2)
    command = ["python", "-c", _READ_ALL, PACK] if how == "python" else ["imgpack", "verify", PACK]
    failed = run(command, project, check=False)
    assert failed.returncode != 0
    line = failed.stderr.strip().splitlines()[-1]
    assert shard.name in line or "truncated" in line or "damaged" in line
    suggested = re.findall(r"\((dvc [^)]*)\)", line)
    assert suggested == [f"dvc checkout --force {PACK}"]
    dvc(*suggested[0].split()[1:], cwd=project)
    run(command, project)
    run(["imgpack", "verify", PACK], project)


@pytest.mark.parametrize("remedy", ["repro", "checkout"])
def test_validates_remedy_for_a_damaged_pack_works_when_followed(growing, remedy):
    project, _ = growing
    _flip_a_byte(sorted((project / PACK).glob("shard-*.lmdb"))[0])
    command = ["python", "-m", "imgpack.stages.validate", "--pack", PACK]
    failed = run([*command, "--report", "reports/check.json"], project, check=False)
    assert failed.returncode == 1
    line = failed.stderr.strip()
    assert "hash_mismatch" in line and len(line.splitlines()) == 1
    suggested = re.findall(r"\((dvc [^)]*)\)", line)
    assert suggested == ["dvc repro -f pack", f"dvc checkout --force {PACK}"]
    remedy_command = suggested[0] if remedy == "repro" else suggested[1]
    dvc(*remedy_command.split()[1:], cwd=project)
    run([*command, "--report", "reports/check.json"], project)
    run(["imgpack", "verify", PACK], project)
