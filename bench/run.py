"""Run the benchmark: packing, reading, size, DVC and scale; print Markdown, write results.json and a plot."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from bench import (
    data,
    dvc_ops,
    million,
    packing,
    phases,
    reading,
    report,
    scale,
    throughput,
    timing,
    versions,
)

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "pack",
    "throughput",
    "phases",
    "read",
    "dvc",
    "scale",
    "versions",
    "cluster",
    "million",
    "stream",
    "append",
)


class _Sections(dict):
    """Sections as they are measured, each stamped and saved at once to a partial file: a run
    cut short (a stalled disk) keeps what it measured."""

    def __init__(self, results: dict, partial: Path):
        super().__init__(results["sections"])
        self.results, self.partial = results, partial

    def __setitem__(self, name: str, section: dict) -> None:
        super().__setitem__(name, section)
        self.results["measured"][name] = time.strftime("%Y-%m-%d %H:%M")
        self.partial.write_text(json.dumps(self.results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, 1 run: a fast check")
    parser.add_argument("--runs", type=int, help="runs per contender (default 3, quick 1)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other sections of --out from earlier runs"
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    wanted = set(args.sections.split(","))
    timing.compile_imgpack()
    mnist = data.mnist(limit_per_label=300 if args.quick else None)
    photos = data.photos(40 if args.quick else 300)
    results = {
        "config": {
            "mode": "quick" if args.quick else "full",
            "runs": runs,
            "sections": sorted(wanted),
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "sections": {},
    }
    started = time.time()
    results["measured"] = {}  # section -> when it was measured
    if args.merge and args.out.exists():
        earlier = json.loads(args.out.read_text())
        results["sections"].update(earlier["sections"])
        results["measured"].update(earlier.get("measured", {}))
    s = results["sections"] = _Sections(results, args.out.with_suffix(".partial.json"))
    if "pack" in wanted:
        s["pack_mnist"] = packing.measure(mnist, "mnist", runs)
        s["pack_photos"] = packing.measure(photos, "photos", runs)
    if "throughput" in wanted:
        # Seconds a run and the disk's stalls as large: more rounds for a steadier median.
        s["throughput"] = throughput.measure(100 if args.quick else 3000, max(runs, 7))
    if "phases" in wanted:
        s["phases"] = phases.measure(mnist, runs)
    if "read" in wanted:
        s["read_mnist"] = reading.measure(mnist, "mnist", runs)
        s["read_photos"] = reading.measure(photos, "photos", runs)
    if "dvc" in wanted:
        pack = data.WORK / "dvc-pack" / "images.lmdb"
        pack.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(pack, ignore_errors=True)
        pack.unlink(missing_ok=True)
        from bench.timing import IMGPACK, run_process

        run_process([IMGPACK, "build", str(mnist), str(pack)])
        s["dvc"] = dvc_ops.measure_transfer(mnist, pack, runs)
        s["repro"] = dvc_ops.measure_repro(mnist, runs)
        shutil.rmtree(pack.parent, ignore_errors=True)
    if "scale" in wanted:
        s["scale"] = scale.measure(mnist, max(1, runs - 1))
    if "versions" in wanted:
        s["versions"] = versions.measure(mnist, data.mnist().parent / "testing", runs)
    if "cluster" in wanted:
        from bench import cluster

        s["cluster"] = cluster.measure(mnist, runs)
    if "million" in wanted:  # 16 distinct copies of the 60,000 (quick: 2 of the 3,000)
        s["million"] = million.measure(mnist, runs, factor=2 if args.quick else 16)
    if "stream" in wanted:  # 3,000 photos (quick: 40) and the MNIST set, streamed over HTTP
        from bench import stream

        streamed = {"photos": photos if args.quick else data.photos(3000), "mnist": mnist}
        s["stream"] = stream.measure(streamed, runs)
    if "append" in wanted:  # 600 images added to the 60,000 (quick: the 3,000): imgpack vs Lance
        from bench import append

        s["append"] = append.measure(mnist, runs, data.mnist().parent / "testing")
    results["seconds"] = round(time.time() - started, 1)
    text = report.markdown(results)
    print(text)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    s.partial.unlink(missing_ok=True)
    args.out.with_suffix(".md").write_text(text)
    if {"pack", "read"} <= wanted:
        report.plot(results, args.out.with_suffix(".png"))
    print(
        f"wrote {args.out}, {args.out.with_suffix('.md')} in {results['seconds']} s",
        file=sys.stderr,
    )
    return 0
