"""The shard cache for streamed reads: real files, real locks, real spawned, forked and killed processes.

`fetch` here copies a real source file (optionally slowly, or damaged) and appends one line per
call to a file, so calls are counted across processes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgpack.cli import cache as cache_cli
from imgpack.errors import InputError, PackCorruptError
from imgpack.read.shardcache import ShardCache, stream_cache_root
from imgpack.read.sizes import format_size, parse_size

SIZE = 32 * 1024  # every test shard's bytes
SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Shard:
    md5: str
    size: int
    path: Path  # the "remote" copy

    @property
    def name(self) -> str:
        return f"shard-{self.md5[:8]}.lmdb"


class CopyFetch:
    """fetch(tmp_path): a copy of the shard in `chunks` writes `delay` apart; the first `damaged`
    calls flip a byte. Each call appends the md5 to `calls`."""

    def __init__(self, shard: Shard, calls: Path, delay=0.0, chunks=4, damaged=0, hang=None):
        self.shard, self.calls, self.delay, self.chunks = shard, calls, delay, chunks
        self.damaged, self.hang = damaged, hang  # hang: a file made once half is written

    def __call__(self, tmp_path: Path) -> None:
        with open(self.calls, "a") as log:
            log.write(self.shard.md5 + "\n")
        data = bytearray(self.shard.path.read_bytes())
        if len(calls_of(self.calls, self.shard)) <= self.damaged:
            data[len(data) // 2] ^= 0xFF
        step = -(-len(data) // self.chunks)
        with open(tmp_path, "wb") as out:
            for at in range(0, len(data), step):
                out.write(data[at : at + step])
                out.flush()
                if self.hang is not None and at + step >= len(data) // 2:
                    self.hang.touch()
                    time.sleep(60)  # killed here
                time.sleep(self.delay)


def calls_of(calls: Path, shard: Shard | None = None) -> list[str]:
    lines = calls.read_text().split() if calls.exists() else []
    return [m for m in lines if shard is None or m == shard.md5]


@pytest.fixture
def shards(tmp_path) -> list[Shard]:
    rng = random.Random(7)
    remote = tmp_path / "remote"
    remote.mkdir()
    made = []
    for i in range(12):
        data = rng.randbytes(SIZE)
        path = remote / f"{i}.bin"
        path.write_bytes(data)
        made.append(Shard(hashlib.md5(data).hexdigest(), SIZE, path))
    return made


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def calls(tmp_path) -> Path:
    return tmp_path / "calls.txt"


def get(cache: ShardCache, shard: Shard, calls: Path, **fetch):
    return cache.get(shard.md5, shard.size, CopyFetch(shard, calls, **fetch), shard.name)


def entries(root: Path) -> set[str]:
    return {p.name for p in (root / "entries").iterdir()}


def pinned(root: Path, md5: str) -> bool:
    fd = os.open(root / "entries" / md5, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_for(path: Path, seconds=20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


# -- sizes and the root ----------------------------------------------------------------------------
def test_sizes_are_bytes_or_text_with_decimal_or_binary_units():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("20GiB") == 20 * 2**30
    assert parse_size(" 1.5 mb ") == 1_500_000
    assert parse_size("4096") == parse_size(4096) == 4096
    for bad in ("20G", "lots", "", "-1GB", 0, -5, True, 2.5):
        with pytest.raises(InputError, match='cache_limit .* is not a size: .*"20GiB"') as caught:
            parse_size(bad)
        assert "\n" not in str(caught.value)
    assert format_size(20 * 10**9) == "20.0 GB" and format_size(512) == "512 bytes"


def test_the_root_is_the_stream_folder_of_imgpack_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "c"))
    assert stream_cache_root() == tmp_path / "c" / "stream"
    monkeypatch.delenv("IMGPACK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert stream_cache_root() == tmp_path / "xdg" / "imgpack" / "stream"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert stream_cache_root() == Path.home() / ".cache" / "imgpack" / "stream"


# -- one process -----------------------------------------------------------------------------------
def test_a_fetched_entry_is_whole_verified_and_fetched_once(shards, root, calls):
    cache = ShardCache(root, limit="1MB")
    shard = shards[0]
    with get(cache, shard, calls) as first:
        assert first.path == root / "entries" / shard.md5
        assert first.path.read_bytes() == shard.path.read_bytes()
        assert not os.access(first.path, os.W_OK) or os.geteuid() == 0  # read-only
        assert pinned(root, shard.md5)
    assert not pinned(root, shard.md5)
    with get(cache, shard, calls) as again:
        assert again.path.read_bytes() == shard.path.read_bytes()
    assert calls_of(calls) == [shard.md5]
    assert list((root / "tmp").iterdir()) == [] and list((root / "locks").iterdir()) == []
    info = ShardCache(root).info()  # a reader's limit is recorded: `imgpack cache info` shows it
    assert info["limit"] == 10**6 and info["limit_from"] == "recorded"
    assert (info["entries"], info["bytes"], info["pinned"], info["downloads"]) == (1, SIZE, 0, 0)


def test_a_damaged_download_is_fetched_again_then_a_clear_error(shards, root, calls):
    cache = ShardCache(root, limit="1MB")
    good, bad = shards[0], shards[1]
    with get(cache, good, calls, damaged=1) as entry:  # damaged once: the second fetch is good
        assert entry.path.read_bytes() == good.path.read_bytes()
    assert calls_of(calls, good) == [good.md5] * 2
    with pytest.raises(PackCorruptError) as caught:
        get(cache, bad, calls, damaged=2)
    message = str(caught.value)
    assert "\n" not in message and bad.name in message and "fetched twice" in message
    assert f"files/md5/{bad.md5[:2]}/{bad.md5[2:]}" in message and "dvc push" in message
    assert calls_of(calls, bad) == [bad.md5] * 2
    assert entries(root) == {good.md5} and list((root / "tmp").iterdir()) == []


def test_a_wrong_size_given_is_named_and_a_damaged_entry_is_fetched_again(shards, root, calls):
    cache = ShardCache(root, limit="1MB")
    shard = shards[0]
    with pytest.raises(InputError, match=f"has {SIZE} bytes, not the {SIZE + 1} given"):
        cache.get(shard.md5, SIZE + 1, CopyFetch(shard, calls), shard.name)
    assert calls_of(calls) == [shard.md5]  # no retry: the remote is fine
    get(cache, shard, calls).close()
    entry = root / "entries" / shard.md5
    entry.chmod(0o644)
    with open(entry, "r+b") as handle:  # the cached copy loses its tail (a crash, a bad disk)
        handle.truncate(SIZE // 2)
    with get(cache, shard, calls) as again:
        assert again.path.read_bytes() == shard.path.read_bytes()
    assert len(calls_of(calls)) == 3


def test_a_limit_below_two_shards_fails_naming_the_shard_size(shards, root, calls):
    cache = ShardCache(root, limit=2 * SIZE - 1)
    with pytest.raises(InputError) as caught:
        get(cache, shards[0], calls)
    message = str(caught.value)
    assert "\n" not in message and shards[0].name in message
    assert f"cannot hold 2 shards of {format_size(SIZE)} ({SIZE:,} bytes)" in message
    assert f"{2 * SIZE - 1:,} bytes" in message
    assert not calls.exists()
    get(ShardCache(root, limit=2 * SIZE), shards[0], calls).close()  # two shards: enough


def test_eviction_takes_unhinted_least_recently_used_then_the_hinted_needed_last(
    shards, root, calls
):
    cache = ShardCache(root, limit=3 * SIZE)
    a, b, c, d = shards[:4]
    for shard in (a, b, c, a):  # a used last; b least recently
        get(cache, shard, calls).close()
        time.sleep(0.02)  # past the file system's clock tick
    cache.hint([b.md5])
    get(cache, d, calls).close()  # plain LRU would take b
    assert entries(root) == {a.md5, b.md5, d.md5}
    cache.hint([a.md5, b.md5])
    get(cache, c, calls).close()  # d, the only unhinted one, goes though it is the newest
    assert entries(root) == {a.md5, b.md5, c.md5}
    cache.hint([a.md5, b.md5, c.md5])
    get(cache, d, calls).close()  # all hinted: c is needed last
    assert entries(root) == {a.md5, b.md5, d.md5}
    cache.close()
    assert list((root / "hints").iterdir()) == []


def test_with_everything_pinned_a_get_waits_for_a_pin_then_errors_on_a_standstill(
    shards, root, calls
):
    cache = ShardCache(root, limit=2 * SIZE, wait=0.3)
    a, b, c = shards[:3]
    held_a, held_b = get(cache, a, calls), get(cache, b, calls)
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        get(cache, c, calls)
    assert time.monotonic() - started >= 0.3
    message = str(caught.value)
    assert "\n" not in message and "is too small for the shards being read at once" in message
    assert f"held by readers: 2 shards, {format_size(2 * SIZE)} " in message and c.name in message
    assert f"({format_size(SIZE)}, {format_size(SIZE)}); downloading: 0 shards, nothing" in message
    assert calls_of(calls, c) == [] and list((root / "tmp").iterdir()) == []
    cache.wait = 5.0
    threading.Timer(0.2, held_a.close).start()  # a reader lets go while the get waits
    with get(cache, c, calls) as entry:
        assert entry.path.read_bytes() == c.path.read_bytes()
    assert entries(root) == {b.md5, c.md5} and held_b.path.read_bytes() == b.path.read_bytes()
    held_b.close()


def test_eviction_that_cannot_make_room_deletes_nothing(shards, root, calls, tmp_path):
    # mosaicml/streaming#417: near the limit, freeing part of the room must not cost entries
    big_bytes = random.Random(3).randbytes(2 * SIZE)
    (tmp_path / "big.bin").write_bytes(big_bytes)
    big = Shard(hashlib.md5(big_bytes).hexdigest(), 2 * SIZE, tmp_path / "big.bin")
    cache = ShardCache(root, limit=4 * SIZE, wait=0.2)
    held = [get(cache, shard, calls) for shard in shards[:3]]
    get(cache, shards[3], calls).close()  # full: 3 pinned + 1 that could go
    with pytest.raises(InputError, match="is too small for the shards being read at once"):
        get(cache, big, calls)
    assert shards[3].md5 in entries(root) and len(entries(root)) == 4
    held.pop().close()
    with get(cache, big, calls) as entry:  # now two can go, and do
        assert entry.path.read_bytes() == big_bytes
    assert entries(root) == {shards[0].md5, shards[1].md5, big.md5}
    for handle in held:
        handle.close()


# -- several processes ------------------------------------------------------------------------------
def read_shards(cache, shards, calls, order_seed, gets, delay, failures):
    """A reader: `gets` shards in a random order, each checked byte for byte, one held at a time."""
    rng = random.Random(order_seed)
    for _ in range(gets):
        shard = rng.choice(shards)
        with get(cache, shard, calls, delay=delay) as entry:
            if entry.path.read_bytes() != shard.path.read_bytes():
                failures.touch()


def cache_bytes(root: Path) -> int:
    """What the cache's files take on disk: entries and downloads (tmp/), read while the cache
    lock is held, so no rename or eviction happens while they are listed."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        total = 0
        for folder in (root / "entries", root / "tmp"):
            for path in folder.rglob("*"):
                try:
                    if path.is_file():
                        total += path.stat().st_size
                except FileNotFoundError:
                    pass
        return total
    finally:
        os.close(fd)


