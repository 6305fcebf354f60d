"""The same build on one local process, two local processes and a two-worker Dask cluster on 127.0.0.1."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.data import WORK, image_paths
from bench.timing import IMGPACK, env, median, rounds, run_process_cpu


def _cluster(log: Path) -> tuple[str, list[subprocess.Popen]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    cli = [sys.executable, "-m"]
    handle = open(log, "w")  # noqa: SIM115 - lives as long as the cluster
    processes = [
        subprocess.Popen(
            [
                *cli,
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env(),
            stdout=handle,
            stderr=handle,
        )
    ]
    for n in range(2):
        processes.append(
            subprocess.Popen(
                [
                    *cli,
                    "distributed.cli.dask_worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{n}",
                    "--local-directory",
                    str(WORK / "cluster" / f"w{n}"),
                ],
                env=env(),
                stdout=handle,
                stderr=handle,
            )
        )
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    return address, processes


@contextlib.contextmanager
def _running_cluster() -> Iterator[tuple[Path, str]]:
    """A fresh work folder and a two-worker cluster on 127.0.0.1: (folder, scheduler address);
    both gone on exit."""
    work = WORK / "cluster"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    address, processes = _cluster(work / "dask.log")
    try:
        yield work, address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def measure(raw: Path, runs: int) -> dict:
    with _running_cluster() as (work, address):
        contenders = {
            "local, 1 process": ["--workers", "1"],
            "local, 2 processes": ["--workers", "2"],
            "Dask, 2 workers on 127.0.0.1": ["--scheduler", address],
        }

        cpu: dict[str, list[float]] = {}

        def contender(name, options):
            def once() -> float:
                out = work / "out.lmdb"
                shutil.rmtree(out, ignore_errors=True)
                seconds, _, used = run_process_cpu(
                    [IMGPACK, "build", str(raw), str(out), "--shard-mb", "4", *options]
                )
                cpu.setdefault(name, []).append(used)
                return seconds

            return once

        times = rounds({name: contender(name, o) for name, o in contenders.items()}, runs)
    base = median(times["local, 1 process"])
    records = len(image_paths(raw))
    result = {
        name: {"seconds": median(t), "x_one_process": median(t) / base, "runs": t}
        for name, t in times.items()
    }
    # The client's own CPU (its workers are the cluster's processes, not its children): what it
    # spends per record on the listing, label join, manifest, catalog and validation.
    client = median(cpu["Dask, 2 workers on 127.0.0.1"])
    result["Dask, 2 workers on 127.0.0.1"]["client_cpu_s"] = client
    result["Dask, 2 workers on 127.0.0.1"]["client_us_per_record"] = client / records * 1e6
    return result


def table(section: dict) -> list[str]:
    lines = [
        "### One machine or a cluster: `imgpack build` of MNIST 60,000 (2 cores)",
        "",
        "| how | median time | vs 1 local process |",
        "|---|---:|---:|",
    ]
    for name, row in section.items():
        if "x_one_process" in row:
            lines.append(f"| {name} | {row['seconds']:.2f} s | {row['x_one_process']:.2f}x |")
    dask = section["Dask, 2 workers on 127.0.0.1"]
    if "client_us_per_record" in dask:
        lines += [
            "",
            f"The Dask client's own CPU: {dask['client_cpu_s']:.2f} s, "
            f"{dask['client_us_per_record']:.1f} µs a record.",
        ]
    for name, row in section.items():
        if name.startswith("client at"):
            lines.append(
                f"At {row['records']:,} records (`python -m bench.cluster --client FOLDER`, one "
                f"run): {row['seconds']:.1f} s, the client's CPU {row['client_cpu_s']:.1f} s, "
                f"{row['client_us_per_record']:.1f} µs a record."
            )
    return lines + [""]


def client_share(raw: Path) -> dict:
    """One `imgpack build` of `raw` on a fresh two-worker cluster: the client's own CPU seconds
    and µs a record (issue 25 asks for it at 960,000 records: the million section's folder)."""
    with _running_cluster() as (work, address):
        out = work / "out.lmdb"
        seconds, peak, used = run_process_cpu(
            [IMGPACK, "build", str(raw), str(out), "--shard-mb", "4", "--scheduler", address]
        )
    records = len(image_paths(raw))
    return {
        "records": records,
        "seconds": seconds,
        "client_cpu_s": used,
        "client_us_per_record": used / records * 1e6,
        "client_peak_rss_mb": peak / 1e6,
    }


if __name__ == "__main__":
    import json

    from bench.data import mnist

    out = Path(__file__).with_name("results.json")
    everything = json.loads(out.read_text()) if out.exists() else {"sections": {}}
    if sys.argv[1:2] == ["--client"]:  # python -m bench.cluster --client FOLDER
        share = client_share(Path(sys.argv[2]))
        print(json.dumps(share, indent=2))
        everything["sections"].setdefault("cluster", {})[f"client at {share['records']}"] = share
    else:
        result = measure(mnist(), int(sys.argv[1]) if len(sys.argv) > 1 else 3)
        print("\n".join(table(result)))
        everything.setdefault("sections", {})["cluster"] = result
    out.write_text(json.dumps(everything, indent=2) + "\n")
