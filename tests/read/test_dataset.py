"""The map-style dataset: decoding, targets, splits, subsets, pickling, and DataLoader workers."""

import multiprocessing
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import imgpack
from imgpack.ingest.run import ingest
from imgpack.params import PackParams
from imgpack.write.pack import pack
from tests.conftest import png_bytes, source_files, tool_env, write_tree


def test_every_image_read_through_the_dataset_equals_its_source(sample_pack, sample_raw):
    sources = source_files(sample_raw / "images")
    dataset = imgpack.ImageDataset(sample_pack)
    keys = list(imgpack.open(sample_pack).keys())
    assert len(dataset) == len(sources)
    for i in range(len(dataset)):
        data, target = dataset[i]
        assert data == sources[keys[i]]
        assert dataset.classes[target] == keys[i].split("/")[0]


def test_batch_reads_equal_single_reads(sample_pack):
    dataset = imgpack.ImageDataset(sample_pack)
    order = [5, 0, 17, 5, 30]
    assert dataset.__getitems__(order) == [dataset[i] for i in order]


def test_decoding_to_pil_and_hwc_uint8_with_transforms(sample_pack):
    pil = imgpack.ImageDataset(sample_pack, decode="pil")
    image, _ = pil[0]
    assert isinstance(image, Image.Image)
    palette_png = next(
        i for i in range(len(pil)) if imgpack.open(sample_pack)[i].meta["format"] == "PNG"
    )
    assert pil[palette_png][0].mode == "RGB"
    assert imgpack.ImageDataset(sample_pack, decode="numpy", mode="L")[0][0].shape[2] == 1
    arrays = imgpack.ImageDataset(
        sample_pack, decode="numpy", transform=lambda a: a[::2], target_transform=str
    )
    pixels, target = arrays[0]
    assert (
        pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[0] == -(-image.height // 2)
    )
    assert target == str(pil[0][1])
    _, _, meta = imgpack.ImageDataset(sample_pack, return_meta=True)[0]
    assert meta["key"] == imgpack.open(sample_pack)[0].key and "bbox" in meta["extra"]


def test_a_split_dataset_holds_exactly_that_splits_records(sample_pack):
    frame = imgpack.open(sample_pack).metadata(columns=["split"])
    for split in ("train", "val", "test"):
        dataset = imgpack.ImageDataset(sample_pack, split=split)
        assert list(dataset.indices) == list(frame.index[frame.split == split])
    assert sum(
        len(imgpack.ImageDataset(sample_pack, split=s)) for s in ("train", "val", "test")
    ) == len(frame)


def test_rows_selected_from_the_catalog_become_a_subset(sample_pack):
    dataset = imgpack.ImageDataset(sample_pack)
    frame = imgpack.open(sample_pack).metadata()
    wide = frame[(frame.label == "circle") & (frame.width > 24)]
    subset = dataset.subset(wide)
    assert len(subset) == len(wide) > 0
    assert all(dataset.classes[t] == "circle" for _, t in (subset[i] for i in range(len(subset))))
    assert list(subset.metadata().key) == list(wide.key)


def test_splits_are_stable_when_images_are_added(tmp_path):
    files = {f"x/{n:03d}.png": png_bytes(4, 4, shade=n) for n in range(60)}
    raw = write_tree(tmp_path / "raw", files)

    def splits():
        ingest(raw, tmp_path / "m.jsonl")
        pack(tmp_path / "m.jsonl", raw, tmp_path / "p.lmdb", PackParams(split_seed=3))
        with imgpack.open(tmp_path / "p.lmdb") as p:
            return dict(p.metadata(columns=["key", "split"]).itertuples(index=False))

    before = splits()
    write_tree(raw, {f"y/{n:03d}.png": png_bytes(5, 5, shade=n) for n in range(40)})
    after = splits()
    assert len(after) == 100
    assert {k: after[k] for k in before} == before


def test_the_dataset_pickles_without_its_lmdb_handle(sample_pack):
    dataset = imgpack.ImageDataset(sample_pack, split="train")
    dataset[0]
    payload = pickle.dumps(dataset)
    assert len(payload) < 4096 + 8 * len(dataset)
    clone = pickle.loads(payload)
    assert clone._pack is None
    assert [clone[i] for i in range(len(clone))] == [dataset[i] for i in range(len(dataset))]


def _read_all_in_child(path, queue):
    import hashlib

    try:
        pack = imgpack.open(path)
        bad = [r.key for r in pack if hashlib.sha256(r.data).hexdigest() != r.meta["hash"]]
        queue.put(("ok" if not bad else "bad", len(pack)))
    except Exception as exc:  # report anything to the parent
        queue.put(("error", repr(exc)))


def test_two_hundred_concurrent_reader_processes(sample_pack):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_read_all_in_child, args=(str(sample_pack), queue))
        for _ in range(200)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert results == [("ok", 36)] * 200
    assert all(worker.exitcode == 0 for worker in workers)


torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e '.[torch]'")


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_return_the_parents_bytes(sample_pack, start_method):
    from torch.utils.data import DataLoader

    dataset = imgpack.ImageDataset(sample_pack)
    expected = [dataset[i] for i in range(len(dataset))]  # the parent has read before forking
    loader = DataLoader(
        dataset,
        batch_size=4,
        shuffle=False,
        num_workers=2,
        collate_fn=list,
        multiprocessing_context=start_method,
    )
    got = [sample for batch in loader for sample in batch]
    assert got == expected


def test_a_shuffled_dataloader_over_decoded_images_covers_every_record_once(sample_pack):
    from torch.utils.data import DataLoader

    dataset = imgpack.ImageDataset(
        sample_pack,
        decode="numpy",
        mode="RGB",
        transform=lambda a: torch.from_numpy(a[:24, :24].copy()),
    )
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2)
    seen = 0
    for images, targets in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (24, 24, 3)
        seen += len(targets)
    assert seen == len(dataset)


def test_the_first_record_and_sample_are_read_without_importing_pandas(sample_pack):
    """pandas is for `metadata()`: a training job's first batch does not wait 0.3 s for it."""
    code = textwrap.dedent(
        f"""
        import sys
        import imgpack
        pack = imgpack.open({str(sample_pack)!r})
        assert pack[0].data and pack.get(pack[0].key)
        train = imgpack.ImageDataset({str(sample_pack)!r}, split="train")
        image, target = train[0]
        assert image and target >= 0
        print("pandas" in sys.modules)
        """
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=tool_env()
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "False"