def test_the_files_never_exceed_the_limit_with_several_processes_reading(
    shards, root, calls, tmp_path
):
    limit = 4 * SIZE
    ShardCache(root, limit=limit).info()
    failures = tmp_path / "failures"
    readers = [
        SPAWN.Process(
            target=read_shards,
            args=(ShardCache(root, limit=limit), shards, calls, seed, 25, 0.001, failures),
        )
        for seed in range(3)
    ]
    for reader in readers:
        reader.start()
    samples = []
    while any(r.is_alive() for r in readers):
        if (root / "lock").exists():
            samples.append(cache_bytes(root))
        time.sleep(0.0005)
    for reader in readers:
        reader.join()
        assert reader.exitcode == 0
    assert not failures.exists()
    assert max(samples) <= limit, f"{max(samples)} bytes on disk over the limit of {limit}"
    assert max(samples) >= limit - SIZE  # the cache did fill up
    assert len(calls_of(calls)) > len(shards)  # so shards were evicted and fetched again
    assert len(samples) > 50


def test_processes_getting_the_same_shards_at_once_fetch_each_once(shards, root, calls, tmp_path):
    cache = ShardCache(root, limit="10MB")
    go = tmp_path / "go"
    procs = [
        SPAWN.Process(target=read_all_after, args=(cache, shards[:6], calls, go, reverse))
        for reverse in (False, False, True)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.3)
    go.touch()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    fetched = calls_of(calls)
    assert sorted(fetched) == sorted(s.md5 for s in shards[:6])  # each exactly once


