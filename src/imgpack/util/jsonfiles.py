"""JSON written deterministically: canonical one-line texts, and whole reports replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imgpack.errors import output_failed


def write_json(path: Path, data: Any) -> None:
    """Write JSON deterministically and atomically (a reader never sees half a report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise output_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json_stream(path: Path, fields: dict[str, Any]) -> None:
    """Like `write_json` for a flat mapping whose list values may be iterators of JSON texts
    (one entry each): the lists are streamed, never held whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write("{")
            for n, key in enumerate(sorted(fields)):
                value = fields[key]
                out.write(("," if n else "") + f"\n  {json.dumps(key)}: ")
                if isinstance(value, (dict, list, int, float, str)) or value is None:
                    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
                    out.write(text.replace("\n", "\n  "))
                    continue
                out.write("[")
                written = 0
                for entry in value:
                    out.write(("," if written else "") + "\n    " + entry)
                    written += 1
                out.write("\n  ]" if written else "]")
            out.write("\n}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise output_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


# One encoder for every call: json.dumps with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Canonical JSON: the same value gives the same text on every run and machine."""
    return _ENCODER.encode(value)
