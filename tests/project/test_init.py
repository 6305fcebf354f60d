"""init_project writes one pack's pipeline into a project, keeps what is there, and changes nothing twice."""

import pytest
import yaml

from imgpack.errors import InputError
from imgpack.params import flow, load_params, written_format
from imgpack.project.init import init_project
from imgpack.project.pipeline import Pipeline
from imgpack.project.yamltext import scalar, settled, with_children, with_value
from tests.conftest import REPO
from tests.project.conftest import files_of

USER_DVC_YAML = """\
# the user's own pipeline
stages:
    train:   # four-space indents, as some editors write them
        cmd: python train.py
        deps:
            - data/packed/images.lmdb
plots:
    - loss.csv
"""
USER_PARAMS = "# the user's params\ntrain:\n  lr: 0.1   # learning rate\n"


def load(path):
    return yaml.safe_load(path.read_text())


def strings(changes):
    return [str(c) for c in changes]


def test_init_writes_the_stages_the_params_block_the_templates_and_ignore_lines(repository):
    changes = strings(init_project(repository, folder="data/raw/images", labels=""))
    assert changes[0] == "dvc.yaml: added stages ingest, pack, validate, summarize"
    assert "params.yaml: added block imgpack" in changes[1]
    stages = load(repository / "dvc.yaml")["stages"]
    assert list(stages) == ["ingest", "pack", "validate", "summarize"]
    # no dependency on imgpack's source: the pack stage tracks the format param instead
    every_dep = [d for stage in stages.values() for d in stage.get("deps", [])]
    assert not [d for d in every_dep if "src/" in d or "imgpack/" in d]
    assert "imgpack.format" in stages["pack"]["params"]
    assert "--section imgpack " in stages["pack"]["cmd"]
    block = load(repository / "params.yaml")["imgpack"]
    assert block["format"] == written_format()
    assert (block["ingest"]["folder"], block["ingest"]["labels"]) == ("data/raw/images", "")
    assert sorted(p.name for p in (repository / "plots/imgpack").iterdir()) == [
        "counts_by_category.json",
        "counts_by_split.json",
        "dimensions.json",
    ]
    assert "/data/raw/images/" in (repository / ".dvcignore").read_text().splitlines()
    assert (repository / ".gitignore").read_text().splitlines()[-3:] == [
        "/data/interim/manifest.jsonl",
        "/reports/ingest.json",
        "/reports/validation.json",
    ]


def test_the_params_block_has_this_repositorys_keys_and_defaults(repository):
    init_project(repository, folder="data/raw/images", labels="data/raw/labels.csv")
    block = load(repository / "params.yaml")["imgpack"]
    assert block.pop("format") == written_format()
    assert block == load(REPO / "params.yaml")
    for stage in ("ingest", "pack", "validate", "summarize"):  # and the stages read them
        load_params(repository / "params.yaml", stage, "imgpack")


def test_a_second_init_changes_nothing(repository):
    init_project(repository, folder="images", labels="labels.csv", out="packs/a.lmdb")
    before = files_of(repository)
    assert init_project(repository) == []
    assert init_project(repository, folder="images", labels="labels.csv") == []
    assert files_of(repository) == before


def test_init_merges_beside_the_users_stages_and_keeps_their_comments(repository):
    (repository / "dvc.yaml").write_text(USER_DVC_YAML)
    (repository / "params.yaml").write_text(USER_PARAMS)
    init_project(repository)
    dvc_yaml, params = (
        (repository / "dvc.yaml").read_text(),
        (repository / "params.yaml").read_text(),
    )
    assert dvc_yaml.startswith(USER_DVC_YAML.split("plots:")[0])  # the user's lines, untouched
    assert "# four-space indents" in dvc_yaml and params.startswith(USER_PARAMS)
    merged = yaml.safe_load(dvc_yaml)
    assert list(merged["stages"]) == ["train", "ingest", "pack", "validate", "summarize"]
    assert (
        merged["plots"] == ["loss.csv"] and merged["stages"]["pack"] == Pipeline().stages()["pack"]
    )
    assert yaml.safe_load(params)["train"] == {"lr": 0.1}


def test_a_clash_of_stage_names_is_refused_in_one_line_without_writing_anything(repository):
    (repository / "dvc.yaml").write_text("stages:\n  pack:\n    cmd: ./my_pack.sh\n")
    before = files_of(repository)
    with pytest.raises(InputError) as refused:
        init_project(repository)
    message = str(refused.value)
    assert "\n" not in message and "stages named pack;" in message and "--force" in message
    assert files_of(repository) == before


def test_force_replaces_the_clashing_stages_and_keeps_the_others(repository):
    (repository / "dvc.yaml").write_text(
        "stages:\n  pack:\n    cmd: ./my_pack.sh\n  own: {cmd: x}\n"
    )
    assert "replaced stages pack (--force)" in strings(init_project(repository, force=True))[1]
    stages = load(repository / "dvc.yaml")["stages"]
    assert stages["pack"] == Pipeline().stages()["pack"] and stages["own"] == {"cmd": "x"}


