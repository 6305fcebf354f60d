"""Training straight from the DVC remote: `imgpack.open(..., stream=True)` and
`ImageDataset(..., stream=True)` over a real git + DVC project pushed to a real local folder remote,
the same folder over HTTP (whose access log counts every GET) and S3 (moto's server); real
DataLoader workers, real concurrent and killed processes. Each test has its own empty cache."""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import imgpack
from imgpack.errors import InputError, PackCorruptError
from tests.conftest import REPO
from tests.read.remotes import ONE, PACK, S3

pytestmark = pytest.mark.slow
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty $IMGPACK_CACHE for each test; returns its stream folder (the shard cache)."""
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "imgpack-cache"))
    return tmp_path / "imgpack-cache" / "stream"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_path(digest: str) -> str:
    return f"/files/md5/{digest[:2]}/{digest[2:]}"


def gets(server, mark: int) -> Counter:
    """GETs per path the server answered since `mark`."""
    return Counter(path for method, path in server.requests_since(mark) if method == "GET")


def local_copy(project, rev: str, tmp_path: Path) -> imgpack.Pack:
    """The pack of `rev` as `dvc pull` would give it, opened locally."""
    folder = tmp_path / f"local-{rev}.lmdb"
    if not folder.exists():
        folder.mkdir()
        for name, data in project.packs[rev].items():
            (folder / name).write_bytes(data)
    return imgpack.open(folder)


def shard_objects(project, rev: str) -> dict[str, str]:
    """{shard file name: its object's path on the HTTP remote} of the pack at `rev`."""
    return {
        name: object_path(md5(data))
        for name, data in project.packs[rev].items()
        if name.startswith("shard-")
    }


def listing_path(pack: imgpack.Pack) -> str:
    return object_path(pack.stream.remote.md5)


def cache_bytes(root: Path) -> int:
    """Bytes of the files the shard cache holds: entries and downloads in progress."""
    total = 0
    for sub in ("entries", "tmp"):
        for folder, _, names in os.walk(root / sub):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
    return total


def cache_free(root: Path) -> int:
    """How many entries no process pins (an exclusive lock can be taken)."""
    free = 0
    for entry in (root / "entries").iterdir():
        fd = os.open(entry, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free += 1
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return free


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- records, catalog, fetches -----------------------------------------------------------------------
def test_records_stream_byte_identical_fetching_the_catalog_then_each_shard_once(
    project, clone, cache, tmp_path
):
    mark = len(project.http.requests())
    pack = imgpack.open(clone / PACK, rev="v1", stream=True, remote="http")
    catalog = object_path(md5(project.packs["v1"]["catalog.lmdb"]))
    assert gets(project.http, mark) == {listing_path(pack): 1, catalog: 1}
    local = local_copy(project, "v1", tmp_path)

    # the catalog without digests needs no shard
    frame = pack.metadata()
    assert "hash" not in frame.columns and len(frame) == len(local) == 36
    assert frame.equals(local.metadata().drop(columns="hash"))
    assert list(pack.keys()) == list(local.keys()) and pack.identity.startswith(local.identity[:16])
    assert gets(project.http, mark) == {listing_path(pack): 1, catalog: 1}

    digests = pack.metadata(columns=["key", "hash"])  # the shards' props: every shard fetched
    assert digests.equals(local.metadata(columns=["key", "hash"]))
    for i in range(len(pack)):
        record = pack[i]
        assert sha256(record.data) == digests.hash[i]
        assert (record.key, record.data, record.label) == (
            local[i].key,
            local[i].data,
            local[i].label,
        )
    assert [r.data for r in pack.read_many(range(36))] == [r.data for r in local]
    assert [r.data for r in pack] == [r.data for r in local]
    assert pack.meta(5) == local.meta(5)
    expected = {listing_path(pack): 1, catalog: 1}
    expected.update({path: 1 for path in shard_objects(project, "v1").values()})
    assert gets(project.http, mark) == expected  # each shard once, though read again and again
    assert not (clone / PACK).exists() and not list((clone / ".dvc" / "cache").rglob("*.lmdb"))
    assert sorted(p.name for p in (cache / "entries").iterdir()) == sorted(
        md5(data) for data in project.packs["v1"].values()
    )
    assert pack.file_bytes == sum(len(data) for data in project.packs["v1"].values())


def test_a_records_metadata_fetches_its_own_shard_only(project, clone):
    mark = len(project.http.requests())
    pack = imgpack.open(clone / PACK, rev="v1", stream=True, remote="http")
    with local_copy(project, "v1", clone.parent) as local:
        assert pack.meta(20) == local.meta(20)
        shard = local.header["shards"][local.catalog.table(["shard"]).column("shard")[20].as_py()]
    fetched = {p for p in gets(project.http, mark) if p not in (listing_path(pack),)}
    assert fetched == {
        object_path(md5(project.packs["v1"]["catalog.lmdb"])),
        shard_objects(project, "v1")[shard["name"]],
    }
    with pytest.raises(imgpack.ImgpackError, match="is streamed: its shards are fetched"):
        _ = pack.shard_paths


def test_the_next_revision_fetches_only_the_shards_it_adds(project, clone, tmp_path):
    v1 = imgpack.open(clone / PACK, rev="v1", stream=True, remote="http")
    assert len([r.data for r in v1]) == 36
    mark = len(project.http.requests())
    v2 = imgpack.open(clone / PACK, rev="v2", stream=True, remote="http")
    local = local_copy(project, "v2", tmp_path)
    assert [r.data for r in v2] == [r.data for r in local] and len(v2) == 48
    before = {md5(data) for data in project.packs["v1"].values()}
    added = {md5(data) for data in project.packs["v2"].values()} - before
    assert len(added) == 3  # the catalog and two new shards
    assert gets(project.http, mark) == {
        listing_path(v2): 1,
        **{object_path(digest): 1 for digest in added},
    }


def test_rev_none_streams_the_version_the_workspace_dvc_lock_records(project, clone, tmp_path):
    (clone / PACK).parent.mkdir(parents=True, exist_ok=True)
    (clone / PACK).write_bytes(b"half built")  # what is on disk does not count
    mark = len(project.http.requests())
    pack = imgpack.open(clone / PACK, stream=True)  # the default remote: the local folder
    assert pack.stream.remote.rev is None and pack.stream.remote.remote_name == "local"
    assert [r.data for r in pack] == [r.data for r in local_copy(project, "v2", tmp_path)]
    assert gets(project.http, mark) == {}


@pytest.mark.skipif(not S3, reason="DVC's S3 remotes need its plugin: pip install dvc-s3")
def test_remote_picks_a_named_remote_as_dvc_pull_r_does(project, clone, tmp_path):
    marks = len(project.http.requests()), len(project.s3.requests())
    pack = imgpack.open(clone / PACK, rev="v1", stream=True, remote="s3")
    assert [r.data for r in pack] == [r.data for r in local_copy(project, "v1", tmp_path)]
    assert gets(project.http, marks[0]) == {}
    fetched = Counter(
        path.split("?")[0]
        for method, path in project.s3.requests_since(marks[1])
        if method == "GET"
    )
    assert {f"/store/dvc{object_path(md5(d))}" for d in project.packs["v1"].values()} <= set(
        fetched
    )
    with pytest.raises(InputError) as caught:
        imgpack.open(clone / PACK, stream=True, remote="elsewhere")
    assert "no DVC remote named 'elsewhere'" in one_line(caught)


def test_a_one_file_pack_streams_as_its_one_file(project, clone, tmp_path):
    pack = imgpack.open(clone / ONE, rev="v1", stream=True)
    (tmp_path / "one.lmdb").write_bytes(project.one)
    local = imgpack.open(tmp_path / "one.lmdb")
    assert [r.data for r in pack] == [r.data for r in local]
    assert pack.metadata().equals(local.metadata())  # its digests are in the file it holds
    assert pack.files[0].read_bytes() == project.one


def _records_of(pickled: bytes) -> list[bytes]:
    pack = pickle.loads(pickled)
    return [record.data for record in pack]


def test_a_pickled_streamed_pack_reads_in_a_spawned_process_without_dvc(project, clone, tmp_path):
    pack = imgpack.open(clone / PACK, rev="v2", stream=True, remote="http")
    mark = len(project.http.requests())
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=SPAWN) as workers:
        got = workers.submit(_records_of, pickle.dumps(pack)).result(timeout=120)
    assert got == [r.data for r in local_copy(project, "v2", tmp_path)]
    fetched = gets(project.http, mark)
    assert listing_path(pack) not in fetched  # the remote's files travelled, resolved once
    assert set(fetched) == set(shard_objects(project, "v2").values())


def test_an_idle_reader_lets_go_of_its_shards(project, clone, cache):
    pack = imgpack.open(clone / PACK, rev="v1", stream=True)
    assert len([r.data for r in pack]) == 36
    shards = pack.locate().shards
    assert len(shards.held) == 1  # a reader lets go of the others before it waits for a fetch
    assert len([r.data for r in pack]) == 36  # all cached now: nothing to wait for
    assert len(shards.held) == shards.keep == 4
    deadline = time.monotonic() + 10
    while shards.held and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shards.held == []
    assert cache_free(cache) == len(list((cache / "entries").iterdir())) - 1  # the catalog
    assert pack[0].data == pack.read_many([0])[0].data  # and it reads on


# -- the sampler over a streamed pack ----------------------------------------------------------------
def test_a_sampler_epoch_prefetches_the_next_shards_and_fetches_each_once(project, clone, tmp_path):
    mark = len(project.http.requests())
    dataset = imgpack.ImageDataset(clone / PACK, rev="v2", stream=True, remote="http")
    sampler = dataset.sampler(window=2, seed=5)
    sampler.set_epoch(2)
    order = sampler.order()
    assert sorted(order) == list(range(len(dataset)))
    local = imgpack.ImageDataset(local_copy(project, "v2", tmp_path).path)
    seen = []
    for position in sampler:
        seen.append(dataset[position])
        time.sleep(0.002)  # training: the prefetcher works meanwhile
    assert seen == [local[p] for p in order]
    assert sampler.prefetch.fetched >= len(sampler.windows()) - 1  # all but the first, at least
    fetched = gets(project.http, mark)
    shards = set(shard_objects(project, "v2").values())
    assert {p: n for p, n in fetched.items() if p in shards} == {p: 1 for p in shards}
    assert dataset.pack.stream.keep == 2


def test_a_cache_holding_two_windows_fetches_each_shard_once_while_the_next_is_prefetched(
    project, clone
):
    sizes = [len(d) for n, d in project.packs["v2"].items() if n.startswith("shard-")]
    limit = len(project.packs["v2"]["catalog.lmdb"]) + 4 * max(sizes)  # the window and the next
    mark = len(project.http.requests())
    dataset = imgpack.ImageDataset(
        clone / PACK, rev="v2", stream=True, remote="http", cache_limit=limit
    )
    sampler = dataset.sampler(window=2, seed=2)
    for position in sampler:
        dataset[position]
        # training: the prefetcher makes room for the next window while a record is used,
        # before the reader has opened every prefetched shard of its own window
        time.sleep(0.02)
    fetched = gets(project.http, mark)
    shards = set(shard_objects(project, "v2").values())
    assert {p: n for p, n in fetched.items() if p in shards} == {p: 1 for p in shards}


def test_ranks_epochs_and_resume_on_a_streamed_dataset(project, clone):
    dataset = imgpack.ImageDataset(clone / PACK, rev="v2", stream=True, remote="http")
    parts = [dataset.sampler(window=2, rank=r, world_size=3, seed=1).order() for r in range(3)]
    assert len({len(p) for p in parts}) == 1 and sorted(sum(parts, [])) == list(range(48))
    sampler = dataset.sampler(window=2, seed=1)
    first = sampler.order()
    sampler.set_epoch(1)
    assert sampler.order() != first and sorted(sampler.order()) == sorted(first)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(10)]
    state = sampler.state_dict()
    iterator.close()
    again = dataset.sampler(window=2, seed=1)
    again.load_state_dict(state)
    assert head + list(again) == sampler.order()


