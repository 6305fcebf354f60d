"""A dataset that changes: what each new version costs in `dvc repro` and `dvc push`, against `imgpack build`."""

from __future__ import annotations

import csv
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from bench.data import WORK
from bench.dvc_ops import DVC, _git_repo, _quiet, pipeline_project
from bench.timing import IMGPACK, compile_imgpack, env, median, run_process

SHARD_MB = 1.5  # the 60,000 MNIST PNGs (15 MB) in 10 shards


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _shards(pack: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in pack.glob("shard-*.lmdb")}


def _write_labels(images: Path, table: Path, relabel: set[str] = frozenset()) -> None:
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for path in sorted(images.rglob("*.png")):
            key = path.relative_to(images).as_posix()
            writer.writerow([key, "relabeled" if key in relabel else key.split("/")[0]])


def _project(raw: Path, round_number: int) -> Path:
    project = WORK / "versions" / f"project-{round_number}"

    def shard_mb(params: dict) -> None:
        params["pack"]["shard_mb"] = SHARD_MB

    def labels(project: Path) -> None:
        _write_labels(project / "data/raw/images", project / "data/raw/labels.csv")

    remote = project.with_name(project.name + "-remote")
    return pipeline_project(project, raw, remote, shard_mb, labels)


def _timed_push(project: Path) -> int:
    remote = project.with_name(project.name + "-remote")
    before = _bytes(remote) if remote.exists() else 0
    run_process([*DVC, "push"], project, cold=False)
    return _bytes(remote) - before


def _timed_repro(project: Path) -> tuple[float, float]:
    """`dvc repro`: (wall seconds, seconds inside the stages' own commands). A stage's command
    runs from DVC's `> cmd` line to its own last line, printed as it exits."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [*DVC, "repro"], cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    in_stages, began, lines = 0.0, None, []
    for raw in process.stdout:
        now = time.perf_counter()
        line = raw.decode(errors="replace")
        lines.append(line)
        if began is not None and line.strip():
            in_stages += now - began
            began = None
        if line.startswith("> "):
            began = now
    if process.wait() != 0:
        raise RuntimeError("dvc repro failed: " + "".join(lines)[-2000:])
    return time.perf_counter() - start, in_stages


class _Steps:
    """Times one `dvc repro` after a change, the shard files it wrote and what push added."""

    def __init__(self, project: Path, pack: Path, rows: dict, pushed: dict, shards: dict, own):
        self.project, self.pack = project, pack
        self.rows, self.pushed, self.shards, self.dvc_own = rows, pushed, shards, own

    def step(self, name: str) -> None:
        before = _shards(self.pack)
        repro, in_stages = _timed_repro(self.project)
        self.rows.setdefault(name, []).append(repro)
        self.dvc_own.setdefault(name, []).append(repro - in_stages)
        after = _shards(self.pack)
        self.shards.setdefault(name, []).append(
            len([n for n in after if before.get(n) != after[n]])
        )
        self.pushed.setdefault(name, []).append(_timed_push(self.project))


def measure(raw: Path, new_images: Path, runs: int) -> dict:
    """Per round: imgpack build of the folder, then in a DVC project: repro from scratch, no-op
    repro, 600 images added under random names, 10 labels changed, 100 images deleted."""
    rows: dict[str, list[float]] = {}
    pushed: dict[str, list[int]] = {}
    shards: dict[str, list[int]] = {}
    own: dict[str, list[float]] = {}
    floor: list[float] = []
    floor4: list[float] = []
    rng = random.Random(0)
    for round_number in range(runs):
        project = _project(raw, round_number)
        images = project / "data/raw/images"
        out = WORK / "versions" / "built.lmdb"
        shutil.rmtree(out, ignore_errors=True)
        build, _ = run_process(  # cold: nothing remembered
            [
                IMGPACK,
                "build",
                str(images),
                str(out),
                "--labels",
                str(project / "data/raw/labels.csv"),
                "--shard-mb",
                str(SHARD_MB),
            ]
        )
        rows.setdefault("imgpack build", []).append(build)
        pack = project / "data/packed/images.lmdb"

        record = _Steps(project, pack, rows, pushed, shards, own)
        record.step("dvc repro from scratch")
        record.step("dvc repro, nothing changed")
        added = sorted(new_images.rglob("*.png"))[:600]
        for path in added:
            name = f"{uuid.UUID(int=rng.getrandbits(128)).hex}.png"
            shutil.copyfile(path, images / path.parent.name / name)
        _write_labels(images, project / "data/raw/labels.csv")
        record.step("600 images added, random names")
        keys = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
        _write_labels(images, project / "data/raw/labels.csv", set(rng.sample(keys, 10)))
        record.step("10 labels changed")
        for key in rng.sample(keys, 100):
            (images / key).unlink()
        _write_labels(images, project / "data/raw/labels.csv")
        record.step("100 images deleted")
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(project.with_name(project.name + "-remote"), ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        one, four = _dvc_floor(WORK / "versions" / f"floor-{round_number}")
        floor.append(one)
        floor4.append(four)
    build = median(rows["imgpack build"])
    result = {
        "shard_mb": SHARD_MB,
        "build_s": build,
        "dvc_floor_s": median(floor),
        "dvc_floor_x_build": median(floor) / build,
        "pipeline_floor_s": median(floor4),
        "pipeline_floor_x_build": median(floor4) / build,
        "steps": {},
    }
    for name, times in rows.items():
        if name == "imgpack build":
            continue
        result["steps"][name] = {
            "seconds": median(times),
            "x_build": median(times) / build,
            "dvc_own_s": median(own[name]),
            "remote_growth_bytes": int(median(pushed[name])),
            "shards_written": int(median(shards[name])),
            "runs": times,
        }
    return result


_STAGE_IMPORTS = {  # stage: (what it reads, what it writes)
    "ingest": (None, "manifest"),
    "pack": ("manifest", "pack"),
    "validate": ("pack", "validation"),
    "summarize": ("pack", "summary"),
}


def _dvc_floor(project: Path) -> tuple[float, float]:
    """DVC's own cost, measured: `dvc repro` of one always-changed stage whose command does
    nothing; and of four stages wired as the pipeline's, each command only starting Python with
    its stage's imports and passing a changed file on, so that all four run."""
    _git_repo(project)
    (project / "dvc.yaml").write_text(
        "stages:\n  nothing:\n    cmd: 'true'\n    always_changed: true\n"
    )
    _quiet([*DVC, "repro"], project)
    one = median([run_process([*DVC, "repro"], project, cold=False)[0] for _ in range(3)])
    stages = {}
    for name, (reads, writes) in _STAGE_IMPORTS.items():
        source = f"open('{reads}').read()" if reads else "__import__('time').time_ns()"
        stage = {
            "cmd": f'python -c "import imgpack.stages.{name}; '
            f"open('{writes}', 'w').write(str({source}))\""
        }
        if reads:
            stage["deps"] = [reads]
        else:
            stage["always_changed"] = True
        stage["outs"] = [writes]
        stages[f"{name}"] = stage
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    _quiet([*DVC, "repro"], project)
    four = median([run_process([*DVC, "repro"], project, cold=False)[0] for _ in range(3)])
    shutil.rmtree(project, ignore_errors=True)
    return one, four


