"""Paths that may be URLs (s3://, gs://, ...): telling them apart and joining keys onto them."""

from __future__ import annotations


def is_url(path: object) -> bool:
    return "://" in str(path)


def join(folder: str, key: str) -> str:
    """The path of `key` under `folder`, a local path or a URL."""
    return f"{str(folder).rstrip('/')}/{key}"