def test_an_epoch_with_spawned_workers_never_exceeds_the_cache_limit(
    project, clone, cache, tmp_path
):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    shard_size = max(len(d) for n, d in project.packs["v2"].items() if n.startswith("shard-"))
    limit = len(project.packs["v2"]["catalog.lmdb"]) + 3 * shard_size  # the catalog and 3 shards
    mark = len(project.http.requests())
    dataset = imgpack.ImageDataset(
        clone / PACK, rev="v2", stream=True, remote="http", cache_limit=limit
    )
    sampler = dataset.sampler(window=1, seed=3)
    sampler.set_epoch(1)
    order = sampler.order()
    sizes: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            sizes.append(cache_bytes(cache))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        loader = DataLoader(
            dataset,
            batch_size=4,
            sampler=sampler,
            num_workers=2,
            multiprocessing_context="spawn",
            collate_fn=list,
        )
        got = [item for batch in loader for item in batch]
    finally:
        done.set()
        watcher.join()
    assert len(sizes) > 100 and 0 < max(sizes) <= limit
    local = local_copy(project, "v2", tmp_path)
    digests = local.metadata(columns=["hash"]).hash
    assert [sha256(data) for data, _ in got] == [digests[i] for i in order]
    assert [target for _, target in got] == [dataset.targets[i] for i in order]
    fetched = gets(project.http, mark)
    assert fetched[listing_path(dataset.pack)] == 1  # the workers never ran DVC again
    assert set(shard_objects(project, "v2").values()) <= set(fetched)


