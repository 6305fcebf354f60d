"""Worker processes for reading, hashing and shard writing: ordered results, capped library threads."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, TypeVar

from imgpack.errors import OutputError

if TYPE_CHECKING:
    from imgpack.parallel.cluster import DaskPool

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")

__all__ = [
    "worker_pool",
    "pool_size",
    "ordered_map",
    "worker_errors",
    "without_pandas",
    "batched",
]

# Library thread pools each worker would otherwise size to the whole machine: processes x
# threads must not exceed the cores (the oversubscription the seed note measured).
THREAD_LIMITS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "ARROW_NUM_THREADS",
    "ARROW_IO_THREADS",
)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def release_freed_memory() -> None:
    """Hand memory freed by the build back to the kernel (glibc and Arrow keep it for reuse),
    before a phase that needs more: the process's peak stays that of its largest phase."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _worker_start(build_pid: int) -> None:
    # A worker must not outlive the build that started it, even one killed with SIGKILL. Its
    # parent is the forkserver, which each worker keeps alive (they hold its pipe), so the
    # worker watches the build process itself.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        # Image buffers of ~100 kB come and go thousands of times a second; by default glibc
        # hands their pages back to the kernel and faults them in again, a third of a photo's
        # cost. Keep freed memory for reuse (up to the size of a write transaction, 32 MB).
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    threading.Thread(target=_exit_with, args=(build_pid,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    without_pandas()  # a worker writes shards and hashes, it never makes a DataFrame
    if "pyarrow" in sys.modules:  # a forked copy: its parent's thread pools may be sized
        # already; a worker that imports Arrow itself sizes them from THREAD_LIMITS
        sys.modules["pyarrow"].set_cpu_count(1)
        sys.modules["pyarrow"].set_io_thread_count(1)


def without_pandas() -> None:
    """Keep pandas out of this process, for good: pyarrow imports it (0.2-0.3 s) on its first
    array only to check whether that is a pandas object. For processes that never make frames."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "pandas":
            raise ImportError("this imgpack process does without pandas")
        return None


def _exit_with(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or no pidfd (not Linux 5.3+): poll
        handle = None
    if handle is not None:
        select.select([handle], [], [])  # readable once the process has ended
        os._exit(1)
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass
        time.sleep(0.5)


@contextlib.contextmanager
def worker_pool(
    workers: int, scheduler: str | None = None, fork: bool = False
) -> Iterator[ProcessPoolExecutor | DaskPool | None]:
    """`workers` processes (None for 1: work runs in this process); all stopped on exit. With a
    `scheduler` address, the workers of that Dask cluster instead.

    forkserver by default, not fork: the parent may already run Arrow or SQLite threads, and a
    forked copy of a process with threads can deadlock. `fork`: the caller starts the pool before
    any such thread or handle of its own, so workers are copies of it, with no imports to redo;
    a process already running another Python thread gets forkserver all the same.
    """
    if scheduler:
        from imgpack.parallel.cluster import DaskPool

        pool = DaskPool(scheduler)
        try:
            yield pool
        finally:
            pool.close()
        return
    if workers <= 1:
        yield None
        return
    pool = _started_pool(workers, fork)
    try:
        yield pool
    finally:
        # Killed, not joined: after an error or Ctrl-C the queued work is not wanted.
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(OSError):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def _started_pool(workers: int, fork: bool) -> ProcessPoolExecutor:
    """`workers` processes, all started now under the thread limits (see `worker_pool`)."""
    fork = fork and _single_threaded()
    context = multiprocessing.get_context("fork" if fork else "forkserver")
    if not fork:
        # The pipeline's workers seal shards and read their props: Arrow loaded once, here.
        context.set_forkserver_preload(
            [
                "imgpack.parallel.workers",
                "imgpack.ingest.probe",
                "imgpack.write.shard",
                "imgpack.format.tables",
            ]
        )
    saved = {name: os.environ.get(name) for name in THREAD_LIMITS}
    os.environ.update({name: "1" for name in THREAD_LIMITS})
    # Workers run imgpack's functions only: they must not re-run the caller's script, which
    # forkserver would do for a script without an `if __name__ == "__main__"` guard.
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        pool = _SizedPool(
            workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)
        )
        # Start every worker now, under the thread limits, not lazily later.
        for future in [pool.submit(os.getpid) for _ in range(workers)]:
            future.result()
    finally:
        sys.modules["__main__"] = main
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return pool


class _SizedPool(ProcessPoolExecutor):
    """A process pool that says how many workers it has (the executor keeps that private)."""

    def __init__(self, workers: int, **options):
        super().__init__(workers, **options)
        self.size = workers


def pool_size(pool: ProcessPoolExecutor | DaskPool | None) -> int:
    """How many tasks `pool` runs at once (a `worker_pool`; None runs them here, one at a time)."""
    if pool is None:
        return 1
    return pool.size


def _single_threaded() -> bool:
    """No Python thread but this one. Native threads are not counted: OpenBLAS (numpy) stops its
    own before a fork, and Arrow starts its pools only on first use, after callers fork."""
    return threading.active_count() == 1


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[tuple[C, T]],
    pool: ProcessPoolExecutor | None,
    ahead: int = 2,
    local: Callable[[T], bool] | None = None,
) -> Iterator[tuple[C, R]]:
    """For (context, task) pairs yield (context, fn(task)) in input order; only the task goes to
    a worker, and at most `ahead` tasks per worker are in flight. A task `local` says is trivial
    (nothing to read) runs here: a round trip to a worker would cost more."""
    if pool is None:
        for context, task in items:
            yield context, fn(task)
        return
    limit = ahead * pool_size(pool)
    pending: deque = deque()
    remote = 0  # pending tasks that went to a worker
    try:
        with worker_errors():
            for context, task in items:
                here = local is not None and local(task)
                if here:
                    future: Future = Future()
                    future.set_result(fn(task))
                else:
                    future = pool.submit(fn, task)
                    remote += 1
                pending.append((context, future, here))
                while pending and (pending[0][2] or remote >= limit):
                    done, future, here = pending.popleft()
                    remote -= not here
                    yield done, future.result()
            while pending:
                done, future, _ = pending.popleft()
                yield done, future.result()
    finally:
        for _, future, _ in pending:
            future.cancel()


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A worker that died (killed, out of memory, a lost cluster worker) as one clear error."""
    try:
        yield
    except BrokenProcessPool:
        raise OutputError(
            "a worker process died (killed, or out of memory); rerun, or lower the worker count "
            "(--workers, ingest.workers, pack.workers)"
        ) from None
    except Exception as exc:
        from imgpack.parallel.cluster import killed_worker

        translated = killed_worker(exc)
        if translated is None:
            raise
        raise translated from None
