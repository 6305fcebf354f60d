"""Appending 600 images to MNIST's 60,000: `imgpack build` into the existing pack, against a cold
build of the whole folder and against Lance's append of the same 600 images.

Per run, each timed step a fresh process (whole process: Python start-up and imports included, as
a user runs them), in a fresh folder under bench/work/append/:

- the 60,000 training PNGs hard-linked into a new folder RAW (label folders; no labels table);
- cold: `imgpack build RAW OUT --shard-mb SHARD_MB`, its imgpack state folder empty (nothing
  remembered), kept for the next build, as a user's state is (`~/.cache/imgpack/state` or the DVC
  project's `.dvc/tmp/imgpack`);
- 600 new distinct PNGs written into RAW under random names, 60 into each label folder: MNIST
  testing images, each given a tEXt chunk (`bench.data._with_text_chunk`) so no byte string is in
  the pack already;
- incremental: `imgpack build RAW OUT --shard-mb SHARD_MB` again, OUT holding the pack of the
  60,000 (without `--fresh`: the pack's shards are carried over), with the state the cold build
  left; and the same build into a copy of that pack with an empty state folder (every file read
  and hashed again, carried shards checked again), in an order alternated each run;
- Lance: `lance.write_dataset` of the 60,000 (columns key, label: string; image: binary),
  untimed, then, timed, a process reading the 600 new files' bytes and calling
  `lance.write_dataset(table, uri, mode="append")`.

`python -m bench --sections append` runs it; `python -m bench.append lance-write|lance-append|
lance-count ...` are the Lance processes it starts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.data import WORK, _with_text_chunk, image_paths, warm
from bench.timing import IMGPACK, PYTHON, env, fmt_seconds, median, run_process

SHARD_MB = 1.5  # as bench/versions.py: the 60,000 MNIST PNGs (15 MB) in 10 shards
ADDED = 600
SKIPPED = {"skipped": "pip install pylance (the peers extra)"}


def _lance_available() -> bool:
    probe = subprocess.run([PYTHON, "-c", "import lance"], env=env(), capture_output=True)
    return probe.returncode == 0


def _shards(pack: Path) -> dict[str, int]:
    """Shard file name -> inode (a one-file pack: the file)."""
    if pack.is_file():
        return {pack.name: pack.stat().st_ino}
    return {p.name: p.stat().st_ino for p in pack.glob("shard-*.lmdb")}


def _link_copy(raw: Path, out: Path) -> None:
    """The label folders of `raw`, their files hard-linked into `out`."""
    for label in sorted(os.listdir(raw)):
        if (raw / label).is_dir():
            shutil.copytree(raw / label, out / label, copy_function=os.link)


def _add(raw: Path, new_images: Path, rng: random.Random, round_number: int) -> list[Path]:
    """ADDED new distinct PNGs written into `raw`'s label folders under random names, spread
    evenly over the labels (the first images of each of `new_images`' label folders)."""
    labels = sorted(p.name for p in raw.iterdir() if p.is_dir())
    per_label = ADDED // len(labels)
    written = []
    for label in labels:
        for path in sorted((new_images / label).glob("*.png"))[:per_label]:
            text = b"append\0" + f"{round_number}/{label}/{path.name}".encode()
            target = raw / label / f"{uuid.UUID(int=rng.getrandbits(128)).hex}.png"
            target.write_bytes(_with_text_chunk(path.read_bytes(), text))
            written.append(target)
    if len(written) != ADDED:
        raise RuntimeError(f"{new_images}: {len(written)} new images, not {ADDED}")
    return written


def _build(raw: Path, out: Path, state: Path | None) -> tuple[float, int]:
    """`imgpack build RAW OUT --shard-mb SHARD_MB` in its own process: with `state`, that
    folder is its imgpack state; else an empty one (run_process's cold)."""
    command = [IMGPACK, "build", str(raw), str(out), "--shard-mb", str(SHARD_MB)]
    if state is not None:
        command = ["env", f"IMGPACK_STATE={state}", *command]
    return run_process(command)


def _lance(command: str, uri: Path, root: Path, paths: list[Path], answer: Path) -> tuple:
    """`python -m bench.append COMMAND` in its own process: (wall seconds, peak RSS, its answer)."""
    listing = answer.with_suffix(".txt")
    listing.write_text("".join(f"{p}\n" for p in paths))
    seconds, peak = run_process(
        [PYTHON, "-m", "bench.append", command, str(uri), str(root), str(listing), str(answer)]
    )
    return seconds, peak, json.loads(answer.read_text())


def _count(pack: Path) -> int:
    import imgpack

    with imgpack.open(pack) as opened:
        return len(opened)


def measure(raw: Path, runs: int, new_images: Path | None = None) -> dict:
    """`raw`: MNIST's training folder (label folders of PNGs); the 600 added come from
    `new_images` (default: its sibling testing/)."""
    if not _lance_available():
        return dict(SKIPPED)
    new_images = new_images or raw.parent / "testing"
    images = len(image_paths(raw))
    warm(raw)
    warm(new_images)
    rng = random.Random(0)
    times: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}
    inside: dict[str, list[float]] = {}
    written: list[int] = []
    shards: list[int] = []
    root = WORK / "append"

    def record(name: str, seconds: float, peak: int) -> None:
        times.setdefault(name, []).append(seconds)
        rss.setdefault(name, []).append(peak)

    for round_number in range(runs):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        folder, state, out = root / "raw", root / "state", root / "pack.lmdb"
        _link_copy(raw, folder)
        # Linking the files in changed their ctime: wait out ingest's racy window (2 s), as any
        # folder older than a few seconds already has, so the state remembers them.
        time.sleep(2.1)
        record("cold", *_build(folder, out, state))
        base = image_paths(folder)
        shards.append(len(_shards(out)))
        no_state = root / "pack-copy.lmdb"
        if out.is_dir():
            shutil.copytree(out, no_state)
        else:  # a pack that fits in one shard is one file
            shutil.copy2(out, no_state)

        uri = root / "mnist.lance"
        _, _, answer = _lance("lance-write", uri, folder, [Path(p) for p in base], root / "w.json")
        inside.setdefault("lance_write", []).append(answer["write_s"])

        added = _add(folder, new_images, rng, round_number)
        before = _shards(out)
        order = ["incremental", "incremental_no_state"]
        for name in order if round_number % 2 == 0 else order[::-1]:
            if name == "incremental":
                record(name, *_build(folder, out, state))
            else:
                record(name, *_build(folder, no_state, None))
        after = _shards(out)
        written.append(len([n for n in after if before.get(n) != after[n]]))
        seconds, peak, answer = _lance("lance-append", uri, folder, added, root / "a.json")
        record("lance_append", seconds, peak)
        inside.setdefault("lance_import", []).append(answer["import_s"])
        inside.setdefault("lance_append", []).append(answer["append_s"])

        expected = images + ADDED
        _, _, counted = _lance("lance-count", uri, folder, [], root / "c.json")
        for what, count in (
            ("the pack", _count(out)),
            ("the pack built with no state", _count(no_state)),
            ("the Lance dataset", counted["rows"]),
        ):
            if count != expected:
                raise RuntimeError(f"append: {what} holds {count} records, not {expected}")
    shutil.rmtree(root, ignore_errors=True)
    from importlib.metadata import version

    seconds = {name: median(values) for name, values in times.items()}
    return {
        "images": images,
        "added": ADDED,
        "shard_mb": SHARD_MB,
        "shards": int(median(shards)),
        "lance_version": version("pylance"),
        "runs": runs,
        "seconds": seconds,
        "peak_rss_mb": {name: max(values) / 1e6 for name, values in rss.items()},
        "inside": {name: median(values) for name, values in inside.items()},
        "shards_written": int(median(written)),
        "ratios": {
            "incremental_over_cold": seconds["incremental"] / seconds["cold"],
            "incremental_over_lance_append": seconds["incremental"] / seconds["lance_append"],
            "no_state_over_cold": seconds["incremental_no_state"] / seconds["cold"],
            "no_state_over_lance_append": (
                seconds["incremental_no_state"] / seconds["lance_append"]
            ),
        },
        "all": times,
    }


