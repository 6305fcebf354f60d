"""Whole-process timing with peak RSS, rounds that alternate contenders, medians and ratios."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PYTHON = sys.executable
IMGPACK = str(Path(sys.executable).with_name("imgpack"))


def env() -> dict[str, str]:
    out = dict(os.environ)
    # A user's Python keeps the bytecode of imgpack's modules; this machine's shell tells Python
    # not to, which would make every imgpack process compile its sources again (about 0.05 s,
    # more for the pipeline's four stage processes). DVC and the libraries are compiled at install.
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["PATH"] = os.path.dirname(sys.executable) + os.pathsep + out.get("PATH", "")
    out.update(CI="true", DVC_NO_ANALYTICS="1")
    return out


# Linux carries a process's RSS high-water mark across fork and exec, so a child of this (large)
# process would report our peak. GNU time is a tiny parent whose child reports only its own.
GNU_TIME = shutil.which("time") if os.path.exists("/usr/bin/time") else None


def compile_imgpack() -> None:
    """Bytecode for imgpack's own modules, as a first run on a user's machine leaves it."""
    import compileall

    import imgpack

    compileall.compile_dir(os.path.dirname(imgpack.__file__), quiet=1)


def run_process(cmd: list[str], cwd: Path | None = None, cold: bool = True) -> tuple[float, int]:
    """Run `cmd` to completion; (wall seconds, peak RSS in bytes) of that process alone.

    `cold`: nothing remembered from earlier runs (a fresh, empty imgpack state folder), so every
    build reads every file; `False` keeps the project's own state (DVC's .dvc/tmp).
    """
    elapsed, peak, _ = run_process_cpu(cmd, cwd, cold)
    return elapsed, peak


def run_process_cpu(
    cmd: list[str], cwd: Path | None = None, cold: bool = True
) -> tuple[float, int, float]:
    """`run_process`, and the CPU seconds (user + system) of the process and the children it
    waited for (not a Dask cluster's workers: those are not its children)."""
    with (
        tempfile.NamedTemporaryFile(mode="r") as rss,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as state,
    ):
        environment = env()
        if cold:
            environment["IMGPACK_STATE"] = state
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *cmd] if GNU_TIME else cmd
        start = time.perf_counter()
        process = subprocess.Popen(
            wrapped, cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(
                f"{' '.join(cmd)} failed: {err.read().decode(errors='replace')[-2000:]}"
            )
        peak_kb = int(rss.read().strip().splitlines()[-1]) if GNU_TIME else usage.ru_maxrss
    return elapsed, peak_kb * 1024, usage.ru_utime + usage.ru_stime


def rounds(contenders: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Call every contender once per round, in an order rotated each round; all times per contender."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(contenders[name]())
    return times


def clock(fn: Callable[[], object]) -> Callable[[], float]:
    """A contender that runs `fn` in this process and returns its wall time."""

    def once() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return once


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
