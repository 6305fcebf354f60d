"""Stage parameters: one dataclass per params.yaml block, with defaults and checked values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.errors import InputError
from imgpack.format.codec import FORMAT_VERSION, LAYOUT_VERSION, SHARD_VERSION
from imgpack.util.cores import resolve_workers

__all__ = [
    "IngestParams",
    "PackParams",
    "ValidateParams",
    "shard_bytes_of",
    "SummarizeParams",
    "ERROR_KINDS",
    "SECTION",
    "load_params",
    "section_name",
    "init_command",
    "written_format",
    "flow",
    "project_section",
]

# Each kind of bad input, and what happens by default: skip and report, or fail the stage.
ERROR_KINDS = {
    "not_image": "skip",
    "empty": "skip",
    "corrupt": "skip",
    "too_large": "skip",
    "unlabeled": "skip",
    "bad_path": "skip",
    "bad_symlink": "skip",
    "missing_image": "fail",
    "conflicting_labels": "fail",
    "unknown_split": "skip",  # with pack.splits: folders, a top folder that names no split
}
HASH_ALGORITHMS = ("sha256", "blake2b")
# torchvision's ImageFolder IMG_EXTENSIONS, the folders users already have.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class IngestParams:
    folder: str = "data/raw/images"
    labels: str = ""
    path_column: str = "path"
    label_column: str = "label"
    columns: tuple[str, ...] = ()  # names of a headerless table's columns, in order
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    hash: str = "sha256"
    chunksize: int = 50_000
    max_pixels: int = 178_956_970  # Pillow's own decompression-bomb threshold
    on_error: dict[str, str] = field(default_factory=lambda: dict(ERROR_KINDS))
    workers: int | str = 0  # processes reading, hashing and probing; 0 or "auto": every core
    scheduler: str = ""  # a Dask scheduler (tcp://host:port) to run on instead; "": this machine

    def __post_init__(self) -> None:
        resolve_workers(self.workers, "ingest.workers")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        if self.hash not in HASH_ALGORITHMS:
            raise InputError(
                f"ingest.hash is {self.hash!r}; choose one of {', '.join(HASH_ALGORITHMS)}"
            )
        policy = dict(ERROR_KINDS)
        for kind, action in (self.on_error or {}).items():
            if kind not in ERROR_KINDS:
                raise InputError(
                    f"ingest.on_error has unknown kind {kind!r}; known: {', '.join(ERROR_KINDS)}"
                )
            if action not in ("skip", "fail"):
                raise InputError(f"ingest.on_error.{kind} is {action!r}; use 'skip' or 'fail'")
            policy[kind] = action
        object.__setattr__(self, "on_error", policy)
        if self.chunksize < 1:
            raise InputError("ingest.chunksize must be at least 1")


@dataclass(frozen=True)
class PackParams:
    duplicates: str = "keep"
    splits: dict[str, float] | str = field(  # or "folders": train/, val/, test/ top folders
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    split_seed: int = 0
    shard_mb: float = 64  # image bytes per shard; a pack that fits in one is a single file
    batch_mb: int = 32
    initial_map_size_mb: int = 0  # 0: from shard_mb
    workers: int | str = 0  # processes writing shards; 0 or "auto": every core
    scheduler: str = ""  # a Dask scheduler (tcp://host:port) to run on instead; "": this machine
    incremental: bool = True  # carry the previous version's shards over (see README)
    compact_below: float = 0.5  # a carried shard whose live share falls below this is rewritten

    def __post_init__(self) -> None:
        resolve_workers(self.workers, "pack.workers")
        if not 0 <= self.compact_below <= 1:
            raise InputError(
                f"pack.compact_below is {self.compact_below!r}; use a share from 0 to 1"
            )
        if self.duplicates not in ("keep", "dedupe"):
            raise InputError(f"pack.duplicates is {self.duplicates!r}; use 'keep' or 'dedupe'")
        if isinstance(self.splits, str):
            if self.splits != "folders":
                raise InputError(
                    f"pack.splits is {self.splits!r}; use 'folders' or fractions like "
                    "{train: 0.8, val: 0.1, test: 0.1}"
                )
        else:
            fractions = list(self.splits.values())
            if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
                raise InputError(
                    f"pack.splits {self.splits} must be non-negative fractions summing to 1"
                )
        if self.batch_mb < 1 or self.initial_map_size_mb < 0:
            raise InputError("pack.batch_mb must be >= 1 and pack.initial_map_size_mb >= 0")
        if not isinstance(self.shard_mb, (int, float)) or not self.shard_mb > 0:
            raise InputError(f"pack.shard_mb is {self.shard_mb!r}; use a number of MB above 0")

    @property
    def shard_bytes(self) -> int:
        return shard_bytes_of(self.shard_mb)


def shard_bytes_of(shard_mb: float) -> int:
    """`pack.shard_mb` in bytes, as every shard writer cuts by it."""
    return max(1, int(shard_mb * (1 << 20)))


@dataclass(frozen=True)
class ValidateParams:
    max_listed: int = 20


@dataclass(frozen=True)
class SummarizeParams:
    size_bins: int = 10


_BLOCKS = {
    "ingest": IngestParams,
    "pack": PackParams,
    "validate": ValidateParams,
    "summarize": SummarizeParams,
}


def from_mapping(block: str, values: dict[str, Any] | None):
    """Build a stage's params from its params.yaml block, naming unknown keys."""
    cls = _BLOCKS[block]
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"params block '{block}' has unknown keys: {', '.join(unknown)}")
    for name in ("extensions", "columns"):
        if name in values:
            values[name] = tuple(values[name] or ())
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"params block '{block}': {exc}") from None