def test_a_dataloader_resumed_from_the_samplers_state_reads_the_rest_of_the_epoch(
    project, clone, tmp_path
):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    dataset = imgpack.ImageDataset(clone / PACK, rev="v2", stream=True, remote="http")
    sampler = dataset.sampler(window=2, seed=7)
    sampler.set_epoch(4)
    whole = [dataset[i][0] for i in sampler.order()]
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=sampler,
        num_workers=2,
        multiprocessing_context="fork",
        collate_fn=list,
    )
    batches = iter(loader)
    consumed = [data for _ in range(5) for data, _ in next(batches)]
    state = sampler.state_dict(consumed=sampler.start + 5 * 4)
    del batches
    fresh = imgpack.ImageDataset(clone / PACK, rev="v2", stream=True, remote="http")
    resumed = fresh.sampler(window=2, seed=7)
    resumed.load_state_dict(state)
    loader = DataLoader(
        fresh,
        batch_size=4,
        sampler=resumed,
        num_workers=2,
        multiprocessing_context="fork",
        collate_fn=list,
    )
    rest = [data for batch in loader for data, _ in batch]
    assert consumed + rest == whole


# -- processes, failures ---------------------------------------------------------------------------
def _read_everything(path: str, order: str, barrier, results) -> None:
    pack = imgpack.open(path, rev="v1", stream=True, remote="http")
    indices = list(range(len(pack)))
    barrier.wait(60)
    if order == "backwards":
        indices.reverse()
    results.put({i: sha256(pack[i].data) for i in indices})


