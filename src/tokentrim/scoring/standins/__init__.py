"""Stand-in weights for VBench's networks: the real architectures with seeded random weights, written in the
published file formats at exactly the paths `tokentrim vbench-check` lists (`scoring.weights.required_files`).

They exist so that every dimension's code path (loading, preprocessing, model, aggregation) runs end to end without
the real checkpoints, in CI and on a GPU bench. **The scores they give mean nothing.**

Each family module (`MODULES`) exposes
    DIMENSIONS: tuple[str, ...]                    the VBench dimensions its files make ready
    write(roots: WeightRoots, *, seed: int) -> list[Path]
                                                   writes (or keeps, when already complete) its files under `roots`
and optionally
    REQUIRES: tuple[str, ...]                      packages `write` needs beyond ours (grit: detectron2, not on PyPI);
                                                   `write_standins(out)` (all families) skips a family missing one,
                                                   with a warning; asking for its dimensions raises instead
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tokentrim.scoring.weights import WeightRoots

__all__ = ["MODULES", "family_of", "write_standins", "standin_roots"]

logger = logging.getLogger(__name__)

# family module -> dimensions; filled in by the family modules' own DIMENSIONS (checked in tests)
MODULES: tuple[str, ...] = (
    "dino", "clip_models", "musiq", "raft", "amt",  # subject/background consistency, appearance style, aesthetic
    "umt", "viclip", "tag2text",                     # human_action, temporal_style/overall_consistency, scene
    "grit",                                          # object_class, multiple_objects, color, spatial_relationship
)


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def family_of(dimension: str) -> str | None:
    """The family module whose stand-ins make `dimension` ready (None: needs none or has none here)."""
    for name in MODULES:
        if dimension in _module(name).DIMENSIONS:
            return name
    return None


def standin_roots(out_dir: str | os.PathLike) -> WeightRoots:
    """The three weight roots under one folder: `<out>/vbench`, `<out>/torch`, `<out>/huggingface`."""
    out = Path(out_dir)
    return WeightRoots(cache_dir=out / "vbench", torch_home=out / "torch", hf_home=out / "huggingface")


def write_standins(out_dir: str | os.PathLike, dimensions: Sequence[str] | None = None, *, seed: int = 0) -> WeightRoots:
    """Write the stand-ins every family of `dimensions` needs (None = all families) under `out_dir`; return the roots."""
    roots = standin_roots(out_dir)
    families = list(MODULES) if dimensions is None else list(dict.fromkeys(
        fam for fam in (family_of(dim) for dim in dimensions) if fam is not None))
    for name in families:
        missing = [pkg for pkg in getattr(_module(name), "REQUIRES", ()) if importlib.util.find_spec(pkg) is None]
        if missing and dimensions is None:
            logger.warning("stand-ins %r skipped: needs %s, not installed", name, ", ".join(missing))
            continue
        _module(name).write(roots, seed=seed)
    return roots
