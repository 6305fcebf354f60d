"""Real remotes on 127.0.0.1 for tests: a folder served by `python -m http.server`, and moto's S3
server. Each is a context manager yielding a `Server` whose `requests()` lists what it answered
(method, path), read from the server's own access log.

    with http_server(folder, tmp_path / "http.log") as http:  # http.url: http://127.0.0.1:PORT
        ...
    with moto_s3(tmp_path / "s3.log", buckets=["store"]) as s3:  # s3.url: the endpoint URL
        ...  # credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=testing (S3_ENV)
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["S3_ENV", "Server", "http_server", "moto_s3"]

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
def http_server(folder: Path, log: Path) -> Iterator[Server]:
    """`python -m http.server` serving `folder` (read-only) on a free port of 127.0.0.1."""
    port = free_port()
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1"]
            + ["--directory", str(folder), str(port)],
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
