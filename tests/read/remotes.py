"""Real remotes on 127.0.0.1 for tests: a folder served by `python -m http.server`, and moto's S3
server. Each is a context manager yielding a `Server` whose `requests()` lists what it answered
(method, path), read from the server's own access log.

    with http_server(folder, tmp_path / "http.log") as http:  # http.url: http://127.0.0.1:PORT
        ...
    with moto_s3(tmp_path / "s3.log", buckets=["store"]) as s3:  # s3.url: the endpoint URL
        ...  # credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=testing (S3_ENV)

And a real git + DVC project pushed to them (`remote_project`), which tests/read/conftest.py
builds once per session as the `project` fixture.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import yaml

__all__ = ["ONE", "PACK", "S3", "S3_ENV", "Server", "http_server", "moto_s3", "remote_project"]

# DVC's s3:// remotes are its dvc-s3 plugin's (`pip install dvc-s3`); without it, no S3 remote here
S3 = importlib.util.find_spec("dvc_s3") is not None
PACK = "data/packed/images.lmdb"
ONE = "data/one.lmdb"
STAGE = {
    "stages": {
        "pack": {
            # shards of 7 tiny images (32 kB files): many shards in a small pack
            "cmd": f"python -m imgpack.cli.main build raw {PACK} --shard-mb 0.0005",
            "deps": ["raw"],
            "outs": [{PACK: {"persist": True}}],  # v2 carries v1's shards over
        }
    }
}

# moto accepts any credentials; these are what a user's environment would hold
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')


@dataclass
class Server:
    url: str
    log: Path
    process: subprocess.Popen

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request answered so far, in order."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [(m.group(1), m.group(2)) for m in _REQUEST.finditer(text)]

    def requests_since(self, mark: int) -> list[tuple[str, str]]:
        return self.requests()[mark:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start (exit code {process.poll()})") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def http_server(folder: Path, log: Path, slow: Path | None = None) -> Iterator[Server]:
    """`python -m http.server`'s handler serving `folder` (read-only) on a free port of
    127.0.0.1; the paths listed in the file `slow` (if given, read at every request) are sent
    slowly (8 s: see httpd.py)."""
    port = free_port()
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).with_name("httpd.py")), str(folder)]
            + [str(port)]
            + ([str(slow)] if slow is not None else []),
            stdout=subprocess.DEVNULL,
            stderr=errors,  # its access log
        )
    try:
        _wait_for(port, process, "python -m http.server")
        yield Server(f"http://127.0.0.1:{port}", log, process)
    finally:
        _stop(process)


@contextmanager
def moto_s3(log: Path, buckets: list[str] = ()) -> Iterator[Server]:
    """moto's S3 server on a free port of 127.0.0.1, with `buckets` created."""
    import boto3

    port = free_port()
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=errors,  # werkzeug's access log
        )
    try:
        _wait_for(port, process, "moto's S3 server")
        url = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield Server(url, log, process)
    finally:
        _stop(process)


def _files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@contextmanager
def remote_project(tmp: Path) -> Iterator[SimpleNamespace]:
    """A git+DVC project whose pack stage (`imgpack build`) ran twice, v1 (36 images in 6 shards)
    and v2 (12 more, in 2 new shards), each committed, tagged and pushed to a local folder (the
    default remote, `local`) and to S3 (`s3`, with dvc-s3); the folder is also the HTTP remote
    (`http`), whose server sends the paths listed in `slow` slowly. A one-file pack (`dvc add`)
    and a plain git file sit beside. Yields root, remote, http, s3, slow, packs ({tag: {file
    name: bytes}}) and one (the one-file pack's bytes)."""
    from imgpack.write.build import build
    from tests.conftest import dvc, git, png_bytes, write_tree

    root, remote = tmp / "project", tmp / "remote"
    remote.mkdir()
    slow = tmp / "slow-paths"
    slow.write_text("")
    saved = {name: os.environ.get(name) for name in (*S3_ENV, "IMGPACK_STATE")}
    os.environ.update({**S3_ENV, "IMGPACK_STATE": str(tmp / "state")})
    try:
        with contextlib.ExitStack() as servers:
            http = servers.enter_context(http_server(remote, tmp / "http.log", slow))
            s3 = servers.enter_context(moto_s3(tmp / "s3.log", ["store"])) if S3 else None
            images = {
                f"{label}/{n}.png": png_bytes(6 + n, 5, label * 40 + n)
                for label in range(3)
                for n in range(12)
            }
            write_tree(root / "raw", images)
            build(root / "raw", root / ONE)  # small enough for one file
            (root / "notes.txt").write_text("a plain git file\n")
            (root / "dvc.yaml").write_text(yaml.safe_dump(STAGE, sort_keys=False))
            git("init", "-q", cwd=root)
            dvc("init", "-q", cwd=root)
            dvc("config", "core.analytics", "false", cwd=root)
            dvc("remote", "add", "-d", "local", str(remote), cwd=root)
            dvc("remote", "add", "http", http.url, cwd=root)
            if s3:
                dvc("remote", "add", "s3", "s3://store/dvc", cwd=root)
                dvc("remote", "modify", "s3", "endpointurl", s3.url, cwd=root)
            dvc("add", ONE, cwd=root)
            packs = {}
            for tag in ("v1", "v2"):
                if tag == "v2":
                    write_tree(
                        root / "raw",
                        {f"3/{n}.png": png_bytes(5, 6 + n, 200 + n) for n in range(12)},
                    )
                dvc("repro", cwd=root)
                git("add", "-A", cwd=root)
                git("commit", "-qm", tag, cwd=root)
                git("tag", tag, cwd=root)
                dvc("push", cwd=root)
                if s3:
                    dvc("push", "-r", "s3", cwd=root)
                packs[tag] = _files_of(root / PACK)
            yield SimpleNamespace(
                root=root,
                remote=remote,
                http=http,
                s3=s3,
                slow=slow,
                packs=packs,
                one=(root / ONE).read_bytes(),
            )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
