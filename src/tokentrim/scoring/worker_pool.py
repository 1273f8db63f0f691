"""`scorer.num_workers > 1`: local processes, worker k scores `jobs[k::num_workers]` on `devices[k % len(devices)]`.

Every worker writes the same `scores.csv` through `scores_store.ScoresStore` (locked read-merge-write), so there are
no shard files to merge and a worker killed mid-way loses only its unfinished chunk. Workers are spawned (not forked)
so that a CUDA context of the parent is never inherited.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["score_with_workers"]


def score_with_workers(score_jobs: Callable[..., Any], jobs: Sequence[Any], *, num_workers: int,
                       devices: Sequence[str], **kwargs: Any) -> list[Any]:
    """Run `score_jobs(jobs[k::num_workers], device=devices[k % len(devices)], **kwargs)` in `num_workers`
    spawned processes; returns their results in worker order (the first exception is raised after all finish)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        futures = [pool.submit(score_jobs, list(jobs[k::num_workers]), device=devices[k % len(devices)], **kwargs)
                   for k in range(num_workers)]
        return [future.result() for future in futures]