def table(section: dict) -> list[str]:
    if "skipped" in section:
        return ["### Append", "", f"Not measured: {section['skipped']}.", ""]
    title = f"#### Append: {section['added']} images added to MNIST's {section['images']:,}"
    s, peak = section["seconds"], section["peak_rss_mb"]
    lance = f"Lance {section['lance_version']}"
    lines = [
        f"{title} (`imgpack build --shard-mb {section['shard_mb']}`: "
        f"{section['shards']} shard{'s' if section['shards'] != 1 else ''}), against {lance}",
        "",
        "| step (a process each) | median time | peak RSS | x cold build | x Lance append |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(label: str, key: str) -> None:
        lines.append(
            f"| {label} | {fmt_seconds(s[key])} | {peak[key]:.0f} MB | "
            f"{s[key] / s['cold']:.2f}x | {s[key] / s['lance_append']:.2f}x |"
        )

    row(f"`imgpack build`, cold: the {section['images']:,} images, nothing remembered", "cold")
    row(
        f"**`imgpack build` into that pack, {section['added']} added** (state of the first "
        "build kept)",
        "incremental",
    )
    row("the same, imgpack's state folder empty (every file read again)", "incremental_no_state")
    row(
        f'{lance}: read the {section["added"]} files, `write_dataset(mode="append")`',
        "lance_append",
    )
    inside = section["inside"]
    lines += [
        "",
        f"Median of {section['runs']} run(s). The incremental build wrote "
        f"{section['shards_written']} of its shard files and carried the others over. Inside "
        f"Lance's process, `import lance` took {fmt_seconds(inside['lance_import'])} and reading "
        f"the {section['added']} files plus the append {fmt_seconds(inside['lance_append'])}; "
        f"its untimed `write_dataset` of the {section['images']:,} (key, label: string; image: "
        f"binary) took {fmt_seconds(inside['lance_write'])} in-process.",
        "",
    ]
    return lines


def targets(section: dict) -> list[tuple[str, float, str, bool]]:
    """(target, measured, wanted, met): the incremental build (state kept) against a cold build
    and against Lance's append."""
    if "skipped" in section:
        return []
    r = section["ratios"]
    cold, lance = r["incremental_over_cold"], r["incremental_over_lance_append"]
    return [
        ("append 600: incremental build / cold build", cold, "<= 0.5", cold <= 0.5),
        ("append 600: incremental build / Lance append", lance, "<= 2", lance <= 2),
    ]


# -- the Lance processes -----------------------------------------------------------------------------
def _table(root: str, listing: str):
    import pyarrow as pa

    paths = Path(listing).read_text().splitlines()
    keys = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    blobs = []
    for path in paths:
        with open(path, "rb") as handle:
            blobs.append(handle.read())
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "label": pa.array([k.split("/")[0] for k in keys], pa.string()),
            "image": pa.array(blobs, pa.binary()),
        }
    )


def main(argv: list[str]) -> int:
    command, uri, root, listing, answer = argv
    start = time.perf_counter()
    import lance

    imported = time.perf_counter()
    if command == "lance-write":
        shutil.rmtree(uri, ignore_errors=True)
        lance.write_dataset(_table(root, listing), uri, mode="create")
        out = {"write_s": time.perf_counter() - imported}
    elif command == "lance-append":
        lance.write_dataset(_table(root, listing), uri, mode="append")
        out = {"import_s": imported - start, "append_s": time.perf_counter() - imported}
    elif command == "lance-count":
        out = {"rows": lance.dataset(uri).count_rows()}
    else:
        raise SystemExit(f"unknown command {command!r}")
    Path(answer).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
