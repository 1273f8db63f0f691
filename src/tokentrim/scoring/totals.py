"""VBench Quality / Semantic / Total scores from per-dimension aggregates.

Constants are those of VBench `scripts/constant.py` and the recipe of `scripts/cal_final_score.py` (Vchitect/VBench,
unchanged since 2024-06-28; README "How to Calculate Total Score"):

    n[k]     = (raw[k] - Min[k]) / (Max[k] - Min[k]) * W[k]          (not clipped)
    Quality  = sum_{k in QUALITY} n[k]  / sum_{k in QUALITY} W[k]
    Semantic = sum_{k in SEMANTIC} n[k] / sum_{k in SEMANTIC} W[k]
    Total    = (4 * Quality + 1 * Semantic) / 5

One deliberate difference: the official script sets a missing dimension to raw 0 (which normalises to a negative number
when Min > 0). Here both sums run over the dimensions actually present, so the weights are renormalised; a half with no
dimension is None and Total falls back to the half that exists. `Totals.partial` says when fewer than 16 were scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


@dataclass(frozen=True)
class Totals:
    """Quality, Semantic and Total (None where no dimension of that half was scored)."""

    quality: float | None
    semantic: float | None
    total: float | None
    dimensions_scored: int
    partial: bool
    normalized: dict[str, float]

    @property
    def partial_note(self) -> str:
        """Caption text for tables: empty when all 16 dimensions were scored."""
        return f"partial: {self.dimensions_scored}/{len(ALL_DIMENSIONS)} dimensions" if self.partial else ""


def normalize_dimension(name: str, raw: float) -> float:
    """Official weighted normalisation `(raw - Min) / (Max - Min) * W` of one dimension (not clipped)."""
    if name not in NORMALIZE_MIN_MAX:
        raise ValueError(f"dimension must be one of the 16 VBench dimensions, got {name!r}")
    low, high = NORMALIZE_MIN_MAX[name]
    return (raw - low) / (high - low) * DIMENSION_WEIGHT[name]


def _half(normalized: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    present = [name for name in names if name in normalized]
    if not present:
        return None
    return sum(normalized[name] for name in present) / sum(DIMENSION_WEIGHT[name] for name in present)


def compute_totals(raw: Mapping[str, float]) -> Totals:
    """Quality / Semantic / Total of per-dimension aggregate scores `raw` (underscore names, VBench scale).

    NaN entries count as not scored. Unknown names raise ValueError (a typo must not silently drop a dimension).
    """
    unknown = sorted(set(raw) - set(ALL_DIMENSIONS))
    if unknown:
        raise ValueError(f"raw has unknown VBench dimension names {unknown}; expected names from {list(ALL_DIMENSIONS)}")
    scored = {name: float(value) for name, value in raw.items() if value is not None and not math.isnan(float(value))}
    normalized = {name: normalize_dimension(name, value) for name, value in scored.items()}
    quality = _half(normalized, QUALITY_DIMENSIONS)
    semantic = _half(normalized, SEMANTIC_DIMENSIONS)
    if quality is not None and semantic is not None:
        total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    else:
        total = quality if quality is not None else semantic
    return Totals(
        quality=quality,
        semantic=semantic,
        total=total,
        dimensions_scored=len(scored),
        partial=len(scored) < len(ALL_DIMENSIONS),
        normalized=normalized,
    )
