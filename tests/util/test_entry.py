"""What importing imgpack.util.entry (every stage and the CLI do it first) sets up for the process."""

import os
import subprocess
import sys

import pytest

_THREADS = "import os, numpy; print(len(os.listdir('/proc/self/task')))"


def _threads_after(imports: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", f"{imports}{_THREADS}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
    reason="counts a Linux process's threads on a machine with several cores",
)
def test_numpy_starts_no_blas_threads_in_imgpacks_own_processes():
    # Without the setting, OpenBLAS starts a thread per core at numpy's import (they spin a
    # while, taking a core from the build's workers).
    assert _threads_after("") > 1
    assert _threads_after("import imgpack.util.entry; ") == 1
