"""Markdown tables, target checks and one plot from the benchmark results."""

from __future__ import annotations

from pathlib import Path

from bench import million_versions
from bench.timing import fmt_seconds


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def packing_table(title: str, section: dict) -> list[str]:
    lines = [
        f"### Packing: {title} ({section['images']:,} images, {_mb(section['image_bytes'])} of image bytes,"
        f" {_mb(section['raw_allocated_bytes'])} on disk as files)",
        "",
        "| contender | median time | images/s | MB/s | time vs imgpack | peak RSS | size on disk |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in section["contenders"].items():
        lines.append(
            f"| {label} | {row['seconds']:.2f} s | {row['images_per_s']:,.0f} | {row['mb_per_s']:.1f} |"
            f" {row['time_vs_imgpack']:.2f}x | {row['peak_rss_mb']:.0f} MB | {_mb(row['allocated_bytes'])} |"
        )
    return lines + [""]


def phases_table(section: dict) -> list[str]:
    lines = [
        "### The pipeline's stages, in-process (MNIST; a fresh `imgpack build` runs them as one pass)",
        "",
        "| phase | median time | vs approach (a) |",
        "|---|---:|---:|",
    ]
    for name, row in section.items():
        lines.append(f"| {name} | {row['seconds']:.2f} s | {row['vs_approach_a']:.2f}x |")
    return lines + [""]


def reading_table(title: str, section: dict) -> list[str]:
    lines = [
        f"### Reading every image once: {title} ({section['images']:,} images, page cache warm)",
        "",
        "| contender | median time | µs per image | time vs imgpack dataset[i] |",
        "|---|---:|---:|---:|",
    ]
    for label, row in section["contenders"].items():
        lines.append(
            f"| {label} | {row['seconds']:.3f} s | {row['us_per_image']:.2f} |"
            f" {row['time_vs_imgpack_single']:.2f}x |"
        )
    t = section["targets"]
    lines += [
        "",
        f"Individual files take {t['files_over_imgpack_single']:.1f}x the time of `dataset[i]` and"
        f" {t['files_over_imgpack_batch']:.1f}x that of batch reads; `dataset[i]` takes"
        f" {t['imgpack_single_over_bare']:.2f}x and batch reads {t['imgpack_batch_over_bare']:.2f}x"
        " the bare `txn.get` loop.",
        "",
    ]
    return lines


def dvc_table(section: dict, repro: dict | None) -> list[str]:
    lines = [
        "### DVC: the raw folder vs the pack (local remote, fresh clone for pull)",
        "",
        "| operation | folder | pack | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for op, row in section.items():
        lines.append(
            f"| dvc {op} | {row['folder_s']:.2f} s | {row['pack_s']:.2f} s | {row['speedup']:.0f}x |"
        )
    if repro:
        lines += [
            "",
            f"`dvc repro` of this project's pipeline on the same images: {repro['full_s']:.1f} s"
            f" from scratch, {repro['noop_s']:.2f} s when nothing changed.",
        ]
    return lines + [""]


def scale_table(section: dict) -> list[str]:
    lines = [
        "### Scale: `imgpack build` at 1x, 2x and 4x the MNIST folder, and 4 identical copies",
        "",
        "| data | images | median time | µs per image | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in section["rows"].items():
        lines.append(
            f"| {label} | {row['images']:,} | {row['seconds']:.1f} s | {row['us_per_image']:.0f} |"
            f" {row['peak_rss_mb']:.0f} MB |"
        )
    lines += [
        "",
        f"Peak RSS grows {section['rss_growth']:.2f}x and time per image"
        f" {section['time_per_image_growth']:.2f}x from 1x to 4x; 4 identical copies (every image"
        f" 4 times) take {section.get('rss_copies', 0):.2f}x the peak RSS of 1x.",
        "",
    ]
    return lines


def million_table(section: dict) -> list[str]:
    b, loads = section["build"], section["loads"]
    lines = [
        f"#### {section['images']:,} distinct MNIST-sized PNGs ({section['image_bytes'] / 1e6:.0f} MB "
        f"of image bytes; pack {section['pack_bytes'] / 1e6:.0f} MB in {section['shards']} shards)",
        "",
        "| what | median time | peak RSS | vs |",
        "|---|---:|---:|---:|",
    ]
    a = b["(a) LMDB bytes, putmulti"]["seconds"]
    for label, row in b.items():
        lines.append(
            f"| {label} | {fmt_seconds(row['seconds'])} | {row['peak_rss_mb']:.0f} MB | "
            f"{row['seconds'] / a:.2f}x (a) |"
        )
    parquet = loads["parquet"]["seconds"]
    names = {
        "parquet": "pandas.read_parquet, same columns",
        "metadata": "pack.metadata(), fresh process",
        "dataset": "ImageDataset(pack), fresh process",
    }
    for kind in ("parquet", "metadata", "dataset"):
        row = loads[kind]
        lines.append(
            f"| {names[kind]} | {fmt_seconds(row['seconds'])} | +{row['added_peak_mb']:.0f} MB | "
            f"{row['seconds'] / parquet:.2f}x Parquet |"
        )
    lines += [f"| imgpack verify | {fmt_seconds(section['verify_seconds'])} | | |", ""]
    if "versions" in section:
        lines += million_versions.table(section["versions"])
    return lines


def targets(results: dict) -> list[tuple[str, float, str, bool]]:
    """(target, measured, threshold, met) for each target the issues set."""
    out = []
    sections = results["sections"]
    if "pack_mnist" in sections:
        rows = sections["pack_mnist"]["contenders"]
        a = rows["imgpack build"]["seconds"] / rows["(a) LMDB bytes, putmulti"]["seconds"]
        b = rows["(b) LMDB pickled arrays"]["seconds"] / rows["imgpack build"]["seconds"]
        out += [
            ("imgpack build time / approach (a), MNIST", a, "<= 1.0", a <= 1.0),
            ("approach (b) time / imgpack build", b, ">= 2", b >= 2),
        ]
    if "pack_photos" in sections:
        rows = sections["pack_photos"]["contenders"]
        a = rows["imgpack build"]["seconds"] / rows["(a) LMDB bytes, putmulti"]["seconds"]
        out.append(("imgpack build time / approach (a), photos", a, "<= 1.0", a <= 1.0))
    if "throughput" in sections:
        a = sections["throughput"]["build_over_a"]
        n = sections["throughput"]["images"]
        out.append((f"imgpack build time / approach (a), {n:,} photos", a, "<= 1.0", a <= 1.0))
    if "read_mnist" in sections:
        t = sections["read_mnist"]["targets"]
        single, batch = t["files_over_imgpack_single"], t["files_over_imgpack_batch"]
        out += [
            ("files time / imgpack dataset[i], shuffled", single, ">= 6", single >= 6),
            ("files time / imgpack batch of 64, shuffled", batch, ">= 6", batch >= 6),
            (
                "imgpack batch read / bare txn.get loop",
                t["imgpack_batch_over_bare"],
                "<= 2",
                t["imgpack_batch_over_bare"] <= 2,
            ),
            (
                "imgpack dataset[i] / bare txn.get loop",
                t["imgpack_single_over_bare"],
                "<= 2",
                t["imgpack_single_over_bare"] <= 2,
            ),
        ]
    if "pack_mnist" in sections and "pack_photos" in sections:
        for key, limit in (("pack_mnist", 1.5), ("pack_photos", 1.02)):
            section = sections[key]
            ratio = (
                section["contenders"]["imgpack build"]["allocated_bytes"] / section["image_bytes"]
            )
            out.append(
                (f"pack size / image bytes, {key[5:]}", ratio, f"<= {limit}", ratio <= limit)
            )
    if "read_mnist" in sections:
        t = sections["read_mnist"]["targets"]
        item, scan = t["pack_item_over_dataset_item"], t["files_in_order_over_iteration"]
        out += [
            ("pack[i].data / dataset[i], shuffled", item, "<= 1.5", item <= 1.5),
            ("files in key order / pack iteration", scan, ">= 5", scan >= 5),
        ]
    if "million" in sections:
        t = sections["million"]["targets"]
        out += [
            (
                "1M: pack.metadata() / read_parquet",
                t["metadata_over_parquet"],
                "<= 1.5",
                t["metadata_over_parquet"] <= 1.5,
            ),
            (
                "1M: metadata() added peak / frame size",
                t["metadata_peak_over_frame"],
                "<= 2",
                t["metadata_peak_over_frame"] <= 2,
            ),
            (
                "1M: ImageDataset() / read_parquet",
                t["dataset_over_parquet"],
                "<= 2",
                t["dataset_over_parquet"] <= 2,
            ),
            (
                "1M: imgpack build / approach (a)",
                t["build_over_a"],
                "<= 1.0 (issue 12)",
                t["build_over_a"] <= 1.0,
            ),
        ]
    if "scale" in sections:
        s = sections["scale"]
        peak = max(r["peak_rss_mb"] for r in s["rows"].values())
        out += [
            ("peak RSS of imgpack build (MB)", peak, "< 200", peak < 200),
            ("peak RSS 4x / 1x", s["rss_growth"], "<= 1.2", s["rss_growth"] <= 1.2),
            ("peak RSS 4 identical copies / 1x", s["rss_copies"], "<= 1.2", s["rss_copies"] <= 1.2),
        ]
    if "versions" in sections.get("million", {}):
        out += million_versions.targets(sections["million"]["versions"])
    if "million" in sections and "scale" in sections:
        one = sections["scale"]["rows"]["1x"]["peak_rss_mb"]
        big = sections["million"]["build"]["imgpack build"]["peak_rss_mb"]
        out.append(("peak RSS 960,000 / 60,000", big / one, "<= 1.2", big / one <= 1.2))
    if "versions" in sections:
        steps = sections["versions"]["steps"]
        for name, limit, growth in (
            ("dvc repro from scratch", 1.5, None),
            ("dvc repro, nothing changed", 0.5, None),
            ("600 images added, random names", 1.0, 2e6),
        ):
            x = steps[name]["x_build"]
            out.append((f"{name} / imgpack build", x, f"<= {limit}", x <= limit))
            if growth:
                grown = steps[name]["remote_growth_bytes"] / 1e6
                out.append((f"{name}: dvc push adds (MB)", grown, "<= 2", grown <= 2))
        relabel = steps["10 labels changed"]["shards_written"]
        out.append(("10 labels changed: shard files written", relabel, "0", relabel == 0))
    if "dvc" in sections:
        speedup = sections["dvc"]["push+pull"]["speedup"]
        out.append(("dvc push+pull: folder / pack", speedup, ">= 50", speedup >= 50))
    if "stream" in sections:
        from bench.stream import targets as stream_targets

        out += stream_targets(sections["stream"])
    if "append" in sections:
        from bench.append import targets as append_targets

        out += append_targets(sections["append"])
    cluster = sections.get("cluster", {})
    for row in cluster.values():  # MNIST's 60,000 in the section; 960,000 with --client
        if "client_us_per_record" in row:
            per, records = row["client_us_per_record"], row.get("records", 60_000)
            what = f"Dask client CPU per record (µs), {records:,} records"
            out.append((what, per, "<= 5 (issue 25)", per <= 5))
    return out


def markdown(results: dict) -> str:
    s = results["sections"]
    lines = [
        f"## Benchmark results ({results['config']['mode']}, median of {results['config']['runs']} runs)",
        "",
    ]
    if results.get("measured"):
        dates = sorted(set(results["measured"].values()))
        lines += [
            f"Sections measured {dates[0]} to {dates[-1]}: see `measured` in results.json.",
            "",
        ]
    if "pack_mnist" in s:
        lines += packing_table("MNIST training PNGs", s["pack_mnist"])
    if "pack_photos" in s:
        lines += packing_table("photo-sized JPEGs", s["pack_photos"])
    if "throughput" in s:
        from bench.throughput import table as throughput_table

        lines += throughput_table(s["throughput"])
    if "phases" in s:
        lines += phases_table(s["phases"])
    if "read_mnist" in s:
        lines += reading_table("MNIST", s["read_mnist"])
    if "read_photos" in s:
        lines += reading_table("photo-sized JPEGs", s["read_photos"])
    if "dvc" in s:
        lines += dvc_table(s["dvc"], s.get("repro"))
    if "scale" in s:
        lines += scale_table(s["scale"])
    if "versions" in s:
        from bench.versions import table

        lines += table(s["versions"])
    if "cluster" in s:
        from bench.cluster import table as cluster_table

        lines += cluster_table(s["cluster"])
    if "million" in s:
        lines += million_table(s["million"])
    if "stream" in s:
        from bench.stream import table as stream_table

        lines += stream_table(s["stream"])
    if "append" in s:
        from bench.append import table as append_table

        lines += append_table(s["append"])
    lines += ["### Targets", "", "| target | measured | wanted | met |", "|---|---:|---:|---|"]
    for name, value, wanted, met in targets(results):
        lines.append(f"| {name} | {value:.2f} | {wanted} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["sections"]
    panels = [k for k in ("pack_mnist", "read_mnist", "dvc") if k in s]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2))
    axes = [axes] if len(panels) == 1 else axes
    for ax, key in zip(axes, panels, strict=True):
        if key == "pack_mnist":
            rows = s[key]["contenders"]
            ax.barh(list(rows), [r["seconds"] for r in rows.values()], color="#4c72b0")
            ax.set_title("Packing 60k MNIST PNGs (s, lower is better)")
        elif key == "read_mnist":
            rows = s[key]["contenders"]
            ax.barh(list(rows), [r["us_per_image"] for r in rows.values()], color="#55a868")
            ax.set_xscale("log")
            ax.set_title("Reading every image (µs per image, log)")
        else:
            ops = list(s[key])
            y = range(len(ops))
            ax.barh([i + 0.2 for i in y], [s[key][o]["folder_s"] for o in ops], 0.4, label="folder")
            ax.barh([i - 0.2 for i in y], [s[key][o]["pack_s"] for o in ops], 0.4, label="pack")
            ax.set_yticks(list(y), [f"dvc {o}" for o in ops])
            ax.set_xscale("log")
            ax.legend()
            ax.set_title("DVC: raw folder vs pack (s, log)")
        ax.invert_yaxis()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes:
        if ax.get_xscale() == "log":  # plain numbers, no crowded minor labels
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=90)