def read_all_after(cache, shards, calls, go, reverse):
    wait_for(go)
    for shard in reversed(shards) if reverse else shards:
        with get(cache, shard, calls, delay=0.01) as entry:
            assert entry.path.read_bytes() == shard.path.read_bytes()


def hang_in_fetch(cache, shard, other, calls, half_written):
    cache.hint([other.md5])
    get(cache, shard, calls, hang=half_written)


def test_a_process_killed_mid_fetch_leaves_no_entry_and_its_reservation_is_reclaimed(
    shards, root, calls, tmp_path
):
    target, held_shard, other = shards[:3]
    cache = ShardCache(root, limit=2 * SIZE, wait=0.5)
    held = get(cache, held_shard, calls)  # pinned throughout: the limit has room for one more
    half = tmp_path / "half"
    victim = SPAWN.Process(target=hang_in_fetch, args=(cache, target, held_shard, calls, half))
    victim.start()
    wait_for(half)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert victim.exitcode == -signal.SIGKILL
    [leftover] = (root / "tmp").iterdir()  # half a download and its reservation
    assert leftover.name == f"{target.md5}-{SIZE}-{victim.pid}"
    assert 0 < sum(f.stat().st_size for f in leftover.iterdir()) < SIZE
    assert target.md5 not in entries(root) and len(list((root / "hints").iterdir())) == 1
    # Pinned + the dead reservation + another shard would be 3 shards: it fits only if reclaimed.
    with get(cache, other, calls) as entry:
        assert entry.path.read_bytes() == other.path.read_bytes()
    assert list((root / "tmp").iterdir()) == [] and list((root / "hints").iterdir()) == []
    with get(cache, target, calls) as entry:  # and the killed one's shard is fetched whole
        assert entry.path.read_bytes() == target.path.read_bytes()
    assert calls_of(calls, target) == [target.md5] * 2
    assert held.path.read_bytes() == held_shard.path.read_bytes()
    held.close()


