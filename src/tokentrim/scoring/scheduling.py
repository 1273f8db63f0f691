"""Dimension-major tasks for `scorer.num_workers > 1`: (dimension, chunk of units), longest first.

A task is one `_run_vbench_dimension` call, i.e. one model load. Each dimension's pending units are split into
near-equal contiguous chunks so that no task costs much more than `total cost / num_workers` (at most one unit more),
nor holds more than `chunk_size` units; tasks are then ordered longest first (LPT), so workers pulling them one at a
time from a queue finish close together.

Costs are relative: `SECONDS_PER_UNIT[dim]` is vbench 0.1.5's own `evaluate` time per (video, dimension) unit on one
H200, model load included, for 81-frame 480x832 videos at 16 fps on stand-in weights
(bench/results/vbench_scoring_NVIDIA_H200_202612_short81.md, the "vbench s/unit" column, rounded). A dimension
missing there (the GRiT four: detectron2 was not installed) gets `DEFAULT_SECONDS_PER_UNIT`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_SECONDS_PER_UNIT", "SECONDS_PER_UNIT", "Task", "build_tasks", "unit_cost"]

SECONDS_PER_UNIT: dict[str, float] = {
    "subject_consistency": 1.00, "background_consistency": 0.77, "temporal_flickering": 0.20,
    "motion_smoothness": 1.34, "aesthetic_quality": 1.00, "imaging_quality": 2.06, "dynamic_degree": 2.60,
    "human_action": 0.57, "scene": 2.03, "appearance_style": 1.99, "temporal_style": 0.36,
    "overall_consistency": 0.37,
}
DEFAULT_SECONDS_PER_UNIT = 2.0  # GRiT dimensions (a dense-captioning detector per frame): not measured yet


def unit_cost(dimension: str) -> float:
    return SECONDS_PER_UNIT.get(dimension, DEFAULT_SECONDS_PER_UNIT)


@dataclass(frozen=True)
class Task:
    """One vbench call: `units` (a contiguous chunk of the dimension's pending units) and its relative cost."""

    dimension: str
    units: tuple[Any, ...]
    cost: float


def build_tasks(pending: Mapping[str, Sequence[Any]], *, num_workers: int, chunk_size: int) -> list[Task]:
    """Tasks covering every pending unit exactly once, longest first (ties: the order of `pending`, then chunk order).

    Args:
        pending: {dimension: units to score}, in the call's dimension order.
        num_workers: processes that will pull the tasks (>= 1).
        chunk_size: most units per task (`scorer.chunk_size`).
    """
    total = sum(unit_cost(dim) * len(units) for dim, units in pending.items())
    bound = total / max(num_workers, 1)  # the ideal finish time of every worker
    tasks: list[Task] = []
    for dim, units in pending.items():
        if not units:
            continue
        cost = unit_cost(dim)
        pieces = max(math.ceil(len(units) / chunk_size), math.ceil(len(units) * cost / bound - 1e-9), 1)
        pieces = min(pieces, len(units))
        base, extra = divmod(len(units), pieces)  # sizes differ by at most one unit
        start = 0
        for piece in range(pieces):
            size = base + (piece < extra)
            tasks.append(Task(dimension=dim, units=tuple(units[start:start + size]), cost=size * cost))
            start += size
    return sorted(tasks, key=lambda task: -task.cost)  # stable: ties keep dimension and chunk order
