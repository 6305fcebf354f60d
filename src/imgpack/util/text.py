"""Words for messages: counts with their nouns."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """'1 shard', '4 shards': a count for a message."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
