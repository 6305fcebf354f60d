"""`imgpack init`: one pack's pipeline added to a git + DVC project, changing only what is missing."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

import yaml

from imgpack.errors import InputError
from imgpack.params import flow, written_format
from imgpack.project.pipeline import PLOT_TEMPLATES, PLOTS_DIR, Pipeline
from imgpack.project.yamltext import dump, read_mapping, scalar, settled, with_children, with_value

__all__ = ["Change", "init_project", "DEFAULT_FOLDER"]

DEFAULT_FOLDER = "data/raw/images"
IGNORED_RAW = "the raw images, which ingest reads itself: DVC need not walk them"
IGNORED_OUTPUTS = "the manifest and reports, rewritten by every run"
TEMPLATES = files("imgpack.project") / "templates"


@dataclass(frozen=True)
class Change:
    """One thing init wrote: the file and what changed in it."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass(frozen=True)
class _Write:
    path: str
    content: str | bytes
    changes: list[Change]


def init_project(
    root: str | Path,
    folder: str | None = None,
    labels: str | None = None,
    out: str | None = None,
    prefix: str | None = None,
    force: bool = False,
) -> list[Change]:
    """Add the four stages, the params block, the plot templates and the ignore lines for one
    pack to the git + DVC project at `root`; what the project has already is kept. Options left
    None keep the project's value (or take the default in a new project). Returns what changed:
    nothing on a second run. A stage of the same name that differs is refused (nothing written)
    unless `force`."""
    root = Path(root)
    _require_repository(root)
    dvc_text, params_text = _read(root / "dvc.yaml"), _read(root / "params.yaml")
    pipeline = Pipeline(prefix, out or _current_out(dvc_text, prefix))
    raw = folder if folder is not None else _current_folder(params_text, pipeline.section)
    writes = [
        _stages(dvc_text, pipeline, force),
        _params(params_text, pipeline.section, folder, labels),
        *_plot_templates(root),
        _lines(root, ".dvcignore", _dvcignored(root, raw), IGNORED_RAW),
        _lines(root, ".gitignore", pipeline.git_ignored(), IGNORED_OUTPUTS),
    ]
    writes = [w for w in writes if w is not None]
    for write in writes:  # only now: a refusal above leaves every file as it was
        _publish(root / write.path, write.content)
    return [change for write in writes for change in write.changes]


def _require_repository(root: Path) -> None:
    if not (root / ".dvc").is_dir():
        raise InputError(
            f"{root} is not a DVC project (no .dvc/ folder); run `git init && dvc init` there, "
            "then imgpack init"
        )
    if not any((where / ".git").exists() for where in (root, *root.resolve().parents)):
        raise InputError(
            f"{root} is not in a git repository; run `git init` there, then imgpack init"
        )


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _current_out(dvc_text: str, prefix: str | None) -> str | None:
    """The pack an earlier init wrote, so a rerun without --out keeps it."""
    stage = (read_mapping(dvc_text, "dvc.yaml").get("stages") or {}).get(
        Pipeline(prefix).name("pack")
    )
    if not isinstance(stage, dict) or not str(stage.get("cmd", "")).startswith(
        "python -m imgpack.stages.pack "
    ):
        return None
    first = (stage.get("outs") or [None])[0]
    return next(iter(first)) if isinstance(first, dict) else first


def _stages(text: str, pipeline: Pipeline, force: bool) -> _Write | None:
    data = read_mapping(text, "dvc.yaml")
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise InputError("dvc.yaml: `stages` is not a mapping; fix it and run again")
    wanted = pipeline.stages()
    differing = [name for name, stage in wanted.items() if stages.get(name, stage) != stage]
    if differing and not force:
        raise InputError(
            f"dvc.yaml already has stages named {', '.join(differing)}; nothing was written: "
            "run imgpack init --force to replace them, or choose --prefix NAME for a second pack"
        )
    added = [name for name in wanted if name not in stages]
    if not added and not differing:
        return None
    expected = {**data, "stages": {**stages, **wanted}}
    edited = None if differing else with_children(text, "stages", _dumped(wanted, added))
    changes = [Change("dvc.yaml", f"added stages {', '.join(added)}")] if added else []
    if differing:
        changes.append(Change("dvc.yaml", f"replaced stages {', '.join(differing)} (--force)"))
    return _Write("dvc.yaml", settled(edited, expected), changes)


def _dumped(stages: dict[str, Any], names: list[str]) -> str:
    return "\n".join(dump({name: stages[name]}) for name in names)


