"""YAML files changed as text where that keeps the user's comments, rewritten whole where it cannot."""

from __future__ import annotations

import re
from typing import Any

import yaml

from imgpack.errors import InputError

__all__ = ["dump", "read_mapping", "settled", "with_children", "with_value", "scalar"]


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as DVC's own files have them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1 << 16)


def scalar(value: str) -> str:
    """`value` as a YAML scalar: bare where YAML reads it back as the same string, quoted else."""
    bare = f"key: {value}"
    try:
        if value and yaml.safe_load(bare) == {"key": value}:
            return value
    except yaml.YAMLError:
        pass
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_mapping(text: str, name: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        message = f"{name}: not valid YAML ({exc}); fix it and run again"
        raise InputError(message.replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: expected a mapping at the top level; fix it and run again")
    return data


def settled(edited: str | None, expected: dict[str, Any]) -> str:
    """The text edit when it reads back as `expected`, or else `expected` dumped whole
    (the file's comments are lost then, its content is not)."""
    if edited is not None:
        try:
            if yaml.safe_load(edited) == expected:
                return edited
        except yaml.YAMLError:
            pass
    return dump(expected)


def _meaningful(line: str) -> bool:
    body = line.strip()
    return bool(body) and not body.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, end: int, parent: int, key: str) -> tuple[int, int] | None:
    """(line of `key:`, end of its block) among the children of the block lines[start:end]."""
    child = None
    for i in range(start, end):
        if not _meaningful(lines[i]):
            continue
        if _indent(lines[i]) <= parent:
            return None
        child = _indent(lines[i]) if child is None else child
        if _indent(lines[i]) == child and re.match(
            rf"{re.escape(key)}\s*:(\s|$)", lines[i][child:]
        ):
            return i, _block_end(lines, i + 1, end, child)
    return None


def _block_end(lines: list[str], start: int, end: int, indent: int) -> int:
    """The first line from `start` back at `indent` or left of it: where the block ends."""
    ends = (i for i in range(start, end) if _meaningful(lines[i]) and _indent(lines[i]) <= indent)
    return next(ends, end)


def with_value(text: str, keys: list[str], value: str) -> str | None:
    """`text` with the line of nested key `keys` now holding `value` (YAML text), its comment
    kept; None when no such line is found."""
    lines = text.splitlines(keepends=True)
    start, end, parent, found = 0, len(lines), -1, None
    for key in keys:
        found = _block(lines, start, end, parent, key)
        if found is None:
            return None
        parent, (start, end) = _indent(lines[found[0]]), (found[0] + 1, found[1])
    line = lines[found[0]].rstrip("\n")
    content = f"{' ' * parent}{keys[-1]}: {value}"
    comment = _comment_start(line)
    if comment is not None:
        content = content.ljust(comment) + line[comment:]
    lines[found[0]] = content + "\n"
    return "".join(lines)


def _comment_start(line: str) -> int | None:
    """Where the comment of `key: value  # comment` starts: the first ` #` outside the value."""
    for match in re.finditer(r"\s+#", line):
        try:
            yaml.safe_load(line[: match.start()].strip())
        except yaml.YAMLError:
            continue  # a ` #` inside a quoted value
        return match.start()
    return None


def with_children(text: str, key: str, children: str) -> str:
    """`text` with the mapping `children` (YAML text at indent 0) added at the end of the
    top-level block `key`, indented as that block's children are; the block made if missing."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = _block(lines, 0, len(lines), -1, key)
    if found is None:
        return "".join(lines) + ("\n" if lines else "") + f"{key}:\n" + _indented(children, 2)
    at, end = found
    while end > at + 1 and not _meaningful(lines[end - 1]):  # before trailing blanks and comments
        end -= 1
    inside = [_indent(line) for line in lines[at + 1 : end] if _meaningful(line)]
    added = "\n" + _indented(children, inside[0] if inside else 2)
    after = (
        ["\n"] if end < len(lines) and lines[end].strip() else []
    )  # keep the blank line above the next key
    return "".join(lines[:end] + [added] + after + lines[end:])


def _indented(text: str, by: int) -> str:
    return "".join((" " * by + line) if line.strip() else line for line in text.splitlines(True))
