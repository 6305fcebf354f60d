"""Worker processes: the same bytes for any count, bounded memory whatever the folder holds."""

import subprocess
import sys
import textwrap

import pytest
import yaml

from imgpack.util.cores import resolve_workers
from tests.conftest import dvc, imgpack_cli, pack_state, tool_env, write_tree

pytestmark = pytest.mark.slow


def imgpack_build(*args, cwd=None):
    return imgpack_cli("build", *args, cwd=cwd)


def test_one_two_and_four_workers_give_byte_identical_packs(sample_raw, tmp_path):
    states = []
    for workers in (1, 2, 4):
        out = tmp_path / f"w{workers}.lmdb"
        imgpack_build(
            sample_raw / "images",
            out,
            "--labels",
            sample_raw / "labels.csv",
            "--shard-mb",
            "0.003",
            "--workers",
            workers,
        )
        states.append({name: data for name, (data, _) in pack_state(out).items()})
    assert len(states[0]) > 3 and states[0] == states[1] == states[2]


def test_imgpack_build_gives_the_bytes_of_the_dvc_pipeline(dvc_project, tmp_path):
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["pack"]["shard_mb"] = 0.003
    params["ingest"]["workers"] = params["pack"]["workers"] = 1
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", cwd=dvc_project)
    built = tmp_path / "built.lmdb"
    imgpack_build(
        "data/raw/images",
        built,
        "--labels",
        "data/raw/labels.csv",
        "--shard-mb",
        "0.003",
        cwd=dvc_project,
    )
    piped = pack_state(dvc_project / "data/packed/images.lmdb")
    assert {n: d for n, (d, _) in pack_state(built).items()} == {
        n: d for n, (d, _) in piped.items()
    }


def test_zero_and_auto_mean_every_core_and_nonsense_is_named():
    assert resolve_workers(0) == resolve_workers("auto") >= 1
    with pytest.raises(Exception, match="pack.workers is -2"):
        resolve_workers(-2, "pack.workers")


PEAK = textwrap.dedent(
    """
    import sys
    from imgpack.write.build import build
    from imgpack.params import IngestParams, PackParams
    build(sys.argv[1], sys.argv[2], ingest_params=IngestParams(on_error={}),
          pack_params=PackParams(duplicates=sys.argv[3]))
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) * 1024)
    """
)


def peak_rss(raw, out, duplicates="keep") -> int:
    result = subprocess.run(
        [sys.executable, "-c", PEAK, str(raw), str(out), duplicates],
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def distinct_png(n: int) -> bytes:
    """A valid 4x4 grey PNG whose pixels spell `n`: 20,000 distinct images in microseconds."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    pixels = n.to_bytes(16, "big")
    raw = b"".join(b"\0" + pixels[i * 4 : i * 4 + 4] for i in range(4))
    header = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_duplicates_and_junk_keep_the_peak_memory_of_a_clean_folder(tmp_path):
    n = 20_000
    clean = write_tree(
        tmp_path / "clean", {f"{i % 10}/{i:05d}.png": distinct_png(i) for i in range(n)}
    )
    copies = write_tree(
        tmp_path / "copies", {f"{i % 10}/{i:05d}.png": distinct_png(i % 50) for i in range(n)}
    )
    junk = write_tree(
        tmp_path / "junk",
        {
            **{f"{i % 10}/{i:05d}.png": b"not an image %d" % i for i in range(n)},
            "0/real.png": distinct_png(1),
        },
    )
    base = peak_rss(clean, tmp_path / "clean.lmdb")
    for raw, duplicates in ((copies, "keep"), (copies, "dedupe"), (junk, "keep")):
        peak = peak_rss(raw, tmp_path / f"{raw.name}-{duplicates}.lmdb", duplicates)
        assert peak <= 1.2 * base, f"{raw.name} ({duplicates}): {peak / base:.2f}x a clean folder's"


def test_ordered_map_keeps_input_order_and_runs_trivial_tasks_here(tmp_path):
    import os

    from imgpack.parallel.workers import ordered_map, worker_pool

    tasks = [(n, n % 3 != 0) for n in range(40)]  # (number, whether a worker is needed)
    with worker_pool(2, fork=True) as pool:
        results = list(
            ordered_map(_where, ((n, task) for n, task in enumerate(tasks)), pool, local=_trivial)
        )
    assert [context for context, _ in results] == list(range(40))
    here = {n for n, (_, pid) in results if pid == os.getpid()}
    assert here == {n for n, (_, remote) in enumerate(tasks) if not remote}
    assert [value for _, (value, _) in results] == [n * n for n in range(40)]


def _trivial(task) -> bool:
    return not task[1]


def _where(task):
    import os

    return task[0] * task[0], os.getpid()


def test_pool_size_is_the_number_of_workers_or_one_without_a_pool():
    from imgpack.parallel.workers import pool_size, worker_pool

    with worker_pool(1) as none:
        assert pool_size(none) == 1
    with worker_pool(2, fork=True) as pool:
        assert pool_size(pool) == 2
