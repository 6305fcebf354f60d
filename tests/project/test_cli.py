"""`imgpack init` as a user types it: what it wrote, the next command, refusals in one line."""

import argparse

import pytest

from imgpack.cli import init
from tests.cli.test_main import assert_one_line_error
from tests.conftest import dvc, imgpack_cli
from tests.project.conftest import RAW, files_of
from tests.stages.test_dvc_pipeline import stages_run

ALL = ["ingest", "pack", "validate", "summarize"]
NOTHING = "nothing to change: this project already has these stages and params"


def test_the_init_module_parses_its_options_and_prints_each_change(repository, monkeypatch, capsys):
    parser = argparse.ArgumentParser(prog="imgpack")
    init.add_parser(parser.add_subparsers())
    args = parser.parse_args(["init", "--folder", "scans", "--labels", "", "--prefix", "s"])
    monkeypatch.chdir(repository)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dvc.yaml: added stages s_ingest, s_pack, s_validate, s_summarize"
    assert lines[-1] == "next: dvc repro" and ".dvcignore: added /scans/" in lines
    assert args.func(parser.parse_args(["init", "--prefix", "s"])) == 0
    assert capsys.readouterr().out.splitlines() == [NOTHING, "next: dvc repro"]


# The tests below run the `imgpack` command: they need `init` registered in imgpack.cli.main.
@pytest.mark.slow
def test_imgpack_init_then_dvc_repro_builds_the_pack(project):
    shown = imgpack_cli("init", "--folder", RAW, "--labels", "", cwd=project).stdout.splitlines()
    assert shown[0] == "dvc.yaml: added stages ingest, pack, validate, summarize"
    assert shown[-1] == "next: dvc repro"
    assert stages_run(dvc("repro", cwd=project).stdout) == ALL
    again = imgpack_cli("init", cwd=project).stdout.splitlines()
    assert again == [NOTHING, "next: dvc repro"]


def test_imgpack_init_refuses_a_clash_in_one_line_and_writes_nothing(repository):
    (repository / "dvc.yaml").write_text("stages:\n  ingest:\n    cmd: ./fetch.sh\n")
    before = files_of(repository)
    refused = imgpack_cli("init", cwd=repository, check=False)
    assert_one_line_error(refused, "dvc.yaml already has stages named ingest;", "--force")
    assert files_of(repository) == before


def test_imgpack_init_outside_a_dvc_project_names_the_commands_to_run(tmp_path):
    refused = imgpack_cli("init", cwd=tmp_path, check=False)
    assert_one_line_error(refused, "git init && dvc init")
    assert list(tmp_path.iterdir()) == []
