"""VBench Quality / Semantic / Total scores from per-dimension aggregates.

Constants are those of VBench `scripts/constant.py` and the recipe of `scripts/cal_final_score.py` (Vchitect/VBench,
unchanged since 2024-06-28; README "How to Calculate Total Score"):

    n[k]     = (raw[k] - Min[k]) / (Max[k] - Min[k]) * W[k]          (not clipped)
    Quality  = sum_{k in QUALITY} n[k]  / sum_{k in QUALITY} W[k]
    Semantic = sum_{k in SEMANTIC} n[k] / sum_{k in SEMANTIC} W[k]
    Total    = (4 * Quality + 1 * Semantic) / 5

The one rule for a Final Score over fewer than 16 dimensions (the report, `sweep.final_score` and W&B all use it):
- it is computed over the dimensions the user REQUESTED (the keys of `raw`, or `requested`): both sums run over the
  requested dimensions of their half, so the weights are renormalised over them (the official script would set a
  missing dimension to raw 0, which normalises to a negative number when Min > 0); a half with no requested dimension is
  None and Total is the half that exists;
- a requested dimension with no score (NaN / absent) is never renormalised away: the halves it belongs to and Total
  are None, and `Totals.reason` names it;
- fewer than 16 requested dimensions is labelled: `final_label(requested)`, e.g. "3/16: subject_consistency,
  temporal_flickering, aesthetic_quality", shown in the table header as "Final (3/16: ...)".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ALL_DIMENSIONS",
    "QUALITY_DIMENSIONS",
    "SEMANTIC_DIMENSIONS",
    "NORMALIZE_MIN_MAX",
    "DIMENSION_WEIGHT",
    "QUALITY_WEIGHT",
    "SEMANTIC_WEIGHT",
    "Totals",
    "final_label",
    "normalize_dimension",
    "compute_totals",
]

QUALITY_DIMENSIONS: tuple[str, ...] = (
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "aesthetic_quality",
    "imaging_quality",
    "dynamic_degree",
)
SEMANTIC_DIMENSIONS: tuple[str, ...] = (
    "object_class",
    "multiple_objects",
    "human_action",
    "color",
    "spatial_relationship",
    "scene",
    "appearance_style",
    "temporal_style",
    "overall_consistency",
)
ALL_DIMENSIONS: tuple[str, ...] = QUALITY_DIMENSIONS + SEMANTIC_DIMENSIONS

# (Min, Max) per dimension: VBench scripts/constant.py NORMALIZE_DIC.
NORMALIZE_MIN_MAX: dict[str, tuple[float, float]] = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0),
    "human_action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364),
    "overall_consistency": (0.0, 0.364),
}
# VBench scripts/constant.py DIM_WEIGHT: every dimension 1 except dynamic_degree 0.5.
DIMENSION_WEIGHT: dict[str, float] = {name: 1.0 for name in ALL_DIMENSIONS} | {"dynamic_degree": 0.5}
QUALITY_WEIGHT = 4.0
SEMANTIC_WEIGHT = 1.0


def final_label(requested: Sequence[str]) -> str:
    """Label of a Final over `requested`: "" for all 16; "k/16: a, b" (k <= 8) or "k/16: without x, y" otherwise."""
    names = [name for name in ALL_DIMENSIONS if name in set(requested)]
    if len(names) == len(ALL_DIMENSIONS):
        return ""
    if len(names) <= len(ALL_DIMENSIONS) // 2:
        return f"{len(names)}/{len(ALL_DIMENSIONS)}: {', '.join(names) or 'none'}"
    left_out = [name for name in ALL_DIMENSIONS if name not in names]
    return f"{len(names)}/{len(ALL_DIMENSIONS)}: without {', '.join(left_out)}"


@dataclass(frozen=True)
class Totals:
    """Quality, Semantic and Total over the requested dimensions (None where that half has none, or lacks a score)."""

    quality: float | None
    semantic: float | None
    total: float | None
    dimensions_scored: int
    partial: bool  # fewer than 16 dimensions requested
    normalized: dict[str, float]
    requested: tuple[str, ...] = ()  # the Final's dimensions, in ALL_DIMENSIONS order
    missing: tuple[str, ...] = ()  # requested dimensions without a score

    @property
    def label(self) -> str:
        """`final_label(requested)`: "" when all 16 were requested."""
        return final_label(self.requested)

    @property
    def partial_note(self) -> str:
        """Caption text for tables (the same rule as `label`)."""
        return self.label

    @property
    def reason(self) -> str:
        """Why Total is None: the requested dimensions without a score ("" when there are none)."""
        return f"no score for requested dimension(s) {', '.join(self.missing)}" if self.missing else ""


def normalize_dimension(name: str, raw: float) -> float:
    """Official weighted normalisation `(raw - Min) / (Max - Min) * W` of one dimension (not clipped)."""
    if name not in NORMALIZE_MIN_MAX:
        raise ValueError(f"dimension must be one of the 16 VBench dimensions, got {name!r}")
    low, high = NORMALIZE_MIN_MAX[name]
    return (raw - low) / (high - low) * DIMENSION_WEIGHT[name]


def _half(normalized: Mapping[str, float], names: Sequence[str], missing: Sequence[str]) -> float | None:
    if not names or any(name in missing for name in names):
        return None
    return sum(normalized[name] for name in names) / sum(DIMENSION_WEIGHT[name] for name in names)


def compute_totals(raw: Mapping[str, float], *, requested: Sequence[str] | None = None) -> Totals:
    """Quality / Semantic / Total of per-dimension aggregate scores `raw` (underscore names, VBench scale).

    `requested` (default: the keys of `raw`) are the dimensions the Final is over; a requested dimension whose value is
    NaN, None or absent makes its half and Total None (module docstring). Unknown names raise ValueError (a typo must
    not silently drop a dimension).
    """
    names = list(raw) if requested is None else list(requested)
    unknown = sorted((set(raw) | set(names)) - set(ALL_DIMENSIONS))
    if unknown:
        raise ValueError(f"raw has unknown VBench dimension names {unknown}; expected names from {list(ALL_DIMENSIONS)}")
    wanted = [name for name in ALL_DIMENSIONS if name in set(names)]
    scored = {name: float(raw[name]) for name in wanted
              if raw.get(name) is not None and not math.isnan(float(raw[name]))}
    missing = tuple(name for name in wanted if name not in scored)
    normalized = {name: normalize_dimension(name, value) for name, value in scored.items()}
    quality = _half(normalized, [n for n in QUALITY_DIMENSIONS if n in wanted], missing)
    semantic = _half(normalized, [n for n in SEMANTIC_DIMENSIONS if n in wanted], missing)
    if missing:
        total = None
    elif quality is not None and semantic is not None:
        total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    else:
        total = quality if quality is not None else semantic
    return Totals(
        quality=quality,
        semantic=semantic,
        total=total,
        dimensions_scored=len(scored),
        partial=len(wanted) < len(ALL_DIMENSIONS),
        normalized=normalized,
        requested=tuple(wanted),
        missing=missing,
    )
