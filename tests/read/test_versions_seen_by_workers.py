"""DataLoader workers never pair one version's images with another's labels (torch's spawned and
forked workers over a pack republished between epochs)."""

import pytest

import imgpack
from imgpack.errors import PackChangedError
from tests.conftest import source_files
from tests.read.test_versions_seen import LAYOUTS, publish, samples_of

# torch is needed by every test here (the ones above it, in test_versions_seen.py, do not)
torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install -e '.[torch]'")


def loader(dataset, context: str):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=5,
        num_workers=2,
        collate_fn=list,
        multiprocessing_context=context,
        persistent_workers=False,  # each epoch starts new workers
    )


def epoch(batches, samples: list | None = None) -> list[tuple]:
    """Every sample of one pass over `batches`, appended to `samples` as they come."""
    samples = [] if samples is None else samples
    iterator = iter(batches)
    try:
        for batch in iterator:
            samples.extend(batch)
        return samples
    except BaseException:
        # After a worker's error torch never tells the workers to stop and waits 5 s for each:
        # tell them, as its shutdown does for workers still working.
        iterator._workers_done_event.set()
        for queue in iterator._index_queues:
            queue.put(None)
        raise


@pytest.mark.parametrize("layout", LAYOUTS)
def test_spawned_workers_refuse_a_version_published_between_epochs(tmp_path, layout):
    out, v1 = publish(tmp_path, 1, LAYOUTS[layout])
    dataset = imgpack.ImageDataset(out)
    batches = loader(dataset, "spawn")
    assert epoch(batches) == samples_of(v1, dataset.classes)
    _, v2 = publish(tmp_path, 2, LAYOUTS[layout])
    yielded = []
    with pytest.raises(PackChangedError) as caught:  # torch re-raises the worker's error
        epoch(batches, yielded)
    assert yielded == []  # not one sample of the other version
    assert (
        f"{out} changed since this dataset was made (another version was published); "
        "create the dataset (and its DataLoader) again"
    ) in str(caught.value)
    again = imgpack.ImageDataset(out)  # the remedy, followed
    assert epoch(loader(again, "spawn")) == samples_of(v2, again.classes)


def test_forked_workers_read_the_version_their_dataset_was_made_on(tmp_path):
    out, v1 = publish(tmp_path, 1)
    dataset = imgpack.ImageDataset(out)
    with_meta = imgpack.ImageDataset(out, return_meta=True)
    publish(tmp_path, 2)
    # Forked workers inherit the located images and the targets: version 1, whole.
    assert epoch(loader(dataset, "fork")) == samples_of(v1, dataset.classes)
    # Metadata needs the catalog reopened by path, where version 2 is now: refused.
    with pytest.raises(PackChangedError, match="create the dataset .and its DataLoader. again"):
        epoch(loader(with_meta, "fork"))


def test_a_dataset_recreated_after_a_publish_reads_the_new_version_in_every_worker(tmp_path):
    out, v1 = publish(tmp_path, 1)
    first = imgpack.ImageDataset(out)  # alive when the next is made, as in a training loop
    _, v2 = publish(tmp_path, 2)
    dataset = imgpack.ImageDataset(out)
    got = epoch(loader(dataset, "forkserver"))
    assert got == samples_of(v2, dataset.classes)
    assert sorted(data for data, _ in got) == sorted(source_files(tmp_path / "raw").values())
    assert [first[i] for i in range(len(first))] == samples_of(v1, first.classes)
