"""The README's examples run as written (against a sample pack instead of the pipeline's)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tool_env

PIPELINE_PACK = "data/packed/images.lmdb"


def python_blocks(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def run_example(code: str, pack: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(code.replace(PIPELINE_PACK, str(pack)))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=tool_env()
    )


def test_the_catalog_selection_example_runs(sample_pack, tmp_path):
    code = (
        python_blocks("### Training with PyTorch")[1] + "\nassert 0 < len(big_circles) < len(df)\n"
    )
    result = run_example(code, sample_pack, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_training_example_runs_two_epochs_with_workers(sample_pack, tmp_path):
    pytest.importorskip("torch", reason="torch is an optional extra")
    result = run_example(python_blocks("### Training with PyTorch")[0], sample_pack, tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.findall(r"epoch \d: loss \d+\.\d+", result.stdout) and "epoch 1" in result.stdout
