"""A file the operating system would not give (permission denied, gone, a read error) is
skipped and reported for that run only: never remembered, so once it is readable again the next
run reads it and packs it.

The file itself never changes (its stat stays the same, which is what the ingest cache and the
input snapshot key on): the process does. Its permission bits are 000, and the first run is a
process they apply to, the second one that may override them. As root (where `chmod 000` alone
stops nothing), the first run's process drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its
capability bounding set before exec; the second is plain root. As a normal user, the first run
is plain; the second runs in a user namespace in which it is root over the user's own files.
Either way the first run's open() fails with a real EACCES in a real process.
"""

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

import imgpack
from tests.conftest import pack_state, png_bytes, tool_env, write_tree

LOCKED = "1/locked.png"
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2
_CLONE_NEWUSER = 0x10000000


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def _bound_by_permission_bits() -> None:
    """(root, in the child before exec) No capability to override file permission bits."""
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        _libc_call("prctl", _PR_CAPBSET_DROP, cap, 0, 0, 0)


def _root_over_own_files(uid: int, gid: int):
    """(a normal user, in the child before exec) A user namespace where the child is root over
    the files of `uid`: it may read them whatever their permission bits."""

    def enter() -> None:
        _libc_call("unshare", _CLONE_NEWUSER)
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"0 {gid} 1")

    return enter


def _denied_and_allowed(locked):
    """(preexec of a process that cannot read `locked`, preexec of one that can); skips the test
    where this machine cannot make both."""
    if os.geteuid() == 0:
        denied, allowed = _bound_by_permission_bits, None
    else:
        denied, allowed = None, _root_over_own_files(os.getuid(), os.getgid())
    probe = [sys.executable, "-c", "import sys; open(sys.argv[1], 'rb').read()", str(locked)]
    try:
        can_deny = subprocess.run(probe, preexec_fn=denied, capture_output=True).returncode != 0
        can_allow = subprocess.run(probe, preexec_fn=allowed, capture_output=True).returncode == 0
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run a process with other file permissions here: {exc}")
    if not (can_deny and can_allow):
        pytest.skip("cannot make a file unreadable to one process and readable to the next here")
    return denied, allowed


def _run(args, preexec, cwd):
    result = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        env=tool_env(),
        capture_output=True,
        text=True,
        cwd=cwd,
        preexec_fn=preexec,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("first", ["ingest stage", "fresh build"])
def test_a_file_unreadable_in_one_run_is_read_and_packed_by_the_next_once_readable(tmp_path, first):
    files = {
        f"{d}/{n}.png": png_bytes(6 + n, 5 + d, shade=20 * n + d)
        for d in (0, 1)
        for n in (0, 1, 2, 3)
    }
    files[LOCKED] = png_bytes(9, 9, shade=99)
    raw = write_tree(tmp_path / "raw", files)
    (raw / LOCKED).chmod(0)
    denied, allowed = _denied_and_allowed(raw / LOCKED)
    time.sleep(2.1)  # older than the racy window: what a run learns of each file is remembered
    params = tmp_path / "params.yaml"
    params.write_text(
        f"ingest:\n  folder: {raw}\n  labels: ''\n  workers: 2\npack:\n  workers: 2\n"
    )
    manifest, report = tmp_path / "manifest.jsonl", tmp_path / "ingest.json"
    stage = ["imgpack.stages.ingest", "--params", params, "--manifest", manifest]
    stage += ["--report", report]

    # First run: the file cannot be read. It is skipped and reported, the others are packed.
    if first == "ingest stage":
        _run(stage, denied, tmp_path)
        seen = json.loads(report.read_text())
    else:
        first_report = tmp_path / "first.json"
        build = ["imgpack.cli.main", "build", raw, tmp_path / "first.lmdb", "--fresh"]
        _run([*build, "--workers", "2", "--report", first_report], denied, tmp_path)
        seen = json.loads(first_report.read_text())
    assert seen["packed"] == 8 and seen["skipped_by_reason"] == {"corrupt": 1}
    [skipped] = seen["skipped_files"]
    assert skipped["path"] == LOCKED
    assert skipped["detail"].startswith("unreadable (Permission denied)")

    # Second run: readable now, unchanged. It is read, and the pack holds it.
    done = _run(stage, allowed, tmp_path)
    seen = json.loads(report.read_text())
    assert (seen["packed"], seen["skipped"], seen["discovered"]) == (9, 0, 9), done.stdout
    assert seen["read"] >= 1
    staged = tmp_path / "staged.lmdb"
    pack = ["imgpack.stages.pack", "--params", params, "--manifest", manifest, "--out", staged]
    _run(pack, allowed, tmp_path)
    fresh = tmp_path / "fresh.lmdb"
    _run(["imgpack.cli.main", "build", raw, fresh, "--fresh"], allowed, tmp_path)
    with imgpack.open(staged) as packed:
        assert packed[LOCKED].data == files[LOCKED] and len(packed) == 9
    assert contents(staged) == contents(fresh)
    # What the first run's report said of it: what happened, and what to do.
    assert skipped["detail"] == (
        "unreadable (Permission denied); skipped this run only, not remembered: "
        "make it readable to the user running imgpack and rerun"
    )


def contents(pack):
    """Each file of a pack, by name inside a folder pack, and a one-file pack's bytes."""
    state = pack_state(pack)
    return {name if pack.is_dir() else "": data for name, (data, _) in state.items()}


def test_a_file_gone_since_it_was_listed_is_skipped_this_run_only_with_a_hint(tmp_path):
    from imgpack.ingest.examine import examine

    gone = tmp_path / "gone.png"  # listed by the walk, then deleted before it was read
    outcome, digest, data = examine(str(gone), hashlib.sha256, 10**8, size=120)
    assert (outcome.ok, outcome.kind, outcome.transient, digest, data) == (
        False,
        "corrupt",
        True,
        None,
        None,
    )
    assert "moved or deleted while being read" in outcome.detail


def test_any_other_read_error_is_skipped_this_run_only_naming_the_error(tmp_path):
    from imgpack.ingest.examine import examine

    folder = tmp_path / "not-a-file.png"  # replaced by a folder since it was listed: EISDIR
    folder.mkdir()
    outcome, _, _ = examine(str(folder), hashlib.sha256, 10**8, size=120)
    assert (outcome.kind, outcome.transient) == ("corrupt", True)
    assert "Is a directory" in outcome.detail and "check the disk or file system" in outcome.detail
