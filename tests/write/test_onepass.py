"""A fresh build in one pass: the pipeline's bytes whatever the folder turns out to hold; resumed after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import imgpack
from imgpack.ingest.run import ingest
from imgpack.params import IngestParams, PackParams
from imgpack.write.build import build
from imgpack.write.pack import pack
from tests.conftest import (
    alive,
    descendants,
    pack_state,
    png_bytes,
    source_files,
    tool_env,
    write_tree,
)


def staged(raw, out, tmp_path, params, labels=None):
    """The pipeline's way: ingest to a manifest, then pack it."""
    manifest = tmp_path / f"{out.name}.jsonl"
    report = ingest(raw, manifest, labels=labels)
    pack(manifest, raw, out, params)
    return report


def contents(path):
    return {name: data for name, (data, _) in pack_state(path).items()}


def test_a_fresh_build_reads_each_file_once_and_gives_the_pipelines_bytes(tmp_path):
    files = {
        f"{d}/{n:03d}.png": png_bytes(6 + n % 9, 5 + d, shade=n)
        for d in range(5)
        for n in range(80)
    }
    raw = write_tree(tmp_path / "raw", files)
    params = PackParams(shard_mb=0.004)
    result = build(raw, tmp_path / "built.lmdb", pack_params=params)
    staged(raw, tmp_path / "staged.lmdb", tmp_path, params)
    assert result.report.read == result.report.packed == 400
    assert result.header["new_shards"] > 5 and result.validation["ok"]
    assert contents(tmp_path / "built.lmdb") == contents(tmp_path / "staged.lmdb")


def test_copies_anywhere_in_the_folder_are_reported_in_the_same_groups_as_ingest_reports(
    tmp_path,
):
    files = {
        f"{d}/{n:03d}.png": png_bytes(6, 5, shade=d * 50 + n) for d in range(4) for n in range(50)
    }
    for key in ("0/000.png", "0/001.png", "1/020.png", "3/049.png"):  # first, next, middle, last
        files[key] = png_bytes(9, 9, shade=7)
    for n in range(10, 40, 3):  # runs of copies of another image, across shards
        files[f"2/{n:03d}.png"] = files[f"3/{n + 1:03d}.png"] = png_bytes(8, 8, shade=3)
    raw = write_tree(tmp_path / "raw", files)
    params = PackParams(shard_mb=0.002)
    report_file = tmp_path / "report.json"
    build(raw, tmp_path / "built.lmdb", pack_params=params, report_out=report_file)
    expected = staged(raw, tmp_path / "staged.lmdb", tmp_path, params).as_dict()
    groups = json.loads(report_file.read_text())["duplicate_groups"]
    assert groups == expected["duplicate_groups"]
    assert sorted(map(len, groups)) == [4, 20]
    assert contents(tmp_path / "built.lmdb") == contents(tmp_path / "staged.lmdb")


def test_files_that_are_no_image_replan_only_their_part_and_every_file_is_accounted_for(tmp_path):
    files = {
        f"{d}/{n:03d}.png": png_bytes(7 + n % 5, 6, shade=n + d)
        for d in range(4)
        for n in range(60)
    }
    for n in range(0, 60, 7):  # corrupt, truncated and empty files spread through every shard
        files[f"1/{n:03d}.png"] = b"not an image"
        files[f"2/{n:03d}.png"] = png_bytes(9, 9, shade=n)[:30]
        files[f"3/{n:03d}.png"] = b""
    files["0/notes.txt"] = "not an image by its name"
    raw = write_tree(tmp_path / "raw", files)
    params = PackParams(shard_mb=0.003)
    report_file = tmp_path / "report.json"
    build(raw, tmp_path / "built.lmdb", pack_params=params, report_out=report_file)
    expected = staged(raw, tmp_path / "staged.lmdb", tmp_path, params)
    assert contents(tmp_path / "built.lmdb") == contents(tmp_path / "staged.lmdb")
    report = json.loads(report_file.read_text())
    assert report["discovered"] == 241 == report["packed"] + report["skipped"]
    assert report["skipped_by_reason"] == expected.as_dict()["skipped_by_reason"]
    assert report["skipped_by_reason"] == {"corrupt": 18, "empty": 9, "not_image": 1}
    assert sorted(s["path"] for s in report["skipped_files"]) == sorted(
        s["path"] for s in expected.as_dict()["skipped_files"]
    )
    with imgpack.open(tmp_path / "built.lmdb") as built:
        good = {k: v for k, v in source_files(raw).items() if k.endswith(".png")}
        assert {r.key: r.data for r in built} == {
            k: v for k, v in good.items() if v and v != b"not an image" and len(v) != 30
        }


