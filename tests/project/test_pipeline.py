"""In a real git + DVC project, the stages init writes build, validate, summarize and plot the pack."""

import json
import shutil

import pytest
import vl_convert
import yaml

import imgpack
from imgpack.params import flow, written_format
from imgpack.project.init import init_project
from tests.conftest import dvc, git, source_files
from tests.project.conftest import RAW, new_repository
from tests.stages.test_dvc_pipeline import sha256, stages_run
from tests.stages.test_plots import blue_pixels, marks

pytestmark = pytest.mark.slow
PACK = "data/packed/images.lmdb"
ALL = ["ingest", "pack", "validate", "summarize"]
COUNTS = {str(d): 10 + 2 * d for d in range(10)}  # the digits fixture's images per label


def render(project, shown_json: str | None = None) -> dict[str, tuple[str, object, list[dict]]]:
    """Every plot of `dvc plots show --json` as SVG, PNG and the rows DVC read, by file name."""
    import csv
    import io

    from PIL import Image

    shown = json.loads(shown_json or dvc("plots", "show", "--json", cwd=project).stdout)
    assert not shown.get("errors"), shown["errors"]
    out = {}
    for name, plots in shown["data"].items():
        spec = plots[0]["content"]
        with open(project / name) as handle:
            rows = list(csv.DictReader(handle))
        png = Image.open(io.BytesIO(vl_convert.vegalite_to_png(spec, scale=1)))
        out[name] = (vl_convert.vegalite_to_svg(spec), png, rows)
    return out


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """A new user's project: init, then `dvc repro`, once for the tests that only look."""
    project = new_repository(tmp_path_factory.mktemp("built") / "project")
    shutil.copytree(digits, project / RAW)
    init_project(project, folder=RAW, labels="")
    ran = dvc("repro", cwd=project)
    return project, ran


def test_repro_builds_validates_and_summarizes_the_pack(built):
    project, ran = built
    assert stages_run(ran.stdout) == ALL
    assert json.loads((project / "reports/validation.json").read_text())["ok"] is True
    assert json.loads((project / "reports/summary.json").read_text())["images"] == 190
    with imgpack.open(project / PACK) as pack:
        assert {r.key: r.data for r in pack} == source_files(project / RAW)
        assert pack.get("3/" + sorted((project / RAW / "3").iterdir())[0].name).label == "3"


def test_a_second_init_and_repro_change_nothing(built):
    project, _ = built
    assert init_project(project) == []
    assert stages_run(dvc("repro", cwd=project).stdout) == ["ingest"]
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {"ingest": ["always changed"]}


def test_git_sees_neither_the_raw_images_walked_by_dvc_nor_the_manifest(built):
    project, _ = built
    raw_file = next((project / RAW / "0").iterdir()).relative_to(project)
    ignored = dvc("check-ignore", "-d", str(raw_file), cwd=project).stdout
    assert ignored.startswith(".dvcignore:") and "/data/raw/images/" in ignored
    untracked = git("status", "--porcelain", "--untracked-files=all", cwd=project).stdout
    for hidden in ("data/interim/manifest.jsonl", "reports/ingest.json", PACK):
        assert hidden not in untracked
    assert "reports/summary.json" in untracked  # metrics stay in git, for dvc metrics diff


def test_all_four_plots_render_with_the_bars_the_pack_holds(built):
    project, _ = built
    plots = render(project)
    assert sorted(plots) == [
        f"reports/plots/{n}.csv"
        for n in ("image_dimensions", "image_sizes", "images_per_label", "images_per_split")
    ]
    svg, png, rows = plots["reports/plots/images_per_label.csv"]
    bars = marks(svg, "bar")
    assert {b["label"]: int(b["images"]) for b in bars} == COUNTS
    widths = {b["label"]: b["width"] for b in bars}
    assert widths["9"] / widths["0"] == pytest.approx(28 / 10, rel=0.02)
    assert blue_pixels(png) > 1000
    svg, png, rows = plots["reports/plots/images_per_split.csv"]
    assert sorted((b["split"], b["label"], int(b["images"])) for b in marks(svg, "bar")) == sorted(
        (r["split"], r["label"], int(r["count"])) for r in rows
    )
    svg, png, rows = plots["reports/plots/image_sizes.csv"]
    assert sum(int(b["images"]) for b in marks(svg, "bar")) == 190 and blue_pixels(png) > 200
    svg, png, rows = plots["reports/plots/image_dimensions.csv"]
    points = marks(svg, "circle")
    assert [(p["width (px)"], p["height (px)"]) for p in points] == [("28", "28")]
    assert png.size[0] > 300


def test_init_beside_the_users_own_stage_then_repro_runs_theirs_on_the_pack(project):
    count = "python -c \"import imgpack; print(len(imgpack.open('data/packed/images.lmdb')))\""
    user_stage = {"cmd": f"{count} > count.txt", "deps": [PACK], "outs": ["count.txt"]}
    (project / "dvc.yaml").write_text(
        "# the user's pipeline\n" + yaml.safe_dump({"stages": {"count": user_stage}})
    )
    init_project(project)
    assert list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"]) == ["count", *ALL]
    ran = stages_run(dvc("repro", cwd=project).stdout)
    assert sorted(ran) == sorted([*ALL, "count"]) and ran.index("count") > ran.index("pack")
    assert (project / "count.txt").read_text().strip() == "190"


def test_another_format_fails_in_one_line_until_init_records_this_ones(project):
    init_project(project)
    dvc("repro", cwd=project)
    built_sha = sha256(project / PACK)
    # The project as an imgpack writing format 2 left it: recorded in params.yaml and dvc.lock.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace(flow(written_format()), "{pack: 2, shard: 2}"))
    dvc("commit", "-f", cwd=project)

    failed = dvc("repro", cwd=project, check=False)
    assert failed.returncode != 0 and stages_run(failed.stdout) == ["ingest"]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("imgpack:")]
    assert errors == [
        "imgpack: error: params.yaml records pack format {pack: 2, shard: 2} (imgpack.format) "
        f'but this imgpack writes format {flow(written_format())}; run "imgpack init" to '
        "record it (the next dvc repro rebuilds the pack)"
    ]
    assert "Traceback" not in failed.stderr

    # Following the remedy: init records the format, and the next repro rebuilds the pack.
    assert [c.path for c in init_project(project)] == ["params.yaml"]
    # pack reruns (its format param changed) and comes out the same (the format it writes did
    # not): DVC skips validate and summarize
    assert stages_run(dvc("repro", cwd=project).stdout) == ["ingest", "pack"]
    assert sha256(project / PACK) == built_sha


def test_two_packs_live_in_one_project_under_a_prefix(project):
    scans = project / "scans"
    for digit in ("1", "7"):
        shutil.copytree(project / RAW / digit, scans / digit)
    init_project(project)
    init_project(project, folder="scans", prefix="scans")
    ran = stages_run(dvc("repro", cwd=project).stdout)
    assert sorted(ran) == sorted(ALL + [f"scans_{s}" for s in ALL])
    with imgpack.open(project / "data/packed/scans.lmdb") as pack:
        assert len(pack) == COUNTS["1"] + COUNTS["7"]
    with imgpack.open(project / PACK) as pack:
        assert len(pack) == 190
    assert len(render(project)) == 8
