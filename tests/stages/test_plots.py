"""Every DVC plot rendered as a person sees it: `dvc plots show --json` -> Vega-Lite -> SVG and PNG."""

import csv
import io
import json
import re

import pytest
import vl_convert
from PIL import Image

from tests.conftest import dvc
from tests.stages.test_dvc_pipeline import set_param

pytestmark = pytest.mark.slow
BAR_BLUE = (0x4C, 0x78, 0xA8)


def marks(svg: str, role: str) -> list[dict]:
    """Each bar or point: its aria-label fields and its geometry (x, y, width, height)."""
    found = []
    for element in re.findall(rf'<path[^>]*aria-roledescription="{role}"[^>]*>', svg):
        label = re.search(r'aria-label="([^"]*)"', element).group(1)
        fields = dict(part.split(": ", 1) for part in label.split("; "))
        x, y, w, h = (
            (
                float(v)
                for v in re.match(
                    r"M(-?[\d.]+),(-?[\d.]+)h(-?[\d.]+)v(-?[\d.]+)",
                    re.search(r'd="([^"]*)"', element).group(1),
                ).groups()
            )
            if role == "bar"
            else (0, 0, 0, 0)
        )
        found.append({**fields, "x": x, "y": y, "width": w, "height": h})
    return found


@pytest.fixture
def rendered(dvc_project, tmp_path):
    """The pipeline on uneven labels (5 circles, 7 squares, 8 triangles), every plot rendered."""
    set_param(dvc_project, "ingest", "labels", "")
    dvc_yaml = dvc_project / "dvc.yaml"  # as the README says for folder labels
    dvc_yaml.write_text(
        "".join(
            line for line in dvc_yaml.read_text().splitlines(True) if "${ingest.labels}" not in line
        )
    )
    images = dvc_project / "data/raw/images"
    for name in (
        "circle/circle_000",
        "circle/circle_001",
        "circle/circle_002",
        "square/square_000",
    ):
        next(images.glob(name + ".*")).unlink()
    dvc("repro", cwd=dvc_project)
    shown = json.loads(dvc("plots", "show", "--json", cwd=dvc_project).stdout)
    assert not shown.get("errors"), shown["errors"]
    out = {}
    for name, plots in shown["data"].items():
        spec = plots[0]["content"]
        png = vl_convert.vegalite_to_png(spec, scale=1)
        (tmp_path / (name.split("/")[-1] + ".png")).write_bytes(png)
        with open(dvc_project / name) as handle:
            rows = list(csv.DictReader(handle))
        out[name.split("/")[-1][:-4]] = (
            vl_convert.vegalite_to_svg(spec),
            Image.open(io.BytesIO(png)),
            rows,
        )
    return out


def blue_pixels(image: Image.Image) -> int:
    import numpy as np

    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return int((pixels == BAR_BLUE).all(axis=1).sum())


def test_images_per_label_draws_one_bar_per_label_as_long_as_its_count(rendered):
    svg, png, rows = rendered["images_per_label"]
    bars = marks(svg, "bar")
    assert sorted(b["label"] for b in bars) == ["circle", "square", "triangle"]
    counts = {r["label"]: int(r["count"]) for r in rows}
    assert counts == {"circle": 5, "square": 7, "triangle": 8}
    widths = {b["label"]: b["width"] for b in bars}
    assert widths["circle"] < widths["square"] < widths["triangle"]
    assert all(b["x"] == 0 for b in bars)  # bars start at zero: lengths are proportional
    assert widths["triangle"] / widths["circle"] == pytest.approx(8 / 5, rel=0.02)
    assert blue_pixels(png) > 1000  # the picture has bars in it


def test_the_size_histogram_has_sizes_on_the_category_axis_and_counts_as_lengths(rendered):
    svg, png, rows = rendered["image_sizes"]
    bars = marks(svg, "bar")
    size_key = next(k for k in bars[0] if k.startswith("file size"))
    assert len(bars) == len(rows) > 3
    by_size = sorted(bars, key=lambda b: int(b[size_key]))
    assert [b["y"] for b in by_size] == sorted(b["y"] for b in bars)  # ascending down the axis
    expected = {int(r["size_bytes"]): int(r["count"]) for r in rows}
    largest = max(expected.values())
    biggest = max(b["width"] for b in bars)
    for bar in bars:
        assert int(bar["images"]) == expected[int(bar[size_key])]
        assert bar["width"] == pytest.approx(biggest * int(bar["images"]) / largest, abs=0.6)
    assert blue_pixels(png) > 200


def test_images_per_split_and_label_has_a_bar_per_pair(rendered):
    svg, png, rows = rendered["images_per_split"]
    bars = marks(svg, "bar")
    assert sorted((b["split"], b["label"], int(b["images"])) for b in bars) == sorted(
        (r["split"], r["label"], int(r["count"])) for r in rows
    )
    assert sum(int(r["count"]) for r in rows) == 20 and png.size[0] > 300


def test_width_by_height_shows_one_point_per_size(rendered):
    svg, png, rows = rendered["image_dimensions"]
    points = marks(svg, "circle")
    assert len(points) == len(rows) >= 2
    assert sorted((int(p["width (px)"]), int(p["height (px)"])) for p in points) == sorted(
        (int(r["width"]), int(r["height"])) for r in rows
    )
    assert png.size[0] > 300


def test_the_summary_is_a_few_top_level_numbers(dvc_project):
    dvc("repro", cwd=dvc_project)
    summary = json.loads((dvc_project / "reports/summary.json").read_text())
    assert len(summary) <= 12 and all(isinstance(v, (int, float)) for v in summary.values())
    shown = dvc("metrics", "show", cwd=dvc_project).stdout
    assert max(len(line) for line in shown.splitlines()) < 250