def hold_and_read(cache, shard, calls, holding, stop, failures):
    with get(cache, shard, calls) as entry:
        expected, inode = shard.path.read_bytes(), os.stat(entry.path).st_ino
        holding.touch()
        while not stop.exists():
            if entry.path.read_bytes() != expected or os.stat(entry.path).st_ino != inode:
                failures.touch()
            time.sleep(0.001)


def test_a_pinned_entry_is_never_evicted_while_another_process_fills_the_cache(
    shards, root, calls, tmp_path
):
    held_shard, others = shards[0], shards[1:]
    holding, stop, failures = tmp_path / "holding", tmp_path / "stop", tmp_path / "failures"
    cache = ShardCache(root, limit=3 * SIZE, wait=5)
    reader = SPAWN.Process(
        target=hold_and_read, args=(cache, held_shard, calls, holding, stop, failures)
    )
    reader.start()
    wait_for(holding)
    for shard in others * 2:  # 22 gets through the two shards of room left
        with get(cache, shard, calls) as entry:
            assert entry.path.read_bytes() == shard.path.read_bytes()
        assert held_shard.md5 in entries(root) and len(entries(root)) <= 3
    stop.touch()
    reader.join()
    assert reader.exitcode == 0 and not failures.exists()
    assert calls_of(calls, held_shard) == [held_shard.md5]
    assert len(calls_of(calls)) > len(shards)  # the others were evicted around it


