"""The ingest report: every input file accounted for, lists spilled to disk and streamed out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpack.errors import InputError, PolicyError, name_offenders
from imgpack.ingest.found import Found, display_path
from imgpack.util.jsonfiles import dumps, write_json_stream
from imgpack.util.text import counted

__all__ = ["IngestReport", "Accounting", "trailing_note", "LISTED"]

LISTED = 1000  # entries of each list kept in memory (the report file has them all)


@dataclass
class IngestReport:
    """Where every input went: discovered = packed + skipped, plus label rows with no image.

    Lists hold their first LISTED entries; `write(path)` streams every entry from the spill
    files, so a folder of a million junk files or duplicates costs disk, not memory.
    """

    discovered: int = 0
    packed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    label_rows: int = 0
    rows_without_image: list[dict[str, Any]] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # packed, with something to know
    counts: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    read: int = 0  # files read this run; the others were known from the ingest cache
    spill: Path | None = None

    def _add(self, name: str, item: Any) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        held = getattr(self, name)
        if len(held) < LISTED:
            held.append(item)
        if self.spill is not None:
            with open(self.spill / f"{name}.jsonl", "a", encoding="utf-8") as handle:
                handle.write(dumps(item) + "\n")

    def skip(self, found: Found | str, kind: str, detail: str) -> None:
        path = found.key if isinstance(found, Found) else found
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        self._add("skipped", {"path": display_path(path), "reason": kind, "detail": detail})

    def note(self, item: dict[str, str]) -> None:
        self._add("notes", item)

    def without_image(self, item: dict[str, Any]) -> None:
        self._add("rows_without_image", item)

    def duplicate_group(self, group: list[str]) -> None:
        self.counts["duplicate_files"] = self.counts.get("duplicate_files", 0) + len(group)
        self._add("duplicate_groups", group)

    def total(self, name: str) -> int:
        return self.counts.get(name, 0)

    def as_dict(self) -> dict[str, Any]:
        """The numbers, and the lists as far as they are held in memory (see `write`)."""
        return {
            "discovered": self.discovered,
            "packed": self.packed,
            "read": self.read,
            "skipped": self.total("skipped"),
            "skipped_by_reason": dict(sorted(self.by_reason.items())),
            "label_rows": self.label_rows,
            "label_rows_without_image": self.total("rows_without_image"),
            "duplicates": {
                "groups": self.total("duplicate_groups"),
                "files": self.total("duplicate_files"),
            },
            "skipped_files": self.skipped,
            "label_rows_without_image_list": self.rows_without_image,
            "duplicate_groups": self.duplicate_groups,
            "notes": self.total("notes"),
            "notes_list": self.notes,
        }

    def totals(self) -> dict[str, Any]:
        """The counts without the lists: what a run that found nothing changed reports again."""
        return {
            "discovered": self.discovered,
            "packed": self.packed,
            "label_rows": self.label_rows,
            "counts": self.counts,
            "by_reason": self.by_reason,
        }

    @classmethod
    def from_totals(cls, totals: dict[str, Any]) -> IngestReport:
        return cls(**totals)

    def write(self, path: Path) -> None:
        """The report as JSON, every list entry streamed from its spill file."""
        lists = {
            "skipped_files": "skipped",
            "label_rows_without_image_list": "rows_without_image",
            "duplicate_groups": "duplicate_groups",
            "notes_list": "notes",
        }
        summary = self.as_dict()

        def entries(name: str):
            spilled = self.spill / f"{name}.jsonl" if self.spill is not None else None
            if spilled is None or not spilled.exists():
                yield from (dumps(item) for item in getattr(self, name))
                return
            with open(spilled, encoding="utf-8") as handle:
                for line in handle:
                    yield line.rstrip("\n")

        fields = {
            key: (entries(lists[key]) if key in lists else value) for key, value in summary.items()
        }
        write_json_stream(Path(path), fields)


def trailing_note(key: str, trailing: int, fmt: str) -> dict[str, str]:
    return {
        "path": display_path(key),
        "note": f"{trailing} bytes after the end of the {fmt} image "
        "(kept as they are, e.g. a motion photo)",
    }


class Accounting:
    """Skipped files into the report; offenders of kinds whose policy is `fail`, for one refusal
    naming them all once every file is accounted for."""

    def __init__(self, report: IngestReport, on_error: dict[str, str]):
        self.report = report
        self.on_error = on_error
        self.refused: dict[str, list[str]] = {}
        self.trail: list[tuple[str, str, str]] | None = None  # (key, kind, detail), when kept

    def __call__(self, found: Found | str, kind: str, detail: str) -> None:
        self.report.skip(found, kind, detail)
        if self.trail is not None:
            self.trail.append((getattr(found, "key", found), kind, detail))
            if len(self.trail) > LISTED * 100:  # a folder of junk: no records kept, not 100 MB
                self.trail = None
        if self.on_error[kind] == "fail":
            offenders = self.refused.setdefault(kind, [])
            if len(offenders) <= LISTED:
                offenders.append(display_path(getattr(found, "key", found)))

    def check(self, folder: object) -> None:
        """Raise the refusal, or the error for a folder with nothing to pack."""
        report = self.report
        if self.on_error["missing_image"] == "fail":
            for row in report.rows_without_image:
                self.refused.setdefault("missing_image", []).append(row["path"])
        if self.refused:
            parts = [
                f"{kind} {name_offenders(paths, total=report.by_reason.get(kind, len(paths)))}"
                for kind, paths in sorted(self.refused.items())
            ]
            raise PolicyError(
                "ingest refused the inputs (policy 'fail'): "
                + "; ".join(parts)
                + ". Fix them, or set ingest.on_error.<kind> to 'skip' in params.yaml"
            )
        if not report.packed:
            reasons = ", ".join(
                f"{kind} {n}" for kind, n in report.as_dict()["skipped_by_reason"].items()
            )
            raise InputError(
                f"{folder}: no images to pack ({counted(report.discovered, 'file')} found, all skipped: "
                f"{reasons or 'none'}); check ingest.folder and ingest.extensions"
            )
