"""The pipeline at a million images: `dvc repro` from scratch, with nothing changed, and after 1%
more images under random names, each against a cold `imgpack build` of the same folder."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.data import WORK, _with_text_chunk
from bench.dvc_ops import DVC, pipeline_project
from bench.timing import GNU_TIME, IMGPACK, env, median, run_process

_STAGE = re.compile(r"^Running stage '(\w+)'")


def _project(raw: Path) -> Path:
    """A DVC project of this repository's pipeline over `raw` (hard links), labels from folders."""
    project = WORK / "million-versions" / "project"

    def folder_labels(params: dict) -> None:
        params["ingest"]["labels"] = ""

    return pipeline_project(project, raw, project.with_name("remote"), folder_labels)


def _add(project: Path, donors: Path, count: int, tag: str) -> None:
    """`count` new distinct PNGs under random names, spread over the label folders."""
    rng = random.Random(tag)
    sources = sorted(donors.rglob("*.png"))
    folders = sorted(p for p in (project / "data/raw/images").glob("*/*") if p.is_dir())
    for i in range(count):
        data = _with_text_chunk(sources[i % len(sources)].read_bytes(), f"{tag}\0{i}".encode())
        (rng.choice(folders) / f"{rng.getrandbits(64):016x}.png").write_bytes(data)
    time.sleep(2.1)


def _repro(project: Path) -> dict:
    """One `dvc repro`: wall seconds, seconds per stage (from DVC's "Running stage" lines to the
    next), and the peak RSS of any one of its processes (GNU time's wait4 covers descendants)."""
    with tempfile.NamedTemporaryFile(mode="r") as rss:
        cmd = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name] if GNU_TIME else []
        start = time.perf_counter()
        process = subprocess.Popen(
            [*cmd, *DVC, "repro"],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        stages, current, began, lines = {}, None, start, []
        for raw in process.stdout:
            now, line = time.perf_counter(), raw.decode(errors="replace")
            lines.append(line)
            found = _STAGE.match(line)
            if found or line.startswith("Updating lock file"):
                if current is not None:
                    stages[current] = now - began
                current, began = (found.group(1) if found else None), now
        if process.wait() != 0:
            raise RuntimeError("dvc repro failed: " + "".join(lines)[-2000:])
        seconds = time.perf_counter() - start
        if current is not None:
            stages[current] = seconds - (began - start)
        peak = int(rss.read().strip().splitlines()[-1]) * 1024 if GNU_TIME else 0
    return {"seconds": seconds, "stages": stages, "peak_rss_mb": peak / 1e6}


def measure(raw: Path, donors: Path, runs: int, added: int) -> dict:
    """Per round: a cold build of `raw`; then in a new project from scratch, nothing changed,
    and `added` images more (taken from `donors`, made distinct)."""
    rows: dict[str, list[dict]] = {"scratch": [], "nothing changed": [], "1% added": []}
    builds = []
    out = WORK / "million-versions" / "build.lmdb"
    for number in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        builds.append(run_process([IMGPACK, "build", str(raw), str(out)])[0])
        shutil.rmtree(out, ignore_errors=True)
        project = _project(raw)
        with tempfile.TemporaryDirectory() as state:  # imgpack's state starts empty
            os.environ["IMGPACK_STATE"] = state
            try:
                rows["scratch"].append(_repro(project))
                rows["nothing changed"].append(_repro(project))
                _add(project, donors, added, f"round{number}")
                rows["1% added"].append(_repro(project))
            finally:
                del os.environ["IMGPACK_STATE"]
    build = median(builds)
    result = {"build_seconds": build, "build_runs": builds, "added": added, "steps": {}}
    for name, samples in rows.items():
        stage_names = sorted({s for sample in samples for s in sample["stages"]})
        result["steps"][name] = {
            "seconds": median([s["seconds"] for s in samples]),
            "runs": [s["seconds"] for s in samples],
            "over_build": median([s["seconds"] for s in samples]) / build,
            "stages": {
                stage: median([s["stages"].get(stage, 0.0) for s in samples])
                for stage in stage_names
            },
            "peak_rss_mb": max(s["peak_rss_mb"] for s in samples),
        }
    shutil.rmtree(WORK / "million-versions", ignore_errors=True)
    return result


def table(section: dict) -> list[str]:
    lines = [
        f"`dvc repro` of this repository's pipeline (labels from folder names), against a cold "
        f"`imgpack build` of the same folder ({section['build_seconds']:.1f} s):",
        "",
        "| step | median time | vs build | ingest | pack | validate | summarize | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, step in section["steps"].items():
        stages = step["stages"]
        cells = " | ".join(
            f"{stages[s]:.1f} s" if s in stages else "-"
            for s in ("ingest", "pack", "validate", "summarize")
        )
        label = f"{section['added']:,} images added" if name == "1% added" else name
        lines.append(
            f"| {label} | {step['seconds']:.1f} s | {step['over_build']:.2f}x | {cells} | "
            f"{step['peak_rss_mb']:.0f} MB |"
        )
    return [*lines, ""]


def targets(section: dict) -> list[tuple[str, float, str, bool]]:
    """Issue 25's: each step against the cold build, and every stage's peak RSS."""
    steps, out = section["steps"], []
    for name, limit in (("scratch", 1.3), ("nothing changed", 0.3), ("1% added", 0.5)):
        ratio = steps[name]["over_build"]
        out.append((f"1M: dvc repro, {name} / imgpack build", ratio, f"<= {limit}", ratio <= limit))
    peak = max(step["peak_rss_mb"] for step in steps.values())
    out.append(("1M: peak RSS of any dvc repro process (MB)", peak, "<= 300", peak <= 300))
    return out
