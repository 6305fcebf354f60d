"""One writer per output: a second build into the same OUT is refused while the first writes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import imgpack
from imgpack.errors import OutputError
from imgpack.util.locks import lock_path, writer_lock
from tests.conftest import tool_env


def _build(raw, out, *options) -> subprocess.Popen:
    command = [sys.executable, "-m", "imgpack.cli.main", "build", str(raw), str(out), *options]
    return subprocess.Popen(command, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("fresh", [True, False], ids=["one pass", "incremental"])
def test_a_second_build_into_the_same_output_is_refused_naming_it(many_digits, tmp_path, fresh):
    out = tmp_path / "digits.lmdb"
    raw = many_digits
    if not fresh:  # a previous version: the second build would be incremental
        subprocess.run(
            [
                sys.executable,
                "-m",
                "imgpack.cli.main",
                "build",
                str(raw),
                str(out),
                "--shard-mb",
                "0.5",
            ],
            env=tool_env(),
            check=True,
            capture_output=True,
        )
    first = _build(raw, out, "--shard-mb", "0.5", *(["--fresh"] if fresh else []))
    deadline = time.monotonic() + 60
    while not lock_path(out).exists():
        assert first.poll() is None, first.communicate()[1].decode()
        assert time.monotonic() < deadline, "the first build never took the lock"
        time.sleep(0.01)
    second = _build(raw, out, "--shard-mb", "0.5")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert err.decode().strip().splitlines() == [
        f"imgpack: error: another build is writing {out} (it holds {lock_path(out)}); wait for "
        "it to finish, then run again"
    ]
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    with imgpack.open(out) as pack:
        assert len(pack) == 10_000
    assert not lock_path(out).exists()


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    out = tmp_path / "p.lmdb"
    with writer_lock(out), writer_lock(out):  # build() holds it while pack() takes it
        assert lock_path(out).exists()
        held = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from imgpack.util.locks import writer_lock\nwith writer_lock({str(out)!r}): pass",
            ],
            capture_output=True,
            text=True,
        )
        assert held.returncode == 1 and "another build is writing" in held.stderr
    assert not lock_path(out).exists()
    with writer_lock(out):  # free again
        pass


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "p.lmdb"
    lock_path(out).write_text("")  # nobody holds it: a killed holder's lock went with it
    with writer_lock(out):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_held_lock_refuses_in_this_process_too_when_not_reentered(tmp_path):
    out = tmp_path / "p.lmdb"
    held = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom imgpack.util.locks import writer_lock\n"
            f"with writer_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match="another build is writing"), writer_lock(out):
            pass
    finally:
        held.kill()
        held.wait()


def test_a_killed_builds_lock_is_free_at_once_though_its_forked_workers_still_run(tmp_path):
    out = tmp_path / "p.lmdb"
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from imgpack.util.locks import writer_lock
        with writer_lock({str(out)!r}):
            started, ready = os.pipe()
            worker = os.fork()
            if worker == 0:  # a forked worker, still busy when its build is killed
                os.write(ready, b"!")  # (its fork hooks have run by now)
                time.sleep(60)
                os._exit(0)
            os.read(started, 1)
            print(worker, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    build = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    shown = build.stdout.readline()
    build.wait()
    assert shown.strip().isdigit(), f"the build died before forking (exit {build.returncode})"
    worker = int(shown)
    try:
        os.kill(worker, 0)  # the worker is alive (this raises if not)
        with writer_lock(out):  # and the lock is free all the same
            assert lock_path(out).exists()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_forked_child_leaving_the_lock_leaves_its_parents_lock_held(tmp_path):
    out = tmp_path / "p.lmdb"
    child = -1
    try:
        with writer_lock(out), writer_lock(out):
            child = os.fork()
            if child > 0:
                assert os.waitpid(child, 0)[1] == 0  # it left both blocks without an error
                assert lock_path(out).exists()
                held = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "from imgpack.util.locks import writer_lock\n"
                        f"with writer_lock({str(out)!r}): pass",
                    ],
                    capture_output=True,
                    text=True,
                )
                assert held.returncode == 1 and "another build is writing" in held.stderr
    except BaseException:
        if child == 0:
            os._exit(1)
        raise
    if child == 0:  # the child, having unwound both blocks as a forked worker's error would
        os._exit(0)
    assert not lock_path(out).exists()
