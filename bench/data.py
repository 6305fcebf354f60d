"""Benchmark inputs, made at run time under bench/work/: MNIST, photo-sized JPEGs, scaled copies."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work"
MNIST_TAR = ROOT.parent.parent / "shared" / "datasets" / "mnist_png.tar.gz"


def mnist(limit_per_label: int | None = None) -> Path:
    """The 60,000 training PNGs (or the first `limit_per_label` of each digit), unpacked once."""
    full = WORK / "mnist"
    if not (full / "training").is_dir():
        if not MNIST_TAR.exists():
            raise SystemExit(f"{MNIST_TAR} not found: the benchmark needs ../shared/datasets")
        full.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xzf", str(MNIST_TAR), "-C", str(full)], check=True)
    if limit_per_label is None:
        return full / "training"
    small = WORK / f"mnist-{limit_per_label}"
    if not small.is_dir():
        for label in sorted(os.listdir(full / "training")):
            source = full / "training" / label
            if not source.is_dir():
                continue
            (small / label).mkdir(parents=True)
            for name in sorted(os.listdir(source))[:limit_per_label]:
                os.link(source / name, small / label / name)
    return small


def photos(count: int, size: tuple[int, int] = (1024, 768)) -> Path:
    """Synthetic photo-like JPEGs of about 100 KB (smooth shapes plus grain), 4 labels."""
    from PIL import Image, ImageDraw, ImageFilter

    out = WORK / f"photos-{count}"
    if out.is_dir():
        return out
    rng = random.Random(0)
    noise = Image.effect_noise(size, 24).convert("RGB")
    for i in range(count):
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        pen = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            r = rng.randrange(40, 300)
            pen.ellipse(
                (x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3))
            )
        image = Image.blend(image.filter(ImageFilter.GaussianBlur(3)), noise, 0.16)
        label = f"class{i % 4}"
        (out / label).mkdir(parents=True, exist_ok=True)
        image.save(out / label / f"{i:05d}.jpg", "JPEG", quality=85)
    return out


def _with_text_chunk(png: bytes, text: bytes) -> bytes:
    """The same image with a tEXt chunk before IEND: distinct bytes, still a valid PNG."""
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return png[:-12] + chunk + png[-12:]


def scaled(base: Path, factor: int) -> Path:
    """`factor` copies of `base` side by side, each copy's files made distinct."""
    if factor == 1:
        return base
    out = WORK / f"{base.name}-x{factor}"
    if out.is_dir():
        return out
    for copy in range(factor):
        for label in sorted(os.listdir(base)):
            if not (base / label).is_dir():
                continue
            target = out / f"copy{copy}" / label
            target.mkdir(parents=True)
            for name in os.listdir(base / label):
                data = (base / label / name).read_bytes()
                if copy:
                    data = _with_text_chunk(data, b"copy\0" + str(copy).encode())
                (target / name).write_bytes(data)
    return out


def copies(base: Path, factor: int) -> Path:
    """`factor` identical copies of `base` (hard links): every image `factor` times."""
    out = WORK / f"{base.name}-copies{factor}"
    if out.is_dir():
        return out
    for copy in range(factor):
        for label in sorted(os.listdir(base)):
            if (base / label).is_dir():
                shutil.copytree(base / label, out / f"copy{copy}" / label, copy_function=os.link)
    return out


def image_paths(raw: str | Path) -> list[str]:
    """Every PNG/JPEG under `raw`, sorted: what each contender packs."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(raw)
        for name in names
        if name.lower().endswith((".png", ".jpg", ".jpeg"))
    )


def warm(raw: str | Path) -> None:
    """Read every image once, so that no contender pays for a cold page cache (the first one
    timed would otherwise warm it for all the others)."""
    for path in image_paths(raw):
        with open(path, "rb") as handle:
            handle.read()


def allocated_bytes(path: Path) -> int:
    """Disk blocks in use, as `du` counts them."""
    if path.is_file():
        return os.stat(path).st_blocks * 512
    return sum(
        os.lstat(os.path.join(root, name)).st_blocks * 512
        for root, _, names in os.walk(path)
        for name in names
    ) + sum(
        os.lstat(os.path.join(root, d)).st_blocks * 512
        for root, dirs, _ in os.walk(path)
        for d in dirs
    )
