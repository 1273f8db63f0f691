"""`scorer.num_workers > 1`: spawned local processes pulling scoring tasks (`scheduling.Task`) from one queue.

Worker k (in start order) is pinned to `devices[k % len(devices)]` by the pool initializer, so each process keeps one
device (one CUDA context) for its life, and uses `torch_threads` intra-op threads (also cv2's). Tasks are submitted in
the given order (longest first) and a free worker takes the next one. Workers only compute; the caller writes rows
and the cache as results come back, so a worker killed mid-way loses only its unfinished task. Workers are spawned
(not forked) so that a CUDA context of the parent is never inherited.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_tasks", "threads_per_worker", "worker_device"]

_DEVICE: str | None = None  # this worker's device, set by `_init_worker`


def threads_per_worker(num_workers: int) -> int:
    """Intra-op threads per worker: the machine's cores shared evenly (at least one)."""
    return max(1, (os.cpu_count() or 1) // num_workers)


def worker_device() -> str:
    """The device this worker process was pinned to (`run_tasks`)."""
    if _DEVICE is None:
        raise RuntimeError("worker_device() called outside a run_tasks worker")
    return _DEVICE


def _init_worker(slots, devices: Sequence[str], threads: int) -> None:
    global _DEVICE
    index = slots.get()  # 0, 1, 2, ... in the order the processes start
    _DEVICE = devices[index % len(devices)]
    import torch  # noqa: PLC0415  (in the worker only)

    torch.set_num_threads(threads)
    try:
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(threads)
    except ImportError:
        pass


def run_tasks(fn: Callable[..., Any], tasks: Sequence[Any], *, num_workers: int, devices: Sequence[str],
              **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Yield `(task, fn(task, **kwargs))` as tasks finish, computed in `num_workers` spawned processes.

    The first exception of a task is raised when its result is reached; tasks not started by then are cancelled.
    """
    threads = threads_per_worker(num_workers)
    logger.info("scoring %d task(s) in %d worker process(es) on %s, %d torch thread(s) each", len(tasks), num_workers,
                ", ".join(dict.fromkeys(devices)), threads)
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for index in range(num_workers):
        slots.put(index)
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context, initializer=_init_worker,
                             initargs=(slots, list(devices), threads)) as pool:
        futures = {pool.submit(fn, task, **kwargs): task for task in tasks}  # the queue keeps this order
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()
