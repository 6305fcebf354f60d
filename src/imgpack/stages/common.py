"""What every stage entry point shares: error-to-exit-code handling and atomic JSON reports."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgpack.errors import ImgpackError, output_failed

__all__ = ["run_stage", "write_json", "fail_line"]


def fail_line(exc: BaseException) -> str:
    return "imgpack: error: " + " ".join(str(exc).split())


def run_stage(body: Callable[[], Any], error_code: int = 1) -> int:
    """Run a stage or command; an ImgpackError or OSError becomes one line on stderr and exit
    `error_code`; the body's own return value (an int) is the exit code otherwise."""
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
