"""Join the sorted file walk with the labels (a table's rows, or folder names), in key order."""

from __future__ import annotations

import os
import unicodedata

from imgpack.ingest.report import IngestReport
from imgpack.ingest.splits import folder_split
from imgpack.params import IngestParams
from imgpack.util.urls import is_url

__all__ = ["labelled", "in_split_folders"]


def labelled(
    found_files, groups, lookup, params: IngestParams, report: IngestReport, account, root: str
):
    """Merge the sorted file walk with the sorted label groups; yield (found, label, extra) to examine.

    Table paths are NFC; a file name in another normalization (NFD from macOS or a zip) is
    matched by a lookup under NFC and keeps its own spelling as its key.
    """
    pending = next(groups, None) if groups is not None else None
    extensions = frozenset(params.extensions)
    empty: dict = {}  # no extra columns: one shared (never modified) dict for every record
    taken: set[str] = set()  # table paths matched by lookup, out of the merge's order
    for found in found_files:
        report.discovered += 1
        match = None
        nfc = found.key if found.key.isascii() else unicodedata.normalize("NFC", found.key)
        if nfc != found.key and not found.problem:
            if not is_url(root) and os.path.lexists(os.path.join(root, nfc)):
                account(found, "bad_path", f"same name as {nfc!r} in another Unicode normalization")
                continue
            if lookup is not None:
                match = lookup(nfc)
                if match is not None:
                    taken.add(nfc)
        elif groups is not None:
            while pending is not None and pending[0] < found.key:
                if pending[0] not in taken:
                    _row_without_image(pending, report)
                pending = next(groups, None)
            if pending is not None and pending[0] == found.key:
                match, pending = pending, next(groups, None)
        if found.problem:
            account(found, found.problem, found.detail)
            continue
        if _extension(found.key) not in extensions:
            account(found, "not_image", "extension not in ingest.extensions")
            continue
        if groups is None:
            parent = found.key.rpartition("/")[0]
            if not parent:
                account(found, "unlabeled", "no parent folder to take a label from")
                continue
            yield found, parent.rpartition("/")[2], empty
        elif match is None:
            account(found, "unlabeled", "no row in the labels table")
        elif len(match[1]) > 1:
            account(found, "conflicting_labels", f"label rows disagree: {', '.join(match[1])}")
        elif not match[1][0]:
            account(found, "unlabeled", f"empty label in row {match[3]}")
        else:
            yield found, match[1][0], match[2]
    if groups is not None:
        while pending is not None:
            if pending[0] not in taken:
                _row_without_image(pending, report)
            pending = next(groups, None)


def _extension(key: str) -> str:
    """posixpath.splitext(key)[1].lower(), without its cost: a leading dot starts no extension."""
    dot = key.rfind(".")
    start = key.rfind("/") + 1
    if dot <= start or key[start:dot].strip(".") == "":
        return ""
    return key[dot:].lower()


def in_split_folders(candidates, account):
    for found, label, extra in candidates:
        if folder_split(found.key) is None:
            top = found.key.partition("/")[0] if "/" in found.key else "(no folder)"
            account(
                found,
                "unknown_split",
                f"top folder {top!r} is not train, val/valid/validation or test",
            )
            continue
        yield found, label, extra


def _row_without_image(group, report: IngestReport) -> None:
    report.without_image(
        {
            "path": group[0],
            "reason": "missing_image",
            "detail": f"label row {group[3]} has no image",
        }
    )