def table(section: dict) -> list[str]:
    lines = [
        f"### Versions: MNIST 60,000 in a DVC project, `pack.shard_mb: {section['shard_mb']}`",
        "",
        f"`imgpack build` of the same folder (cold, labels table): {section['build_s']:.2f} s.",
        "",
        "| step | `dvc repro` | x build | of which DVC itself | shard files written "
        "| `dvc push` adds to the remote |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in section["steps"].items():
        lines.append(
            f"| {name} | {row['seconds']:.2f} s | {row['x_build']:.2f}x | "
            f"{row['dvc_own_s']:.2f} s | {row['shards_written']} | "
            f"{row['remote_growth_bytes'] / 1e6:.2f} MB |"
        )
    lines += [
        "",
        "*Of which DVC itself*: the time outside the stages' commands (start-up, hashing and "
        "caching outputs, lock files). `dvc repro` of a one-stage project whose command does "
        f"nothing takes {section['dvc_floor_s']:.2f} s "
        f"({section['dvc_floor_x_build']:.2f}x the build) on this machine.",
    ]
    if "pipeline_floor_s" in section:
        lines += [
            "",
            "*Floor of any change*: the same four stages, each command only starting Python with "
            "its stage's imports (pyarrow, numpy) and passing a changed file on, so all four run: "
            f"`dvc repro` takes {section['pipeline_floor_s']:.2f} s "
            f"({section['pipeline_floor_x_build']:.2f}x the build).",
        ]
    return lines + [""]


if __name__ == "__main__":
    import json
    import sys

    from bench.data import mnist

    compile_imgpack()
    base = mnist()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    result = measure(base, base.parent / "testing", runs)
    print("\n".join(table(result)))
    out = Path(__file__).with_name("results.json")
    everything = json.loads(out.read_text()) if out.exists() else {"sections": {}}
    everything.setdefault("sections", {})["versions"] = result
    out.write_text(json.dumps(everything, indent=2) + "\n")
