"""What every stage entry point shares: error-to-exit-code handling and atomic JSON reports."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgpack.errors import ImgpackError, output_failed

__all__ = ["run_stage", "write_json", "fail_line", "counted"]


def fail_line(exc: BaseException) -> str:
    return "imgpack: error: " + " ".join(str(exc).split())


def counted(n: int, noun: str) -> str:
    """'1 shard', '4 shards': a count for a message."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_stage(body: Callable[[], Any], error_code: int = 1) -> int:
    """Run a stage or command; an ImgpackError or OSError becomes one line on stderr and exit
    `error_code`; the body's own return value (an int) is the exit code otherwise."""
    # A build allocates millions of small tuples, none of them cyclic: collecting every 700
    # allocations (the default) cost about 4% of a build's time, measured.
    gc.set_threshold(50_000, 20, 20)
    try:
        code = body()
    except ImgpackError as exc:
        print(fail_line(exc), file=sys.stderr)
        return error_code
    except BrokenPipeError:
        return error_code
    except OSError as exc:  # disk full, permissions: the environment, not a bug
        print(fail_line(exc), file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print("imgpack: interrupted; nothing was published", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


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
