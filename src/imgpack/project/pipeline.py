"""One pack's pipeline in a user's project: its stage names, paths, and the dvc.yaml stages."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from imgpack.errors import InputError
from imgpack.params import section_name

__all__ = ["Pipeline", "PLOTS_DIR", "PLOT_TEMPLATES"]

PACK = "data/packed/images.lmdb"  # without a prefix, as in imgpack's own repository
PLOTS_DIR = "plots/imgpack"  # the plot templates, shared by every pack of the project
PLOT_TEMPLATES = ("counts_by_category.json", "counts_by_split.json", "dimensions.json")
# The pack params that shape its bytes: all but workers and scheduler (where, not what).
PACK_PARAMS = (
    "duplicates",
    "splits",
    "split_seed",
    "shard_mb",
    "batch_mb",
    "initial_map_size_mb",
    "incremental",
    "compact_below",
)
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Pipeline:
    """Names and paths of one pack's stages; a prefix keeps a second pack apart from the first."""

    prefix: str | None = None
    out: str | None = None  # the pack; None: data/packed/images.lmdb or data/packed/PREFIX.lmdb

    def __post_init__(self) -> None:
        if self.prefix is not None and not _PREFIX.fullmatch(self.prefix):
            raise InputError(
                f"--prefix {self.prefix!r}: use letters, digits, _ and - (a DVC stage name)"
            )

    @property
    def section(self) -> str:
        return section_name(self.prefix)

    def name(self, stage: str) -> str:
        return f"{self.prefix}_{stage}" if self.prefix else stage

    @property
    def pack(self) -> str:
        return self.out or (f"data/packed/{self.prefix}.lmdb" if self.prefix else PACK)

    @property
    def manifest(self) -> str:
        return f"{self._in('data/interim')}/manifest.jsonl"

    def report(self, name: str) -> str:
        return f"{self._in('reports')}/{name}"

    def _in(self, folder: str) -> str:
        return f"{folder}/{self.prefix}" if self.prefix else folder

    def git_ignored(self) -> list[str]:
        """Outputs git must not see: the manifest (rebuilt by every clone, one line per image)
        and the two reports ingest and validate rewrite on every run. The summary and plot
        data stay in git, so `dvc metrics diff` and `dvc plots diff` compare revisions."""
        return [
            f"/{p}"
            for p in (self.manifest, self.report("ingest.json"), self.report("validation.json"))
        ]

    def stages(self) -> dict[str, dict[str, Any]]:
        """The four stages as dvc.yaml holds them: no dependency on imgpack's source, whose
        format the pack stage tracks through the `format` param instead."""
        return {
            self.name("ingest"): self._ingest(),
            self.name("pack"): self._pack(),
            self.name("validate"): self._validate(),
            self.name("summarize"): self._summarize(),
        }

    def _cmd(self, stage: str, **paths: str) -> str:
        options = " ".join(f"--{k} {shlex.quote(v)}" for k, v in paths.items())
        return f"python -m imgpack.stages.{stage} --params params.yaml --section {self.section} {options}"

    def _ingest(self) -> dict[str, Any]:
        report = self.report("ingest.json")
        kept = {"cache": False, "persist": True}  # left as they are when nothing changed
        return {
            "cmd": self._cmd("ingest", manifest=self.manifest, report=report),
            "always_changed": True,  # it stats the raw folder itself: DVC never hashes it
            "params": [f"{self.section}.ingest", f"{self.section}.pack.splits"],
            "outs": [{self.manifest: dict(kept)}, {report: dict(kept)}],
        }

    def _pack(self) -> dict[str, Any]:
        return {
            "cmd": self._cmd("pack", manifest=self.manifest, out=self.pack),
            "deps": [self.manifest],
            "params": [f"{self.section}.pack.{name}" for name in PACK_PARAMS]
            + [f"{self.section}.ingest.folder", f"{self.section}.format"],
            "outs": [{self.pack: {"persist": True}}],  # its shards carry over to the next version
        }

    def _validate(self) -> dict[str, Any]:
        report = self.report("validation.json")
        return {
            "cmd": self._cmd("validate", pack=self.pack, manifest=self.manifest, report=report),
            "deps": [self.pack, self.manifest],
            "params": [f"{self.section}.validate"],
            "outs": [{report: {"cache": False}}],
        }

    def _summarize(self) -> dict[str, Any]:
        summary, plots = self.report("summary.json"), self.report("plots")
        return {
            "cmd": self._cmd("summarize", pack=self.pack, summary=summary, plots=plots),
            "deps": [self.pack],
            "params": [f"{self.section}.summarize"],
            "metrics": [{summary: {"cache": False}}],
            "plots": [{f"{plots}/{name}.csv": self._plot(*spec)} for name, spec in _PLOTS.items()],
        }

    def _plot(self, template: str, title: str, x: str, x_label: str, y: str, y_label: str):
        suffix = f" ({self.prefix})" if self.prefix else ""
        return {
            "cache": False,
            "template": f"{PLOTS_DIR}/{template}",
            "title": title + suffix,
            "x": x,
            "x_label": x_label,
            "y": y,
            "y_label": y_label,
        }


# Each plot summarize writes: its template, title, and axes, as this repository's dvc.yaml has them.
_PLOTS = {
    "images_per_label": (
        "counts_by_category.json",
        "Images per label",
        "count",
        "images",
        "label",
        "label",
    ),
    "images_per_split": (
        "counts_by_split.json",
        "Images per split and label",
        "count",
        "images",
        "label",
        "label",
    ),
    "image_sizes": (
        "counts_by_category.json",
        "File sizes (bins of equal width)",
        "count",
        "images",
        "size_bytes",
        "file size, bytes (bin start)",
    ),
    "image_dimensions": (
        "dimensions.json",
        "Image width x height",
        "width",
        "width (px)",
        "height",
        "height (px)",
    ),
}
