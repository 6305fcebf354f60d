"""A damaged state file of ingest (its cache, its record of the last run) is found, named in one
warning and made again: the run after it reads nothing again, and no later run warns."""

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import png_bytes, tool_env, write_tree

COUNT = 300
SCRIPT = (
    "import sys\n"
    "from imgpack.ingest.run import ingest\n"
    "print(ingest(sys.argv[1], sys.argv[2]).read)\n"
)


def state() -> Path:
    return Path(tool_env()["IMGPACK_STATE"])


def run_ingest(raw: Path, manifest: Path) -> tuple[int, list[str]]:
    """Files read by the real ingest function in a process of its own, and its lines of warning."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(raw), str(manifest)],
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout), [line for line in result.stderr.splitlines() if "imgpack" in line]


def garbage(path: Path) -> None:
    path.write_bytes(b"\x13 not a database, nor anything else \xff" * 300)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def another_table(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE files (key TEXT PRIMARY KEY, outcome BLOB)")
        db.execute("INSERT INTO files VALUES ('0/0.png', x'00')")
    db.close()


@pytest.mark.parametrize("damage", [garbage, truncated, another_table], ids=lambda f: f.__name__)
def test_a_damaged_ingest_cache_is_rebuilt_with_one_warning_and_then_spares_reads(tmp_path, damage):
    raw = write_tree(
        tmp_path / "raw",
        {f"{n % 3}/{n}.png": png_bytes(8 + n % 17, 6, shade=n % 251) for n in range(COUNT)},
    )
    time.sleep(2.1)  # older than the racy window: what a run learns of each file is remembered
    manifest = tmp_path / "m.jsonl"
    assert run_ingest(raw, manifest) == (COUNT, [])
    expected = manifest.read_bytes()
    [cache] = state().glob("ingest-*.sqlite")
    assert cache.stat().st_size > 8192  # pages past the first: cut in half, it is malformed
    damage(cache)

    read, warnings = run_ingest(raw, manifest)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"imgpack: warning: {cache}: ingest's cache was damaged (")
    assert warnings[0].endswith("); rebuilt it (this run reads every file once)")
    assert read == COUNT and manifest.read_bytes() == expected

    assert run_ingest(raw, manifest) == (0, [])  # rebuilt and remembered: nothing read again
    assert manifest.read_bytes() == expected


def test_a_damaged_record_of_ingests_last_run_is_rebuilt_with_one_warning(tmp_path):
    raw = write_tree(tmp_path / "raw", {f"{n % 2}/{n}.png": png_bytes(6 + n, 6) for n in range(12)})
    time.sleep(2.1)
    params = tmp_path / "params.yaml"
    params.write_text(f"ingest:\n  folder: {raw}\n  labels: ''\n")
    manifest, report = tmp_path / "manifest.jsonl", tmp_path / "ingest.json"
    stage = [sys.executable, "-m", "imgpack.stages.ingest", "--params", str(params)]
    stage += ["--manifest", str(manifest), "--report", str(report)]

    def run_stage() -> tuple[str, list[str]]:
        result = subprocess.run(stage, env=tool_env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout, [line for line in result.stderr.splitlines() if "imgpack" in line]

    assert run_stage()[1] == []
    [record] = state().glob("ingest-outputs-*.json")
    saved = json.loads(record.read_text())
    record.write_text(json.dumps(saved)[:-40])  # cut short, as by a full disk

    out, warnings = run_stage()
    assert warnings == [
        f"imgpack: warning: {record}: ingest's record of its last run was damaged (not JSON: "
        f"{_json_error(json.dumps(saved)[:-40])}); rebuilt it (this run does ingest's work in full)"
    ]
    assert "ingested 12 of 12 files" in out and "0 read" in out  # its cache spared the reads
    rebuilt = json.loads(record.read_text())
    assert [rebuilt[k] for k in ("head", "fingerprint")] == [saved["head"], saved["fingerprint"]]
    before = manifest.stat().st_mtime_ns
    assert run_stage()[1] == []  # a no-change rerun again: nothing written, no warning
    assert manifest.stat().st_mtime_ns == before


def _json_error(text: str) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("valid JSON")
