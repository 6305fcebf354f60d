"""Make the sample dataset committed under data/raw/: labelled shapes (PNG, JPEG) and labels.csv with bboxes."""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = ((220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 180, 30))


def draw(
    shape: str, rng: random.Random, size: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    image = Image.new("RGB", (size, size), (245, 245, 240))
    pen = ImageDraw.Draw(image)
    extent = rng.randint(size // 3, size - 8)
    x0, y0 = rng.randint(2, size - extent - 2), rng.randint(2, size - extent - 2)
    box = (x0, y0, x0 + extent, y0 + extent)
    colour = rng.choice(COLOURS)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon(
            [(x0 + extent // 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=colour
        )
    return image, box


def make(out: Path, per_shape: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    images = out / "images"
    rows = []
    for shape in SHAPES:
        (images / shape).mkdir(parents=True, exist_ok=True)
        for n in range(per_shape):
            image, box = draw(shape, rng, rng.choice((24, 32, 40)))
            if n % 3 == 0:
                name = f"{shape}/{shape}_{n:03d}.jpg"
                image.save(images / name, "JPEG", quality=70)
            else:
                name = f"{shape}/{shape}_{n:03d}.png"
                image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(
                    images / name, optimize=True
                )
            rows.append({"path": name, "label": shape, "bbox": " ".join(map(str, box))})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "bbox"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("data/raw"))
    parser.add_argument("--per-shape", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make(args.out, args.per_shape, args.seed)