def _current_folder(params_text: str, section: str) -> str:
    block = read_mapping(params_text, "params.yaml").get(section)
    ingest = block.get("ingest") if isinstance(block, dict) else None
    return str(ingest.get("folder", DEFAULT_FOLDER)) if isinstance(ingest, dict) else DEFAULT_FOLDER


def _params(text: str, section: str, folder: str | None, labels: str | None) -> _Write | None:
    """The params block written, or its format (and a --folder or --labels given) brought up
    to date; its other values are the user's."""
    data = read_mapping(text, "params.yaml")
    if section not in data:
        return _new_block(text, data, section, folder or DEFAULT_FOLDER, labels or "")
    block = data[section]
    if not isinstance(block, dict):
        raise InputError(f"params.yaml: `{section}` is not a mapping; fix it and run again")
    ingest = block.get("ingest") if isinstance(block.get("ingest"), dict) else {}
    wanted = [(["format"], written_format())]
    wanted += [(["ingest", "folder"], folder)] if folder is not None else []
    wanted += [(["ingest", "labels"], labels)] if labels is not None else []
    expected, edited, changes = copy.deepcopy(data), text, []
    for keys, value in wanted:
        old = block.get(keys[0]) if len(keys) == 1 else ingest.get(keys[1])
        if old == value:
            continue
        _set(expected[section], keys, value)
        shown = flow(value) if isinstance(value, dict) else scalar(value)
        if edited is not None:
            edited = with_value(edited, [section, *keys], shown)
        changes.append(Change("params.yaml", _update_note(section, keys, old, value)))
    return _Write("params.yaml", settled(edited, expected), changes) if changes else None


def _new_block(text: str, data: dict, section: str, folder: str, labels: str) -> _Write:
    block = Template((TEMPLATES / "params.yaml").read_text()).substitute(
        section=section, format=flow(written_format()), folder=scalar(folder), labels=scalar(labels)
    )
    expected = {**data, **yaml.safe_load(block)}
    edited = text.rstrip("\n") + "\n\n" + block if text.strip() else block
    said = f"labels from {scalar(labels)}" if labels else "labels from parent folder names"
    what = f"added block {section} (ingest.folder {scalar(folder)}, {said})"
    return _Write("params.yaml", settled(edited, expected), [Change("params.yaml", what)])


def _set(mapping: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        if not isinstance(mapping.get(key), dict):
            mapping[key] = {}
        mapping = mapping[key]
    mapping[keys[-1]] = value


def _update_note(section: str, keys: list[str], old: Any, new: Any) -> str:
    name = ".".join([section, *keys])
    if keys == ["format"]:
        was = "unset" if old is None else flow(old)
        return f"{name} {was} -> {flow(new)}, this imgpack's: the next dvc repro rebuilds the pack"
    return f"{name} {scalar(str(old))} -> {scalar(new)}"


def _plot_templates(root: Path) -> list[_Write]:
    writes = []
    for name in PLOT_TEMPLATES:
        content = (TEMPLATES / "plots" / name).read_bytes()
        path = root / PLOTS_DIR / name
        if not path.exists() or path.read_bytes() != content:
            what = "updated to this imgpack's" if path.exists() else "plot template written"
            writes.append(
                _Write(f"{PLOTS_DIR}/{name}", content, [Change(f"{PLOTS_DIR}/{name}", what)])
            )
    return writes


def _dvcignored(root: Path, folder: str) -> list[str]:
    """The raw folder as a .dvcignore line, when it lies inside the project (DVC walks only that)."""
    if "://" in folder:
        return []
    where = (root / folder).resolve()
    inside = where.relative_to(root.resolve()) if where.is_relative_to(root.resolve()) else None
    return [f"/{inside.as_posix()}/"] if inside is not None and inside.parts else []


def _lines(root: Path, name: str, lines: list[str], why: str) -> _Write | None:
    text = _read(root / name)
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in lines if line not in present]
    if not missing:
        return None
    before = text.rstrip("\n") + "\n\n" if text.strip() else ""
    added = before + f"# imgpack: {why}\n" + "".join(f"{line}\n" for line in missing)
    return _Write(name, added, [Change(name, f"added {', '.join(missing)}")])


def _publish(path: Path, content: str | bytes) -> None:
    """Write `path` whole: a temporary beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.imgpack-init-{os.getpid()}")
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content)
    os.replace(temporary, path)
