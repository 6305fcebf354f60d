"""Shared fixtures: file trees in one call, real sample images, real packs, real DVC projects."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from imgpack.params import PackParams
from imgpack.sample import make as make_sample
from imgpack.write.build import build

MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist_png.tar.gz"
# (the checkout sits beside shared/, as /work/main does)


@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> Path:
    """The 70,000 MNIST PNGs (training/, testing/ and the im2rec .ctl lists), unpacked once."""
    import tarfile

    if not MNIST.exists():
        pytest.skip(f"{MNIST} not found (shared/ beside the checkout)")
    out = tmp_path_factory.mktemp("mnist")
    with tarfile.open(MNIST) as archive:
        archive.extractall(out, filter="data")
    return out


def digit_pngs(out: Path, counts: dict[int, int], seed: int = 0) -> Path:
    """28x28 grayscale PNGs of drawn digits in ImageFolder layout (`counts`: digit -> images),
    each made distinct by a few random pixels: MNIST's shape, without needing shared/."""
    import random

    rng = random.Random(seed)
    for digit, count in counts.items():
        (out / str(digit)).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            image = Image.new("L", (28, 28), 0)
            ImageDraw.Draw(image).text((rng.randint(6, 16), rng.randint(4, 12)), str(digit), 255)
            for _ in range(4):
                image.putpixel((rng.randrange(28), rng.randrange(28)), rng.randrange(256))
            image.save(out / str(digit) / f"{n:05d}.png", "PNG")
    return out


@pytest.fixture(scope="session")
def many_digits(tmp_path_factory) -> Path:
    """10,000 drawn-digit PNGs in 10 folders: a build of them takes a few seconds."""
    return digit_pngs(tmp_path_factory.mktemp("many-digits"), dict.fromkeys(range(10), 1000))


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: two test processes on a small machine, at most four on a big one (each test may
    start a build with workers of its own)."""
    return max(2, min(4, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def private_state(tmp_path_factory, monkeypatch):
    """Each test remembers (ingest cache, validated shards) in its own place, never the user's."""
    monkeypatch.setenv("IMGPACK_STATE", str(tmp_path_factory.mktemp("state")))


REPO = Path(__file__).resolve().parents[1]


def png_bytes(width: int = 8, height: int = 6, shade: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), shade).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(width: int = 8, height: int = 6, shade: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 0, 0)).save(out, "JPEG")
    return out.getvalue()


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Create every file of `files` ({relative path: content}) under root; returns root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


@pytest.fixture
def tree(tmp_path):
    return lambda files, name="raw": write_tree(tmp_path / name, files)


@pytest.fixture
def digits_tree(tmp_path) -> Path:
    """An ImageFolder-layout tree: 3 labels x 4 distinct PNGs, plus a JPEG."""
    files = {
        f"{label}/{n}.png": png_bytes(6 + n, 5, shade=label * 40 + n)
        for label in range(3)
        for n in range(4)
    }
    files["2/extra.jpg"] = jpeg_bytes(9, 7, shade=200)
    return write_tree(tmp_path / "digits", files)


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory) -> Path:
    """The committed sample generator's output: PNG+JPEG shapes and labels.csv with a bbox column."""
    out = tmp_path_factory.mktemp("sample")
    make_sample(out, per_shape=12, seed=1)
    return out


SHARDED = PackParams(shard_mb=0.002)  # the 13 kB sample in about six shards


@pytest.fixture(scope="session")
def sample_file_pack(sample_raw, tmp_path_factory) -> Path:
    """The sample as a one-file pack."""
    out = tmp_path_factory.mktemp("packs") / "sample.lmdb"
    build(sample_raw / "images", out, labels=sample_raw / "labels.csv")
    return out


@pytest.fixture(scope="session")
def sample_sharded_pack(sample_raw, tmp_path_factory) -> Path:
    """The same inputs as a folder of a catalog and several shards."""
    out = tmp_path_factory.mktemp("packs") / "sharded.lmdb"
    build(sample_raw / "images", out, labels=sample_raw / "labels.csv", pack_params=SHARDED)
    assert len(os.listdir(out)) > 3
    return out