def test_a_prefix_keeps_a_second_pack_apart_from_the_first(repository):
    init_project(repository)
    changes = strings(init_project(repository, folder="scans", prefix="scans"))
    assert changes[0] == (
        "dvc.yaml: added stages scans_ingest, scans_pack, scans_validate, scans_summarize"
    )
    stages = load(repository / "dvc.yaml")["stages"]
    assert len(stages) == 8
    outs = [next(iter(o)) for stage in stages.values() for o in stage.get("outs", [])]
    assert len(outs) == len(set(outs)) and "data/packed/scans.lmdb" in outs
    params = load(repository / "params.yaml")
    assert params["imgpack_scans"]["ingest"]["folder"] == "scans"
    assert "imgpack_scans.format" in stages["scans_pack"]["params"]
    assert "/scans/" in (repository / ".dvcignore").read_text().splitlines()


def test_a_rerun_without_out_keeps_the_pack_path_an_earlier_init_chose(repository):
    init_project(repository, out="data/packs/mnist.lmdb")
    assert init_project(repository) == []
    assert "data/packs/mnist.lmdb" in load(repository / "dvc.yaml")["stages"]["pack"]["cmd"]


def test_init_updates_only_the_format_when_it_differs_and_says_so(repository):
    init_project(repository)
    path = repository / "params.yaml"
    text = path.read_text()
    old = text.replace(f"format: {flow(written_format())}", "format: {pack: 2, shard: 2}")
    assert old != text
    path.write_text(old)
    assert strings(init_project(repository)) == [
        f"params.yaml: imgpack.format {{pack: 2, shard: 2}} -> {flow(written_format())}, "
        "this imgpack's: the next dvc repro rebuilds the pack"
    ]
    assert path.read_text() == text  # the comments kept, every other line as it was


def test_a_folder_given_again_updates_the_params_and_the_dvcignore(repository):
    init_project(repository, folder="raw")
    changes = strings(init_project(repository, folder="raw2"))
    assert changes == ["params.yaml: imgpack.ingest.folder raw -> raw2", ".dvcignore: added /raw2/"]
    assert load(repository / "params.yaml")["imgpack"]["ingest"]["folder"] == "raw2"


def test_a_folder_outside_the_project_adds_no_dvcignore_line(repository, tmp_path):
    init_project(repository, folder=str(tmp_path / "elsewhere"))
    assert "imgpack" not in (repository / ".dvcignore").read_text()


@pytest.mark.parametrize("missing", [".dvc", ".git"])
def test_outside_a_git_and_dvc_repository_init_refuses_naming_the_command(repository, missing):
    import shutil

    shutil.rmtree(repository / missing)
    before = files_of(repository)
    with pytest.raises(InputError, match="git init"):
        init_project(repository)
    assert files_of(repository) == before


def test_a_prefix_that_is_no_stage_name_is_refused(repository):
    with pytest.raises(InputError, match="--prefix"):
        init_project(repository, prefix="a/b")


def test_a_stage_reading_a_block_of_another_format_fails_saying_what_to_run(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"imgpack_x": {"format": {"pack": 1, "shard": 1}}}))
    with pytest.raises(InputError) as failed:
        load_params(params, "pack", "imgpack_x")
    assert "records pack format {pack: 1, shard: 1} (imgpack_x.format)" in str(failed.value)
    assert 'run "imgpack init --prefix x" to record it' in str(failed.value)
    with pytest.raises(InputError, match='no "imgpack" block; run "imgpack init"'):
        load_params(params, "pack", "imgpack")


def test_an_imgpack_writing_another_format_fails_on_the_projects_block(repository, monkeypatch):
    import imgpack.params

    init_project(repository)
    monkeypatch.setattr(imgpack.params, "FORMAT_VERSION", 99)
    with pytest.raises(
        InputError, match=r"this imgpack writes format \{layout: 1, pack: 99, shard: 2\}"
    ):
        load_params(repository / "params.yaml", "ingest", "imgpack")
    assert [c.path for c in init_project(repository)] == ["params.yaml"]
    assert load_params(repository / "params.yaml", "ingest", "imgpack").folder == "data/raw/images"


# -- the YAML text edits: kept when they read back right, the whole file dumped otherwise -------
def test_a_value_is_replaced_on_its_line_keeping_its_comment():
    text = 'a:\n  b:\n    c: "x # y"   # note\n  c: 2\n'
    edited = with_value(text, ["a", "b", "c"], "z")
    assert edited == "a:\n  b:\n    c: z         # note\n  c: 2\n"
    assert with_value(text, ["a", "d"], "1") is None


def test_children_go_at_the_end_of_their_block_with_its_indent():
    text = "stages:\n    a:\n        cmd: x\n\n# trailing\nvars: []\n"
    edited = with_children(text, "stages", "b:\n  cmd: y\n")
    assert yaml.safe_load(edited) == {"stages": {"a": {"cmd": "x"}, "b": {"cmd": "y"}}, "vars": []}
    assert edited.endswith("# trailing\nvars: []\n")


def test_an_edit_that_does_not_read_back_right_falls_back_to_the_whole_file_dumped():
    expected = {"stages": {"a": 1, "b": 2}}
    assert yaml.safe_load(settled("stages: {a: 1}\n  b: 2\n", expected)) == expected


@pytest.mark.parametrize("value", ["data/raw", "", "a: b", "#x", "yes", "01"])
def test_scalars_read_back_as_the_same_string(value):
    assert yaml.safe_load(f"k: {scalar(value)}") == {"k": value}