def test_two_processes_reading_at_once_fetch_each_shard_once(project, clone, tmp_path):
    mark = len(project.http.requests())
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    readers = [
        SPAWN.Process(target=_read_everything, args=(str(clone / PACK), how, barrier, results))
        for how in ("forwards", "backwards")
    ]
    for reader in readers:
        reader.start()
    got = [results.get(timeout=120) for _ in readers]
    for reader in readers:
        reader.join(30)
        assert reader.exitcode == 0
    digests = local_copy(project, "v1", tmp_path).metadata(columns=["hash"]).hash.tolist()
    assert [dict(sorted(g.items())) for g in got] == [dict(enumerate(digests))] * 2
    fetched = gets(project.http, mark)
    files = [object_path(md5(data)) for data in project.packs["v1"].values()]
    assert {path: fetched[path] for path in files} == {path: 1 for path in files}


def test_a_reader_killed_mid_download_leaves_no_entry_and_the_next_reader_succeeds(
    project, clone, cache, tmp_path
):
    local = local_copy(project, "v1", tmp_path)
    shard_of = local.catalog.table(["shard"]).column("shard").to_numpy()
    record = int(np.flatnonzero(shard_of == 2)[0])
    name = local.header["shards"][2]["name"]
    digest = md5(project.packs["v1"][name])
    script = (
        "import imgpack, sys; "
        f"pack = imgpack.open({str(clone / PACK)!r}, rev='v1', stream=True, remote='http'); "
        f"pack[{record}].data; print('read')"
    )
    project.slow.write_text(object_path(digest) + "\n")
    try:
        reader = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            stdout=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the download has written some bytes
            partial = (
                list((cache / "tmp").glob(f"{digest}-*/*")) if (cache / "tmp").exists() else []
            )
            if any(p.stat().st_size > 0 for p in partial if p.exists()):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the download of the slow shard never started")
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(30)
    finally:
        project.slow.write_text("")
    assert reader.returncode == -signal.SIGKILL and reader.stdout.read() == b""
    assert not (cache / "entries" / digest).exists()  # nothing half written took its place
    mark = len(project.http.requests())
    pack = imgpack.open(clone / PACK, rev="v1", stream=True, remote="http")
    assert pack[record].data == local[record].data
    assert [r.data for r in pack] == [r.data for r in local]
    assert gets(project.http, mark)[object_path(digest)] == 1
    assert list((cache / "tmp").iterdir()) == []  # the killed reader's reservation reclaimed
    assert md5((cache / "entries" / digest).read_bytes()) == digest


