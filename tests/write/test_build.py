"""Faults during a build: SIGKILL at any moment, a full disk, a far too small map; never a damaged pack."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import imgpack
from imgpack.params import PackParams
from imgpack.write.build import build
from tests.conftest import (
    alive,
    descendants,
    pack_state,
    png_bytes,
    source_files,
    tool_env,
    write_tree,
)


@pytest.fixture
def many_images(tmp_path):
    # about 2,000 small distinct PNGs: a build lasts long enough to be killed in every phase
    files = {
        f"{d}/{n:04d}.png": png_bytes(8 + n % 50, 8 + d, shade=n // 50 * 40 + d)
        for d in range(8)
        for n in range(250)
    }
    return write_tree(tmp_path / "raw", files)


def start_build(raw, out):
    return subprocess.Popen(
        [sys.executable, "-m", "imgpack.cli.main", "build", str(raw), str(out)],
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_at_any_moment_leaves_the_published_pack_intact_and_the_next_build_is_clean(
    many_images, tmp_path
):
    out_dir = tmp_path / "out"
    out = out_dir / "p.lmdb"
    old_raw = write_tree(tmp_path / "old", {"x/a.png": png_bytes(shade=1)})
    build(old_raw, out)
    published = out.read_bytes()

    started = time.monotonic()
    finished = start_build(many_images, tmp_path / "timing.lmdb")
    finished.wait()
    duration = time.monotonic() - started
    clean = (tmp_path / "timing.lmdb").read_bytes()

    for fraction in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97):
        process = start_build(many_images, out)
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
        now = out.read_bytes()
        assert now in (published, clean), f"damaged pack after a kill at {fraction:.0%}"
        published = now

    build(many_images, out)
    assert out.read_bytes() == clean
    assert sorted(os.listdir(out_dir)) == ["p.lmdb"]  # the killed builds' leftovers are gone


def test_a_full_disk_is_a_clear_error_and_publishes_nothing(many_images, tmp_path):
    out = tmp_path / "out" / "p.lmdb"
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        from imgpack.cli.main import main
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        sys.exit(main(["build", {str(many_images)!r}, {str(out)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=tool_env()
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgpack: error: cannot write"), result.stderr
    assert "nothing was published" in lines[0]
    assert os.listdir(out.parent) == []


def test_a_far_too_small_initial_map_size_still_builds_the_same_records(many_images, tmp_path):
    result = build(
        many_images, tmp_path / "small.lmdb", pack_params=PackParams(initial_map_size_mb=1)
    )
    reference = build(many_images, tmp_path / "auto.lmdb")
    assert result.header["count"] == reference.header["count"] == 2000
    assert result.validation["ok"]


def test_a_killed_parallel_build_keeps_finished_shards_for_the_next_run_and_no_process(
    many_images, tmp_path
):
    out = tmp_path / "out" / "p.lmdb"
    half = write_tree(tmp_path / "half", {})
    for path in sorted(many_images.rglob("*.png"))[::2]:
        target = half / path.relative_to(many_images)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    build(half, out, pack_params=PackParams(shard_mb=0.002))
    published = pack_state(out)
    resume = out.with_name(".p.lmdb.resume")

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgpack.cli.main",
            "build",
            str(many_images),
            str(out),
            "--shard-mb",
            "0.002",
            "--workers",
            "2",
        ],
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "stderr.txt", "w"),  # noqa: SIM115 - the process holds it
    )
    deadline = time.monotonic() + 60
    while not (resume.is_dir() and len(list(resume.glob("*.lmdb"))) >= 20):
        assert process.poll() is None and time.monotonic() < deadline, (
            f"build ended too soon: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
        )
        time.sleep(0.005)
    workers = descendants(process.pid)
    assert len(workers) >= 2  # the forkserver and its workers
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {pid: Path(f"/proc/{pid}/cmdline").read_text() for pid in workers if alive(pid)}
    assert not survivors, f"processes outlived a killed build: {survivors}"
    assert pack_state(out) == published  # the published version is untouched
    finished = {p.stat().st_ino for p in resume.glob("*.lmdb")}
    # A shard being written when the build died keeps its hidden .partial name: never taken for whole.
    assert all(p.name.startswith(".") and ".partial-" in p.name for p in resume.glob(".*"))

    build(many_images, out, pack_params=PackParams(shard_mb=0.002))
    reused = {p.stat().st_ino for p in out.glob("shard-*.lmdb")} & finished
    assert len(reused) >= 20  # the same files, linked in: not written again
    assert not resume.exists()
    assert sorted(os.listdir(out.parent)) == ["p.lmdb"]
    with imgpack.open(out) as pack:
        assert {r.key: r.data for r in pack} == source_files(many_images)


def test_a_build_that_rewrites_a_thinned_shard_keeps_every_record_whole(many_images, tmp_path):
    out = tmp_path / "p.lmdb"
    options = PackParams(shard_mb=0.01)
    build(many_images, out, pack_params=options)
    with imgpack.open(out) as pack:
        where = pack.catalog.table(["key", "shard"]).to_pylist()
        first = [row["key"] for row in where if row["shard"] == 0][1:]
    for key in first:  # most of the first shard goes; the rest of the folder stays
        (many_images / key).unlink()
    for n, key in enumerate(("0/zz-new.png", "3/new.png", "5/new.png")):  # stored anew
        (many_images / key).write_bytes(png_bytes(30 + n, 9, shade=n))
    result = build(many_images, out, pack_params=options)
    assert result.header["compacted_shards"] >= 1 and result.header["carried_shards"] >= 1
    with imgpack.open(out) as pack:
        assert {r.key: r.data for r in pack} == source_files(many_images)


def test_an_incremental_build_carries_the_last_ones_records_and_reads_only_what_changed(
    tmp_path,
):
    import glob
    import json
    import shutil

    from tests.write.test_versions import same_records

    files = {f"c{n % 4}/{n:03d}.png": png_bytes(8 + n % 9, 6, shade=n) for n in range(160)}
    raw = write_tree(tmp_path / "raw", {**files, "c1/notes.txt": b"not an image"})
    out = tmp_path / "p.lmdb"
    params = PackParams(shard_mb=0.003)
    build(raw, out, pack_params=params)  # fresh: one pass
    write_tree(raw, {"c0/a-new.png": png_bytes(9, 9, shade=1)})
    time.sleep(2.1)  # out of the racy window: the next build's stats tell the next change
    build(raw, out, pack_params=params)  # incremental: its records kept in the state
    for cache in glob.glob(os.path.join(os.environ["IMGPACK_STATE"], "ingest-*.sqlite")):
        os.unlink(cache)  # only the kept records can spare the unchanged files now

    write_tree(raw, {"c2/b-new.png": png_bytes(7, 9, shade=2), "c3/zz.png": png_bytes(6, 6)})
    (raw / "c1/001.png").unlink()
    report = tmp_path / "report.json"
    result = build(raw, out, pack_params=params, report_out=report)

    assert result.report.read == 2 and result.report.packed == 162
    assert json.loads(report.read_text())["skipped_files"][0]["path"] == "c1/notes.txt"
    assert result.header["new_shards"] == 1 and result.validation["ok"]
    fresh = tmp_path / "fresh.lmdb"
    shutil.rmtree(os.environ["IMGPACK_STATE"])
    build(raw, fresh, pack_params=params)
    assert same_records(out, fresh)


def test_what_builds_kept_for_a_pack_gone_for_a_day_is_removed_by_the_next_build(tmp_path):
    import glob
    import shutil

    from imgpack.write.onepass_kept import kept_outputs_of

    files = {f"c{n % 2}/{n:03d}.png": png_bytes(8 + n % 5, 6, shade=n) for n in range(40)}
    raw = write_tree(tmp_path / "raw", files)
    time.sleep(2.1)  # out of the racy window: the builds keep their records
    params = PackParams(shard_mb=0.001)
    gone, recent, kept = (tmp_path / f"{name}.lmdb" for name in ("gone", "recent", "kept"))
    for out in (gone, recent, kept):
        build(raw, out, pack_params=params)
    state = os.environ["IMGPACK_STATE"]
    before = set(os.listdir(state))
    folders = {out: kept_outputs_of(out)[0].parent for out in (gone, recent, kept)}
    assert len(glob.glob(os.path.join(state, "ingest-records-*.arrow"))) == 3
    shutil.rmtree(gone)
    shutil.rmtree(recent)
    day_ago = time.time() - 25 * 3600
    os.utime(folders[gone], (day_ago, day_ago))

    build(raw, tmp_path / "another.lmdb", pack_params=params)

    assert not folders[gone].exists()  # its pack gone for a day: its state too
    assert folders[recent].exists() and folders[kept].exists()  # gone just now; still there
    left = set(os.listdir(state))
    assert len(before - left) == 3  # the folder, and its snapshot and records beside it
    assert len(glob.glob(os.path.join(state, "ingest-records-*.arrow"))) == 3


def test_a_build_succeeds_when_imgpacks_state_folder_cannot_be_written(tmp_path, monkeypatch):
    from tests.write.test_versions import same_records

    files = {f"c{n % 2}/{n:03d}.png": png_bytes(8 + n % 5, 6, shade=n) for n in range(40)}
    raw = write_tree(tmp_path / "raw", files)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("IMGPACK_STATE", str(tmp_path / "a-file" / "state"))
    params = PackParams(shard_mb=0.001)
    out = tmp_path / "p.lmdb"
    assert build(raw, out, pack_params=params).report.packed == 40  # fresh
    write_tree(raw, {"c0/new.png": png_bytes(9, 9, shade=3)})
    grown = build(raw, out, pack_params=params)  # incremental: its manifest in scratch
    assert grown.report.packed == 41 and grown.validation["ok"]
    monkeypatch.setenv("IMGPACK_STATE", str(tmp_path / "state"))
    build(raw, tmp_path / "fresh.lmdb", pack_params=params)
    assert same_records(out, tmp_path / "fresh.lmdb")


def test_a_fresh_build_that_cannot_keep_its_manifest_is_published_all_the_same(tmp_path):
    from imgpack.write.onepass_kept import kept_outputs_of

    files = {f"c{n % 2}/{n:03d}.png": png_bytes(8 + n % 5, 6, shade=n) for n in range(40)}
    raw, out = write_tree(tmp_path / "raw", files), tmp_path / "p.lmdb"
    manifest, _ = kept_outputs_of(out)
    manifest.mkdir()  # a folder where the kept manifest goes: writing it fails
    result = build(raw, out, pack_params=PackParams(shard_mb=0.001))
    assert result.validation["ok"] and out.is_dir() and len(imgpack.open(out)) == 40
    assert manifest.is_dir()  # nothing kept; the next build reads every file


def test_a_file_rewritten_while_an_append_builds_is_refused_and_the_next_build_takes_it(
    tmp_path, monkeypatch
):
    import hashlib

    from imgpack.errors import InputError
    from imgpack.write import pack as pack_module

    files = {f"c{n % 2}/{n:03d}.png": png_bytes(8 + n % 5, 6, shade=n) for n in range(40)}
    raw, out = write_tree(tmp_path / "raw", files), tmp_path / "p.lmdb"
    params = PackParams(shard_mb=0.001)
    time.sleep(2.1)  # out of the racy window: the fresh build keeps its records
    build(raw, out, pack_params=params)
    write_tree(raw, {"c0/new.png": png_bytes(9, 9, shade=1)})  # carried over: read, not spooled
    packing = pack_module.pack

    def rewritten_first(*args, **kwargs):  # still being copied when ingest had read it
        write_tree(raw, {"c0/new.png": png_bytes(9, 9, shade=2)})
        return packing(*args, **kwargs)

    monkeypatch.setattr(pack_module, "pack", rewritten_first)
    with pytest.raises(InputError, match=r"changed since ingest .* the same imgpack build"):
        build(raw, out, pack_params=params)
    monkeypatch.setattr(pack_module, "pack", packing)

    grown = build(raw, out, pack_params=params)  # the remedy, followed
    assert grown.validation["ok"] and grown.report.packed == 41
    with imgpack.open(out) as pack:
        stored = pack[pack.index_of("c0/new.png")].data
    assert hashlib.sha256(stored).digest() == hashlib.sha256(png_bytes(9, 9, shade=2)).digest()