def in_forked_child(cache, inherited, shard, calls):
    inherited.close()  # the child's copy of the pin: the parent's stays
    cache.hint([shard.md5])  # in a hint file of the child's own
    with get(cache, shard, calls) as entry:
        assert entry.path.read_bytes() == shard.path.read_bytes()


def test_a_forked_child_has_its_own_locks_and_hints(shards, root, calls):
    cache = ShardCache(root, limit="1MB")
    a, b = shards[:2]
    cache.hint([a.md5])
    held = get(cache, a, calls)
    child = multiprocessing.get_context("fork").Process(
        target=in_forked_child, args=(cache, held, b, calls)
    )
    child.start()
    child.join()
    assert child.exitcode == 0
    assert pinned(root, a.md5) and not held.closed
    assert len(list((root / "hints").iterdir())) == 2  # the child's, left as it exited
    cache.info()  # a scan: removes the dead child's, keeps the parent's own
    assert [p.read_text() for p in (root / "hints").iterdir()] == [f"{a.md5}\n"]
    cache.hint([b.md5])
    assert [p.read_text() for p in (root / "hints").iterdir()] == [f"{b.md5}\n"]
    held.close()
    assert not pinned(root, a.md5)


# -- the command ------------------------------------------------------------------------------------
def cache_command(*argv: str) -> int:
    """`imgpack cache ...` through this module's own parser (cli/main.py registers the verb)."""
    top = argparse.ArgumentParser(prog="imgpack")
    cache_cli.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["cache", *argv])
    return args.func(args)


