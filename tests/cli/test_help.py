"""Every command's help ends with an example line a user can copy."""

import subprocess
import sys

import pytest

COMMANDS = [
    ["imgpack.cli.main"],
    *(["imgpack.cli.main", c] for c in ("init", "build", "info", "export", "verify", "convert")),
    *(["imgpack.cli.main", c] for c in ("compact", "diff", "cache")),
    *([f"imgpack.stages.{s}"] for s in ("ingest", "pack", "validate", "summarize")),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_an_example(command):
    module, *rest = command
    shown = subprocess.run(
        [sys.executable, "-m", module, *rest, "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0
    last = shown.stdout.strip().splitlines()[-1]
    assert last.startswith("example: ") and ("imgpack" in last)
