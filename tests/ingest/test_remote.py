"""Raw images on object storage: a real S3 API on 127.0.0.1 (moto's server), read through fsspec."""

import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import imgpack_cli as imgpack
from tests.conftest import pack_state, png_bytes, write_tree

pytestmark = pytest.mark.slow
s3fs = pytest.importorskip("s3fs")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A bucket on moto's standalone S3 server; credentials and endpoint from the environment,
    as a user's would come (never from params)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto's S3 server did not start"
            time.sleep(0.1)
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    fs.mkdir("images")
    yield fs
    server.terminate()
    server.wait(timeout=10)


def test_a_build_from_s3_equals_the_build_from_the_same_files_on_disk(s3, tmp_path):
    files = {
        f"{label}/{n:03d}.png": png_bytes(6 + n % 9, 5 + label, shade=(7 * n + label) % 250)
        for label in range(3)
        for n in range(60)
    }
    files["notes/readme.txt"] = b"not an image"
    local = write_tree(tmp_path / "raw", files)
    s3.put(str(local) + "/", "images/set1/", recursive=True)

    on_disk, from_s3 = tmp_path / "disk.lmdb", tmp_path / "s3.lmdb"
    options = ("--shard-mb", "0.005", "--report")
    disk_report = imgpack("build", local, on_disk, *options, tmp_path / "disk.json").stdout
    s3_report = imgpack("build", "s3://images/set1", from_s3, *options, tmp_path / "s3.json")
    assert "packed 180 of 181 files" in disk_report and "packed 180 of 181" in s3_report.stdout
    assert "skipped notes/readme.txt: not_image" in s3_report.stdout
    disk_files = {n: d for n, (d, _) in pack_state(on_disk).items()}
    assert len(disk_files) > 3 and {n: d for n, (d, _) in pack_state(from_s3).items()} == disk_files


def test_an_s3_prefix_with_nothing_under_it_is_a_clear_error(s3, tmp_path):
    failed = imgpack("build", "s3://images/nothing-here", tmp_path / "p.lmdb", check=False)
    assert failed.returncode == 1
    assert "s3://images/nothing-here: no objects under this prefix" in failed.stderr
    assert not (tmp_path / "p.lmdb").exists()
