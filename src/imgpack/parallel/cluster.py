"""imgpack's tasks on a Dask cluster (dask.distributed): imported only when a scheduler is named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imgpack.errors import InputError, OutputError

__all__ = ["DaskPool"]


class DaskPool:
    """The part of an executor `ordered_map` uses, over a `distributed.Client`.

    Tasks are plain data (paths, digests, sizes); every worker must reach the paths in them (a
    shared file system, or object-store URLs). Dask reruns the task of a worker that died; a task
    gives the same bytes wherever and however often it runs.
    """

    def __init__(self, address: str, timeout: float = 10):
        try:
            from distributed import Client
        except ImportError:
            raise InputError(
                f"a Dask scheduler ({address}) needs Dask: pip install 'imgpack[dask]'"
            ) from None
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {address} ({_reason(exc)}); start one with "
                f"`dask scheduler` and workers with `dask worker {address}`, or check the address"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            self.client.close()
            raise InputError(
                f"the Dask scheduler at {address} has no workers ({_reason(exc)}); start some "
                f"with `dask worker {address}`"
            ) from None
        self.size = max(1, sum(self.client.nthreads().values()))  # tasks run at once

    def submit(self, fn: Callable, arg: Any):
        return self.client.submit(fn, arg, pure=False)

    def close(self) -> None:
        self.client.close()


def killed_worker(exc: BaseException) -> OutputError | None:
    """A task that took down every worker it was given to (Dask's KilledWorker), as our error."""
    if type(exc).__name__ == "KilledWorker":
        return OutputError(
            f"a task killed every Dask worker that ran it ({exc}); see the workers' logs "
            "(out of memory?)"
        )
    return None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
