"""A real Dask cluster on 127.0.0.1 (a scheduler and two workers) builds and verifies packs."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import imgpack_cli as imgpack
from tests.conftest import pack_state, tool_env

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dask_command(*args):
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


@pytest.fixture
def cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes (no nanny: a kill is a dead worker)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    logs = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed at the end
    processes = [
        subprocess.Popen(
            dask_command("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"),
            env=tool_env(),
            stdout=logs,
            stderr=logs,
        )
    ]
    for n in range(2):
        processes.append(
            subprocess.Popen(
                dask_command(
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"w{n}",
                    "--local-directory",
                    str(tmp_path / f"w{n}"),
                ),
                env=tool_env(),
                stdout=logs,
                stderr=logs,
            )
        )
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, processes[1:]
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


def files(pack):
    return {name: data for name, (data, _) in pack_state(pack).items()}


def test_a_build_on_the_cluster_is_byte_identical_to_a_local_one_even_when_a_worker_dies(
    cluster, mnist, tmp_path
):
    address, workers = cluster
    raw = mnist / "training"
    local, remote, killed = (tmp_path / f"{n}.lmdb" for n in ("local", "cluster", "killed"))
    imgpack("build", raw, local, "--shard-mb", "2", "--workers", "2")
    imgpack("build", raw, remote, "--shard-mb", "2", "--scheduler", address)
    assert len(files(local)) > 5 and files(remote) == files(local)

    build = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgpack.cli.main",
            "build",
            str(raw),
            str(killed),
            "--shard-mb",
            "2",
            "--scheduler",
            address,
        ],
        # nothing remembered: every file is read by the workers, so the build lasts
        env={**tool_env(), "IMGPACK_STATE": str(tmp_path / "empty-state")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)  # well inside the build: ingest tasks are running on both workers
    assert build.poll() is None, "the build ended before a worker could be killed"
    workers[0].send_signal(signal.SIGKILL)
    _, err = build.communicate(timeout=300)
    assert build.returncode == 0, err
    assert files(killed) == files(local)  # the lost worker's tasks ran again elsewhere


def test_verify_on_the_cluster_names_a_damaged_shard(cluster, tmp_path):
    from tests.conftest import flip_byte_of, write_pack

    address, _ = cluster
    pack = tmp_path / "p.lmdb"
    write_pack(pack, 60, value=b"v" * 3000, shard_mb=0.05)
    assert "ok: 60 records" in imgpack("verify", pack, "--scheduler", address).stdout
    damaged = flip_byte_of(pack, "k00031")
    failed = imgpack("verify", pack, "--scheduler", address, check=False)
    assert failed.returncode != 0 and damaged.name in failed.stderr


def test_an_unreachable_scheduler_is_one_clear_line_and_no_output(digits_tree, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "out" / "p.lmdb"
    out.parent.mkdir()
    failed = imgpack("build", digits_tree, out, "--scheduler", address, check=False)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Dask scheduler at {address}" in lines[0]
    assert os.listdir(out.parent) == []


def test_import_and_a_local_build_never_import_dask(digits_tree, tmp_path):
    script = (
        "import sys, imgpack\n"
        "from imgpack.write.build import build\n"
        f"build({str(digits_tree)!r}, {str(tmp_path / 'p.lmdb')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=tool_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_client_killed_mid_build_publishes_nothing_and_the_rerun_reuses_finished_shards(
    cluster, mnist, tmp_path
):
    address, _ = cluster
    raw = mnist / "training"
    out = tmp_path / "out" / "p.lmdb"
    resume = out.with_name(".p.lmdb.resume")
    command = ["build", raw, out, "--shard-mb", "0.25", "--scheduler", address]
    client = subprocess.Popen(
        [sys.executable, "-m", "imgpack.cli.main", *map(str, command)],
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (resume.is_dir() and len(list(resume.glob("*.lmdb"))) >= 3):
        assert client.poll() is None and time.monotonic() < deadline, "the build ended too soon"
        time.sleep(0.01)
    client.send_signal(signal.SIGKILL)
    client.wait()
    time.sleep(1)  # tasks already running on the workers may still finish their shards
    assert not out.exists()
    finished = {p.stat().st_ino for p in resume.glob("*.lmdb")}

    imgpack(*command)
    assert len({p.stat().st_ino for p in out.glob("shard-*.lmdb")} & finished) >= 3
    assert not resume.exists()
    fresh = tmp_path / "fresh.lmdb"
    imgpack("build", raw, fresh, "--shard-mb", "0.25", "--workers", "2")
    assert files(out) == files(fresh)
