"""Dimension-major scheduling for `scorer.num_workers > 1` (`scoring.scheduling.build_tasks`): coverage, bound, order."""

from __future__ import annotations

from collections import Counter

import pytest

from tokentrim.scoring.scheduling import DEFAULT_SECONDS_PER_UNIT, SECONDS_PER_UNIT, build_tasks, unit_cost

# a call's pending units: an expensive dimension with many units, cheap ones, one unknown to the cost table (GRiT)
PENDING = {
    "dynamic_degree": [f"v{k}" for k in range(20)],
    "temporal_flickering": [f"v{k}" for k in range(20)],
    "scene": [f"v{k}" for k in range(0, 20, 2)],
    "color": ["v1", "v3", "v5"],
    "aesthetic_quality": [],
}


@pytest.mark.parametrize("num_workers", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("chunk_size", [1, 4, 10_000])
def test_tasks_cover_every_unit_once_respect_the_bound_and_come_longest_first(num_workers, chunk_size):
    tasks = build_tasks(PENDING, num_workers=num_workers, chunk_size=chunk_size)
    got = Counter((task.dimension, unit) for task in tasks for unit in task.units)
    assert got == Counter((dim, unit) for dim, units in PENDING.items() for unit in units)  # each exactly once
    for dim in PENDING:  # contiguous chunks; larger chunks first, so task order keeps the dimension's unit order
        assert [u for task in tasks if task.dimension == dim for u in task.units] == PENDING[dim]
    total = sum(unit_cost(dim) * len(units) for dim, units in PENDING.items())
    for task in tasks:
        assert 1 <= len(task.units) <= chunk_size
        assert task.cost == pytest.approx(unit_cost(task.dimension) * len(task.units))
        assert task.cost <= total / num_workers + unit_cost(task.dimension) + 1e-9  # at most one unit over the ideal
    costs = [task.cost for task in tasks]
    assert costs == sorted(costs, reverse=True)  # LPT


def test_splitting_follows_the_cost_table():
    assert unit_cost("color") == DEFAULT_SECONDS_PER_UNIT and unit_cost("scene") == SECONDS_PER_UNIT["scene"]
    tasks = build_tasks(PENDING, num_workers=8, chunk_size=10_000)
    per_dim = Counter(task.dimension for task in tasks)
    # 20 x 2.6 s of dynamic_degree is > 3x the ideal share (total / 8), 20 x 0.2 s of temporal_flickering is not
    total = sum(unit_cost(dim) * len(units) for dim, units in PENDING.items())
    assert per_dim["dynamic_degree"] == -(-20 * SECONDS_PER_UNIT["dynamic_degree"] // (total / 8)) >= 3
    assert per_dim["temporal_flickering"] == 1 and "aesthetic_quality" not in per_dim
    sizes = [len(task.units) for task in tasks if task.dimension == "dynamic_degree"]
    assert max(sizes) - min(sizes) <= 1
    assert tasks[0].dimension == "dynamic_degree"
    # one worker: no split beyond chunk_size (the in-process path's chunks)
    assert Counter(task.dimension for task in build_tasks(PENDING, num_workers=1, chunk_size=16)) == \
        {"dynamic_degree": 2, "temporal_flickering": 2, "scene": 1, "color": 1}