def test_cache_info_and_clear_show_and_empty_the_cache_of_imgpack_cache(
    shards, calls, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("IMGPACK_CACHE", str(tmp_path / "shared"))
    root = tmp_path / "shared" / "stream"
    assert cache_command("info") == 0
    assert f"cache: {root}" in capsys.readouterr().out
    cache = ShardCache(limit="1MB")
    for shard in shards[:3]:
        get(cache, shard, calls).close()
    held = get(cache, shards[3], calls)
    assert cache_command("info") == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown == [
        f"cache: {root}",
        f"shards: 4 ({format_size(4 * SIZE)})",
        f"in use: 1 ({format_size(SIZE)}) held by running readers",
        "downloading: 0 (0 bytes reserved)",
        "limit: 1.0 MB (the last one a reader set)",
    ]
    assert cache_command("info", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {
        "root": str(root),
        "limit": 10**6,
        "limit_from": "recorded",
        "entries": 4,
        "bytes": 4 * SIZE,
        "pinned": 1,
        "pinned_bytes": SIZE,
        "downloads": 0,
        "download_bytes": 0,
    }
    assert cache_command("clear") == 0
    assert capsys.readouterr().out.strip() == (
        f"removed 3 shards ({format_size(3 * SIZE)}) from {root}; "
        "1 shard in use by running readers stays"
    )
    assert entries(root) == {shards[3].md5}
    assert held.path.read_bytes() == shards[3].path.read_bytes()
    held.close()
    assert cache.clear() == 1 and entries(root) == set()


def test_the_imgpack_cache_command(shards, calls, tmp_path):
    from imgpack.cli import main

    if cache_cli not in main.VERBS:
        pytest.skip("`imgpack cache` is not registered in cli/main.py yet")
    env = {**os.environ, "IMGPACK_CACHE": str(tmp_path / "shared")}
    get(ShardCache(tmp_path / "shared" / "stream", limit="1MB"), shards[0], calls).close()
    for argv, shown in ((["info", "--json"], '"entries": 1'), (["clear"], "removed 1 shard")):
        done = subprocess.run(
            [sys.executable, "-m", "imgpack.cli.main", "cache", *argv],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout


# -- for streaming: readers let go before waiting, prefetches, ranked hints ------------------------
def test_before_wait_is_called_on_a_miss_only(shards, root, calls):
    cache = ShardCache(root, limit=4 * SIZE)
    a = shards[0]
    called = []
    first = cache.get(a.md5, a.size, CopyFetch(a, calls), a.name, lambda: called.append(1))
    assert called == [1]
    again = cache.get(a.md5, a.size, CopyFetch(a, calls), a.name, lambda: called.append(2))
    assert called == [1] and calls_of(calls, a) == [a.md5]
    first.close()
    again.close()


def test_a_prefetch_fetches_unpinned_and_evicts_only_unhinted_entries(shards, root, calls):
    cache = ShardCache(root, limit=3 * SIZE)
    a, b, c, d, e = shards[:5]
    assert cache.prefetch(a.md5, a.size, CopyFetch(a, calls), a.name)
    assert entries(root) == {a.md5} and not pinned(root, a.md5)
    assert cache.prefetch(a.md5, a.size, CopyFetch(a, calls), a.name)  # there: nothing fetched
    assert calls_of(calls, a) == [a.md5]
    for shard in (b, c):
        get(cache, shard, calls).close()
    reader = ShardCache(root, limit=3 * SIZE)  # another process's handle: its own hint
    reader.hint([a.md5, b.md5, c.md5])
    started = time.monotonic()
    assert not cache.prefetch(d.md5, d.size, CopyFetch(d, calls), d.name, patience=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert entries(root) == {a.md5, b.md5, c.md5} and calls_of(calls, d) == []
    reader.hint([a.md5, b.md5])  # c was read: the prefetch may take its room
    assert cache.prefetch(d.md5, d.size, CopyFetch(d, calls), d.name)
    assert entries(root) == {a.md5, b.md5, d.md5}
    get(cache, e, calls).close()  # a reader's own get evicts the unhinted first
    assert entries(root) == {a.md5, b.md5, e.md5}
    reader.hint([a.md5, b.md5, e.md5])
    get(cache, d, calls).close()  # and then, as it must, the hinted one needed last
    assert entries(root) == {a.md5, b.md5, d.md5}
    reader.close()


def test_a_prefetch_leaves_a_shard_another_process_is_fetching(shards, root, calls):
    cache = ShardCache(root, limit=4 * SIZE)
    a = shards[0]
    worker = threading.Thread(
        target=lambda: get(ShardCache(root, limit=4 * SIZE), a, calls, delay=0.3).close()
    )
    worker.start()
    wait_for(root / "locks" / a.md5)
    assert not cache.prefetch(a.md5, a.size, CopyFetch(a, calls), a.name)
    worker.join()
    assert calls_of(calls, a) == [a.md5]


def test_hints_ranked_after_others_are_evicted_before_them(shards, root, calls):
    cache = ShardCache(root, limit=3 * SIZE)
    a, b, c, d = shards[:4]
    for shard in (a, b, c):
        get(cache, shard, calls).close()
    reader, prefetcher = ShardCache(root, limit=3 * SIZE), ShardCache(root, limit=3 * SIZE)
    reader.hint([a.md5, b.md5])  # being read: ranks 0, 1
    prefetcher.hint([c.md5], after=4)  # the next window: rank 4
    get(cache, d, calls).close()  # all hinted: the one needed last goes
    assert entries(root) == {a.md5, b.md5, d.md5}
    reader.close()
    prefetcher.close()
