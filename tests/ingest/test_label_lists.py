"""Label lists as people have them: im2rec .lst/.ctl, Caffe .txt, headerless tables, NFD names."""

import json
import subprocess
import sys
import unicodedata

import imgpack
from imgpack.ingest.run import ingest
from imgpack.params import IngestParams
from tests.conftest import png_bytes, source_files, write_tree


def ingested_rows(raw, labels, tmp_path):
    """The manifest rows ingest writes for `raw` with the labels table `labels`."""
    ingest(raw, tmp_path / "m.jsonl", labels=labels)
    return [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()[1:]]


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "imgpack.cli.main", *map(str, args)], capture_output=True, text=True
    )


def test_the_mnist_testing_ctl_packs_its_10000_images_and_reports_the_training_ones(
    mnist, tmp_path
):
    out = tmp_path / "testing.lmdb"
    built = cli(
        "build", mnist, out, "--labels", mnist / "testing.ctl", "--report", tmp_path / "r.json"
    )
    assert built.returncode == 0, built.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["packed"] == 10_000
    assert report["skipped_by_reason"]["unlabeled"] == 60_000
    assert report["label_rows"] == 10_000 and report["label_rows_without_image"] == 0
    with imgpack.open(out) as pack:
        frame = pack.metadata(columns=["key", "label"])
        assert frame["key"].str.startswith("testing/").all()
        # the im2rec label equals the digit folder for every image
        assert (frame["key"].str.split("/").str[1] == frame["label"]).all()
        assert "index" not in pack.catalog.columns


def test_an_im2rec_lst_with_several_label_columns_and_dot_slash_paths(tree, tmp_path):
    raw = tree({"a/1.png": png_bytes(shade=1), "b/2.png": png_bytes(shade=2)})
    lst = tmp_path / "train.lst"
    lst.write_text("0\t3\t0.5\t./a/1.png\n1\t4\t0.25\t./b/2.png\n")
    rows = ingested_rows(raw, lst, tmp_path)
    assert [(r["key"], r["label"], r["extra"]) for r in rows] == [
        ("a/1.png", "3", {"label_1": "0.5"}),
        ("b/2.png", "4", {"label_1": "0.25"}),
    ]


def test_an_im2rec_lst_whose_later_rows_carry_more_labels_keeps_each_rows_own(tree, tmp_path):
    raw = tree({"a/1.png": png_bytes(shade=1), "b/2.png": png_bytes(shade=2)})
    lst = tmp_path / "train.lst"
    lst.write_text("0\t3\ta/1.png\n1\t4\t0.25\tb/2.png\n")
    rows = ingested_rows(raw, lst, tmp_path)
    assert [(r["key"], r["label"], r["extra"]) for r in rows] == [
        ("a/1.png", "3", {}),
        ("b/2.png", "4", {"label_1": "0.25"}),
    ]


def test_a_caffe_txt_list_with_spaces_in_paths(tree, tmp_path):
    raw = tree({"my cats/1.png": png_bytes(shade=1), "dogs/2.png": png_bytes(shade=2)})
    txt = tmp_path / "train.txt"
    txt.write_text("my cats/1.png 7\ndogs/2.png\t8\n\n")
    rows = ingested_rows(raw, txt, tmp_path)
    assert [(r["key"], r["label"]) for r in rows] == [("dogs/2.png", "8"), ("my cats/1.png", "7")]


def test_a_headerless_csv_is_read_with_columns_from_the_cli(tree, tmp_path):
    raw = tree({"a/1.png": png_bytes(shade=1), "b/2.png": png_bytes(shade=2)})
    table = tmp_path / "labels.csv"
    table.write_text("0,cat,a/1.png,red\n1,dog,b/2.png,blue\n")
    out = tmp_path / "p.lmdb"
    built = cli("build", raw, out, "--labels", table, "--columns", "index,label,path,colour")
    assert built.returncode == 0, built.stderr
    with imgpack.open(out) as pack:
        assert [(r.key, r.label, r.meta["extra"]) for r in pack] == [
            ("a/1.png", "cat", {"colour": "red"}),
            ("b/2.png", "dog", {"colour": "blue"}),
        ]
    wrong = cli("build", raw, tmp_path / "q.lmdb", "--labels", table, "--columns", "a,b")
    assert wrong.returncode == 1 and "no column 'path'" in wrong.stderr