def test_a_shard_damaged_on_the_remote_is_refused_with_one_line(project, clone, cache, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(project.remote, damaged)
    (clone / ".dvc" / "config.local").write_text(f"['remote \"damaged\"']\n    url = {damaged}\n")
    local = local_copy(project, "v1", tmp_path)
    name = local.header["shards"][1]["name"]
    digest = md5(project.packs["v1"][name])
    victim = damaged / object_path(digest).lstrip("/")
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(data)
    pack = imgpack.open(clone / PACK, rev="v1", stream=True, remote="damaged")
    shard_of = local.catalog.table(["shard"]).column("shard").to_numpy()
    with pytest.raises(PackCorruptError) as caught:
        pack[int(np.flatnonzero(shard_of == 1)[0])]
    message = one_line(caught)
    assert f"{PACK}@v1 on remote 'damaged'" in message and name in message
    assert "the remote copy is damaged" in message and "dvc push" in message
    assert not (cache / "entries" / digest).exists()
    others = np.flatnonzero(shard_of != 1)
    assert [pack[int(i)].data for i in others] == [local[int(i)].data for i in others]

    # a sampler's prefetcher leaves it to the reader, which raises where it reads
    dataset = imgpack.ImageDataset(clone / PACK, rev="v1", stream=True, remote="damaged")
    sampler = dataset.sampler(window=1, seed=1)
    error = None
    for position in sampler:  # the sampler itself raises nothing
        try:
            dataset[position]
        except PackCorruptError as exc:
            error = exc
            break
    assert error is not None and name in str(error) and "damaged" in str(error)
    assert all(name in failure for failure in sampler.prefetch.failed)


def test_a_cache_limit_below_the_catalog_and_two_shards_is_one_line_naming_the_shard_size(
    project, clone
):
    catalog = len(project.packs["v1"]["catalog.lmdb"])
    with pytest.raises(InputError) as caught:
        imgpack.open(clone / PACK, rev="v1", stream=True, cache_limit=catalog + 40_000)
    message = one_line(caught)
    assert "cannot hold the catalog" in message and "2 shards of 32.8 KB (32,768 bytes" in message
    assert "set cache_limit to at least" in message
    limit = catalog + 3 * 32768
    dataset = imgpack.ImageDataset(clone / PACK, rev="v1", stream=True, cache_limit=limit)
    assert len(dataset.sampler(window=2)) == 36
    with pytest.raises(InputError) as caught:
        dataset.sampler(window=3)  # its 3 shards and one to fetch into do not fit
    assert "cannot hold a window of 3 shards" in one_line(caught)
    assert "pass window=2 or less" in str(caught.value)
    with pytest.raises(ValueError, match="pass stream=True"):
        imgpack.open(clone / PACK, cache_limit="1GB")
    with pytest.raises(InputError, match="not a size"):
        imgpack.ImageDataset(clone / PACK, stream=True, cache_limit="lots")


def test_a_path_outside_dvc_cannot_stream(tmp_path):
    with pytest.raises(InputError) as caught:
        imgpack.open(tmp_path / "images.lmdb", stream=True)
    assert "not inside a DVC repository" in one_line(caught)


# -- the sampler over a local pack -----------------------------------------------------------------
def test_the_sampler_of_a_local_pack(sample_sharded_pack):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    dataset = imgpack.ImageDataset(sample_sharded_pack, split="train")
    sampler = dataset.sampler(window=2, seed=2)
    assert sampler.prefetch is not None  # the kernel reads the next shards ahead
    first = sampler.order()
    assert sorted(first) == list(range(len(dataset)))
    sampler.set_epoch(1)
    assert sampler.order() != first
    parts = [dataset.sampler(rank=r, world_size=2).order() for r in range(2)]
    assert len(parts[0]) == len(parts[1]) and not set(parts[0]) & set(parts[1])
    loader = DataLoader(dataset, batch_size=5, sampler=sampler, num_workers=2, collate_fn=list)
    assert [x for batch in loader for x in batch] == [dataset[i] for i in sampler.order()]
    assert imgpack.ImageDataset(sample_sharded_pack).sampler().prefetch is not None


def test_the_sampler_of_a_one_file_pack_needs_no_prefetch(sample_file_pack):
    dataset = imgpack.ImageDataset(sample_file_pack)
    sampler = dataset.sampler(shuffle=False)
    assert sampler.prefetch is None and list(sampler) == list(range(len(dataset)))
