"""The validation report, written once: what validate and a one-pass build's read-back both say."""

from __future__ import annotations

from typing import Any

from imgpack.errors import ValidationError, name_offenders

__all__ = ["PROBLEM_KINDS", "validation_report", "raise_on_mismatch"]

PROBLEM_KINDS = ("missing", "extra", "hash_mismatch", "label_mismatch", "meta_mismatch")


def validation_report(
    *,
    manifest_records: int,
    pack_records: int,
    pack_aliases: int,
    checked: int,
    shards: int,
    shards_known: int,
    problems: dict[str, list[str]] | None = None,
    max_listed: int = 20,
) -> dict[str, Any]:
    """`reports/validation.json`: counts, shards hashed or known, and the offenders per kind
    (the first `max_listed` keys of each; the counts are whole)."""
    problems = problems or {}
    count_ok = pack_records + pack_aliases == manifest_records
    return {
        "ok": count_ok and not any(problems.values()),
        "manifest_records": manifest_records,
        "pack_records": pack_records,
        "pack_aliases": pack_aliases,
        "checked": checked,
        "shards": shards,
        "shards_hashed": shards - shards_known,
        "shards_known": shards_known,
        **({kind: len(problems.get(kind, ())) for kind in PROBLEM_KINDS} if problems else {}),
        **({"offenders": _offenders(problems, max_listed)} if problems else {}),
    }


def _offenders(problems: dict[str, list[str]], max_listed: int) -> dict[str, list[str]]:
    return {kind: keys[:max_listed] for kind, keys in problems.items() if keys}


def raise_on_mismatch(
    report: dict[str, Any],
    problems: dict[str, list[str]],
    pack: object,
    manifest: object,
    max_listed: int,
) -> None:
    """A failed report as one ValidationError naming each kind's offenders and the remedy."""
    if report["ok"]:
        return
    found = [
        f"{kind} {name_offenders(keys, max_listed)}" for kind, keys in problems.items() if keys
    ]
    if report["pack_records"] + report["pack_aliases"] != report["manifest_records"]:
        found.insert(
            0,
            f"count: pack has {report['pack_records']} + {report['pack_aliases']} aliases, "
            f"manifest {report['manifest_records']}",
        )
    raise ValidationError(
        f"{pack} does not match {manifest}: "
        + "; ".join(found)
        + f". Rebuild it from the raw folder (dvc repro -f pack) or restore the version DVC"
        f" cached (dvc checkout --force {pack})"
    )