def test_path_and_label_columns_can_be_named_on_the_cli(tree, tmp_path):
    raw = tree({"x.png": png_bytes(shade=1)})
    table = tmp_path / "t.csv"
    table.write_text("file,class\nx.png,owl\n")
    out = tmp_path / "p.lmdb"
    built = cli(
        "build", raw, out, "--labels", table, "--path-column", "file", "--label-column", "class"
    )
    assert built.returncode == 0, built.stderr
    assert imgpack.open(out)[0].label == "owl"


def test_an_nfd_file_name_matches_its_nfc_table_row_and_keeps_its_own_spelling(tmp_path):
    nfd = unicodedata.normalize("NFD", "x/café.png")
    raw = write_tree(tmp_path / "raw", {nfd: png_bytes(shade=3), "x/plain.png": png_bytes()})
    table = tmp_path / "labels.csv"
    table.write_text(
        f"path,label\n{unicodedata.normalize('NFC', 'x/café.png')},coffee\nx/plain.png,p\n"
    )
    out = tmp_path / "p.lmdb"
    built = cli("build", raw, out, "--labels", table)
    assert built.returncode == 0, built.stderr
    with imgpack.open(out) as pack:
        assert sorted(pack.keys()) == sorted([nfd, "x/plain.png"])
        assert pack[nfd].label == "coffee"
    assert cli("export", out, tmp_path / "exp").returncode == 0
    assert source_files(tmp_path / "exp") == source_files(raw)


def test_two_files_whose_names_differ_only_by_normalization_are_reported(tmp_path):
    nfc, nfd = (unicodedata.normalize(f, "café.png") for f in ("NFC", "NFD"))
    raw = write_tree(tmp_path / "raw", {f"x/{nfc}": png_bytes(shade=1), f"x/{nfd}": png_bytes()})
    report = ingest(raw, tmp_path / "m.jsonl", params=IngestParams())
    assert report.packed == 1
    [skipped] = report.skipped
    assert skipped["reason"] == "bad_path" and "another Unicode normalization" in skipped["detail"]


def test_a_csv_with_a_bom_quotes_and_blank_lines_is_read_as_written(tree, tmp_path):
    raw = tree({"a/1.png": png_bytes(shade=1), "b/two, 2.png": png_bytes(shade=2)})
    table = tmp_path / "labels.csv"
    table.write_bytes(
        b'\xef\xbb\xbfpath,label,note\r\na/1.png,cat," spaced, ""quoted""\nline"\r\n\r\n'
        b'"b/two, 2.png",dog,\r\n'
    )
    rows = ingested_rows(raw, table, tmp_path)
    assert [(r["key"], r["label"], r["extra"]) for r in rows] == [
        ("a/1.png", "cat", {"note": ' spaced, "quoted"\nline'}),
        ("b/two, 2.png", "dog", {"note": ""}),
    ]


def test_a_csv_row_with_the_wrong_number_of_fields_is_refused_naming_its_line(tree, tmp_path):
    raw = tree({"a/1.png": png_bytes(shade=1)})
    table = tmp_path / "labels.csv"
    table.write_text("path,label\na/1.png,cat\n\nb.png,dog,extra\n")
    result = cli("build", raw, tmp_path / "p.lmdb", "--labels", table)
    assert result.returncode == 1 and not (tmp_path / "p.lmdb").exists()
    assert f"{table}:4: 3 fields, expected 2 (path, label)" in result.stderr