@pytest.fixture(params=["one file", "shards"])
def sample_pack(request) -> Path:
    """Every test of reading runs on both layouts: they must read exactly alike."""
    name = "sample_file_pack" if request.param == "one file" else "sample_sharded_pack"
    return request.getfixturevalue(name)


def pack_state(path: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file of a pack (one file or a folder)."""
    files = [path] if path.is_file() else sorted(path.iterdir())
    return {f.name: (f.read_bytes(), os.stat(f).st_mtime_ns) for f in files}


def copy_pack(path: Path, to: Path) -> Path:
    if path.is_dir():
        return Path(shutil.copytree(path, to))
    return Path(shutil.copyfile(path, to))


def source_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- real dvc and git in a temporary repository ------------------------------------------------------
def tool_env() -> dict[str, str]:
    """PATH with this interpreter's bin first, so stage commands run the `python` under test."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t.invalid",
        DVC_NO_ANALYTICS="1",
        CI="true",
    )
    return env


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def imgpack_cli(*args, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `imgpack` command in a subprocess; with `check`, it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", *map(str, args)],
        env=tool_env(),
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(["git", *args], cwd)


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """This repository's pipeline (dvc.yaml, params.yaml, src/) over a small sample, in a fresh git+dvc repo."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "plots", project / "plots")  # the plot templates dvc.yaml names
    shutil.copytree(
        REPO / "src" / "imgpack",
        project / "src" / "imgpack",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    make_sample(project / "data" / "raw", per_shape=8, seed=2)
    git("init", "-q", cwd=project)
    dvc("init", "-q", cwd=project)
    dvc("config", "core.analytics", "false", cwd=project)
    shutil.copy(REPO / ".dvcignore", project / ".dvcignore")  # after init, which writes its own
    git("add", "-A", cwd=project)
    git("commit", "-qm", "init", cwd=project)
    return project


def write_pack(out: Path, keys, value=b"v" * 5000, shard_mb: float = 64, **options) -> dict:
    """A pack of the sorted `keys` (or `k00000`, `k00001`, ... for a count) by the pack writer."""
    import hashlib

    from imgpack.write.builder import PackBuilder
    from imgpack.write.layout import ShardLayout, default_map_size

    keys = [f"k{i:05d}" for i in range(keys)] if isinstance(keys, int) else sorted(keys)
    values = value if callable(value) else (lambda i: value)
    shard_bytes = int(shard_mb * (1 << 20))
    layout = ShardLayout(
        shard_bytes,
        options.get("map_size") or default_map_size(shard_bytes),
        options.get("batch_bytes", 32 << 20),
    )
    with PackBuilder(out, "sha256", layout) as builder:
        for i, key in enumerate(keys):
            data = values(i)
            builder.add(
                key,
                data,
                digest=hashlib.sha256(data).digest(),
                format="PNG",
                width=1,
                height=1,
                label="x",
                split="train",
                extra={},
            )
        header = builder.publish()
        header["grown"] = builder.grown
    return header


def flip_byte_of(pack_path: Path, key: str) -> Path:
    """Flip the middle byte of `key`'s stored image in its shard file (tests only: the product
    never writes a pack); returns the file changed."""
    import imgpack

    with imgpack.open(pack_path) as pack:
        index = pack.index_of(key)
        table = pack.locate()
        shard = 0 if table.shard_of is None else table.shard_of[index]
        file = pack.shard_paths[shard]
        at = (table.starts[index] + table.ends[index]) // 2
    # A copy, not an in-place write: a DVC cache linked to the file must stay intact.
    raw = bytearray(file.read_bytes())
    raw[at] ^= 0xFF
    file.unlink()
    file.write_bytes(bytes(raw))
    return file


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (workers sit under the forkserver, under the build)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task") if os.path.exists(f"/proc/{parent}") else []:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = {int(c) for c in handle.read().split()}
            except OSError:
                continue
            found |= children
            todo.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False