def test_a_folder_of_nothing_but_junk_is_refused_with_every_file_accounted_for(tmp_path):
    raw = write_tree(
        tmp_path / "raw", {f"{n % 3}/{n:05d}.png": b"junk %d" % n for n in range(3000)}
    )
    with pytest.raises(imgpack.ImgpackError, match="no images to pack .3000 files found"):
        build(raw, tmp_path / "p.lmdb", ingest_params=IngestParams(workers=2))
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def killed_build(tmp_path):
    """A fresh build of 3,200 images killed with SIGKILL once 20 shards are finished: (raw,
    out, its resume folder, the command and options, the environment)."""
    files = {
        f"{d}/{n:04d}.png": png_bytes(8 + n % 40, 8 + d, shade=n // 40 * 30 + d)
        for d in range(8)
        for n in range(400)
    }
    raw = write_tree(tmp_path / "raw", files)
    time.sleep(2.1)  # older than the ingest cache's racy window, so what a task learns is kept
    out = tmp_path / "out" / "p.lmdb"
    resume = out.with_name(".p.lmdb.resume")
    env = {**tool_env(), "IMGPACK_STATE": str(tmp_path / "state")}
    command = [sys.executable, "-m", "imgpack.cli.main", "build", str(raw), str(out)]
    options = ["--shard-mb", "0.002", "--workers", "2"]
    process = subprocess.Popen(command + options, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (resume.is_dir() and len(list(resume.glob("*.lmdb"))) >= 20):
        assert process.poll() is None and time.monotonic() < deadline, "build ended too soon"
        time.sleep(0.005)
    workers = descendants(process.pid)
    assert len(workers) >= 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "workers outlived a killed build"
    assert not out.exists()
    return raw, out, resume, (command, options), env


def test_a_killed_fresh_build_keeps_its_finished_shards_and_the_next_one_reads_only_the_rest(
    tmp_path,
):
    raw, out, resume, (command, options), env = killed_build(tmp_path)
    finished = {p.stat().st_ino for p in resume.glob("*.lmdb")}

    rerun = subprocess.run(
        command + [*options, "--report", str(tmp_path / "r.json")], env=env, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr
    reused = {p.stat().st_ino for p in out.glob("shard-*.lmdb")} & finished
    assert len(reused) >= 20  # linked in, not written again
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["packed"] == 3200 and report["read"] <= 3200 - 20  # their files not read again
    assert not resume.exists()
    fresh = tmp_path / "fresh.lmdb"
    build(raw, fresh, pack_params=PackParams(shard_mb=0.002))
    assert contents(out) == contents(fresh)


def test_a_refused_build_leaves_nothing_beside_the_output(tmp_path):
    raw = write_tree(
        tmp_path / "raw",
        {f"{d}/{n}.png": png_bytes(6, 6, shade=n + d) for d in range(3) for n in range(30)},
    )
    table = tmp_path / "labels.csv"
    rows = [f"{d}/{n}.png,{d}" for d in range(3) for n in range(30)] + ["3/gone.png,3"]
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out" / "p.lmdb"
    with pytest.raises(imgpack.ImgpackError, match="missing_image 1: 3/gone.png"):
        build(raw, out, labels=table, pack_params=PackParams(shard_mb=0.001))
    assert os.listdir(out.parent) == []


def test_the_workers_of_a_fresh_build_never_import_arrow_or_numpy(tmp_path):
    """They read, hash, probe and write images; the build's own process seals the shards."""
    files = {
        f"{d}/{n:03d}.png": png_bytes(6 + n % 9, 5 + d, shade=n)
        for d in range(4)
        for n in range(60)
    }
    raw = write_tree(tmp_path / "raw", files)
    log = tmp_path / "imports.log"
    script = f"""
import os, sys
log = open({str(log)!r}, "a", buffering=1)
def hook(event, args):  # audit hooks are inherited by forked workers
    if event == "import" and args[0] in ("pyarrow", "numpy"):
        log.write(f"{{os.getpid()}} {{args[0]}}\\n")
sys.addaudithook(hook)
from imgpack.write.build import build
from imgpack.params import IngestParams, PackParams
result = build({str(raw)!r}, {str(tmp_path / "out")!r},
               pack_params=PackParams(shard_mb=0.004, workers=2))
print(os.getpid(), result.header["new_shards"], result.validation["ok"])
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=tool_env(), check=True
    )
    pid, shards, ok = run.stdout.split()
    assert int(shards) > 4 and ok == "True"
    imported = [line.split() for line in log.read_text().splitlines()]
    assert {name for _, name in imported} == {"pyarrow", "numpy"}  # by the build's process
    assert {p for p, _ in imported} == {pid}


def test_a_fresh_builds_shards_are_known_validated_and_not_hashed_again_by_the_next_version(
    tmp_path,
):
    from imgpack.check.validate import validate

    files = {f"{n % 3}/{n:03d}.png": png_bytes(8 + n % 13, 7, shade=n) for n in range(90)}
    raw, out = write_tree(tmp_path / "raw", files), tmp_path / "p.lmdb"
    fresh = build(raw, out, pack_params=PackParams(shard_mb=0.002))
    shards = len(fresh.header["shards"])
    assert shards > 3 and out.is_dir()

    write_tree(raw, {"2/zz.png": png_bytes(9, 9, shade=7)})
    grown = build(raw, out, pack_params=PackParams(shard_mb=0.002)).validation
    assert grown["ok"] and grown["shards_known"] == shards  # the carried ones, by their record
    assert grown["shards_hashed"] == grown["shards"] - shards == 1

    # a shard damaged after the build is no longer the file that was validated: hashed again
    victim = sorted(out.glob("shard-*.lmdb"))[0]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))
    manifest = tmp_path / "m.jsonl"
    ingest(raw, manifest)
    assert validate(out, manifest, remember=False)["shards_known"] == grown["shards"] - 1


def test_a_fresh_build_leaves_ingests_manifest_and_the_next_version_reads_only_what_changed(
    tmp_path,
):
    import glob
    import shutil

    from imgpack.write.onepass_kept import kept_outputs_of
    from tests.write.test_versions import same_records

    files = {f"c{n % 3}/{n:03d}.png": png_bytes(8 + n % 11, 7, shade=n) for n in range(120)}
    files["c0/copy.png"] = files["c2/002.png"]  # a duplicate: named in the manifest
    files["c1/trailing.png"] = png_bytes(9, 9, shade=3) + b"left over"  # a note
    files["c1/readme.txt"] = b"no image"  # skipped
    files['c2/say "hi".png'] = png_bytes(7, 7, shade=4)  # its shard's rows are escaped
    raw, out = write_tree(tmp_path / "raw", files), tmp_path / "p.lmdb"
    time.sleep(2.1)  # out of the racy window: the build's stats can tell a later change
    params = PackParams(shard_mb=0.002)
    build(raw, out, pack_params=params)
    kept_manifest, kept_report = kept_outputs_of(out)
    manifest, report = tmp_path / "m.jsonl", tmp_path / "r.json"
    ingest(raw, manifest, report, cache=False)
    assert kept_manifest.read_bytes() == manifest.read_bytes()
    assert json.loads(kept_report.read_text()) == json.loads(report.read_text())

    for cache in glob.glob(os.path.join(os.environ["IMGPACK_STATE"], "ingest-*.sqlite")):
        os.unlink(cache)  # only what the fresh build left can spare the unchanged files now
    write_tree(raw, {"c2/added.png": png_bytes(5, 9, shade=9), "c0/0a.png": png_bytes(6, 5)})
    (raw / "c1/001.png").unlink()
    grown = build(raw, out, pack_params=params)
    assert grown.report.read == 2 and grown.validation["ok"]
    assert grown.header["carried_shards"] > 3

    shutil.rmtree(os.environ["IMGPACK_STATE"])
    fresh = tmp_path / "fresh.lmdb"
    build(raw, fresh, pack_params=params)
    assert same_records(out, fresh)


def test_a_finished_shard_left_by_a_killed_build_is_written_again_when_its_files_are_read(
    tmp_path,
):
    import shutil

    raw, out, resume, (command, options), env = killed_build(tmp_path)
    victim = sorted(resume.glob("*.lmdb"))[0]
    data = bytearray(victim.read_bytes())
    at = data.index(b"\x89PNG") + 40  # inside an image's bytes
    data[at] ^= 0xFF
    victim.write_bytes(bytes(data))
    shutil.rmtree(tmp_path / "state")  # nothing remembered: every file is read again

    rerun = subprocess.run(command + options, env=env, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    verified = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", "verify", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    fresh = tmp_path / "fresh.lmdb"
    build(raw, fresh, pack_params=PackParams(shard_mb=0.002))
    assert contents(out) == contents(fresh)
