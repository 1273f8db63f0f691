"""Shared fixtures. `vbench_standins`: VBench stand-in weights written once per test session (scores mean nothing)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence

import pytest

from tokentrim.scoring.standins import write_standins
from tokentrim.scoring.weights import WeightRoots


@pytest.fixture(scope="session")
def vbench_standins(tmp_path_factory) -> Iterator[Callable[[Sequence[str]], WeightRoots]]:
    """`get(dimensions) -> WeightRoots`: the stand-in files those dimensions need, in one session-wide folder.

    Each family is written at most once per session (the family writers skip complete files), seed 0. The folder
    (several GB with CLIP ViT-L/14) is removed at the end of the session rather than left to pytest's temp rotation.
    """
    out = tmp_path_factory.mktemp("vbench_standins")

    def get(dimensions: Sequence[str]) -> WeightRoots:
        return write_standins(out, list(dimensions), seed=0)

    yield get
    shutil.rmtree(out, ignore_errors=True)
