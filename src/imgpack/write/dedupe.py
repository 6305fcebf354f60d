"""Dedupe's aliases keep nothing of their own: one that differs from its copy is refused, naming both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgpack.errors import InputError, name_offenders
from imgpack.ingest.manifest import read_manifest
from imgpack.ingest.splits import FOLDERS, folder_split

__all__ = ["AliasCheck"]


class AliasCheck:
    """Each alias's label and metadata, held until the copies they name are read again. With
    `splits` "folders", an alias in another split folder than its copy is refused too (the same
    image in train/ and test/); with drawn splits an alias reads back its copy's split, so that
    identical images never land in two splits."""

    def __init__(self, splits: dict[str, float] | str | None = None):
        self.by_folder = splits == FOLDERS
        self.pending: dict[str, list[tuple[str, str, Any]]] = {}  # target -> (alias, label, extra)

    def add(self, row: dict[str, Any]) -> None:
        self.pending.setdefault(row["duplicate_of"], []).append(
            (row["key"], row["label"], row["extra"])
        )

    def refuse_conflicts(self, manifest: Path) -> None:
        """Read the manifest again for the aliased copies (only when there are aliases) and raise
        InputError naming every alias whose label, split folder or metadata differ from its copy's."""
        if not self.pending:
            return
        conflicts = []
        _, rows = read_manifest(manifest)
        for row in rows:
            for alias, label, extra in self.pending.get(row["key"], ()):
                if label != row["label"]:
                    conflicts.append(
                        f"{alias} (label {label!r}; {row['key']} has {row['label']!r})"
                    )
                elif self.by_folder and folder_split(alias) != folder_split(row["key"]):
                    conflicts.append(
                        f"{alias} (split {folder_split(alias)!r}; {row['key']} is in "
                        f"{folder_split(row['key'])!r})"
                    )
                elif extra != row["extra"]:
                    conflicts.append(f"{alias} (metadata {extra}; {row['key']} has {row['extra']})")
        if conflicts:
            raise InputError(
                f"identical images with other labels, splits or metadata "
                f"{name_offenders(conflicts, 5)}: with pack.duplicates: dedupe each is stored once "
                "and read back with its first copy's; give the copies the same label, split and "
                "metadata (or remove one), or keep every copy "
                "(pack.duplicates: keep, or imgpack build --duplicates keep)"
            )