def load_params(path: str | Path, block: str, section: str | None = None):
    """A stage's params from its block of the params file: a top-level block, or one inside
    `section` (the block `imgpack init` writes), whose recorded format must be this imgpack's."""
    import yaml  # here: a build without a params file does not pay for it

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of stage blocks")
    if section is not None:
        data = project_section(path, data, section)
    return from_mapping(block, data.get(block))


# -- the block `imgpack init` writes into a project's params.yaml --------------------------------
SECTION = "imgpack"  # or imgpack_<prefix>, for a second pack in the same project


def section_name(prefix: str | None) -> str:
    return f"{SECTION}_{prefix}" if prefix else SECTION


def init_command(section: str) -> str:
    """The `imgpack init` command that writes `section`."""
    prefix = section[len(SECTION) + 1 :] if section.startswith(SECTION + "_") else ""
    return f"imgpack init --prefix {prefix}" if prefix else "imgpack init"


def written_format() -> dict[str, int]:
    """What decides a pack's bytes besides its inputs and params: the versions this imgpack
    writes. `imgpack init` records it as a param of the pack stage, so a change rebuilds."""
    return {"pack": FORMAT_VERSION, "shard": SHARD_VERSION, "layout": LAYOUT_VERSION}


def flow(value: Any) -> str:
    """`value` as one line of YAML, as params.yaml shows it: {layout: 1, pack: 3, shard: 2}."""
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=1 << 16).removesuffix("...\n").strip()
    )


def project_section(path: Path, data: dict[str, Any], section: str) -> dict[str, Any]:
    """The stage blocks inside `section`, once its recorded format is checked."""
    values = data.get(section)
    init = init_command(section)
    if not isinstance(values, dict):
        raise InputError(f'{path} has no "{section}" block; run "{init}" to add it')
    unknown = sorted(set(values) - {*_BLOCKS, "format"})
    if unknown:
        raise InputError(f"params block '{section}' has unknown keys: {', '.join(unknown)}")
    recorded, writes = values.get("format"), written_format()
    if recorded != writes:
        said = "no pack format" if recorded is None else f"pack format {flow(recorded)}"
        raise InputError(
            f"{path} records {said} ({section}.format) but this imgpack writes format "
            f'{flow(writes)}; run "{init}" to record it (the next dvc repro rebuilds the pack)'
        )
    return values
