"""Official VBench normalisation and Quality / Semantic / Total; renormalisation over present dimensions."""

import math

import pytest

from tokentrim.scoring.totals import ALL_DIMENSIONS, compute_totals, normalize_dimension

PUBLISHED_VECTOR = {
    "subject_consistency": 0.95, "background_consistency": 0.96, "temporal_flickering": 0.97,
    "motion_smoothness": 0.98, "dynamic_degree": 0.5, "aesthetic_quality": 0.6, "imaging_quality": 0.65,
    "object_class": 0.85, "multiple_objects": 0.5, "human_action": 0.9, "color": 0.8, "spatial_relationship": 0.6,
    "scene": 0.4, "appearance_style": 0.22, "temporal_style": 0.24, "overall_consistency": 0.26,
}


def test_published_recipe_reproduced_on_fixed_vector():
    totals = compute_totals(PUBLISHED_VECTOR)
    assert round(totals.quality, 6) == 0.807125
    assert round(totals.semantic, 6) == 0.697775
    assert round(totals.total, 6) == 0.785255
    assert totals.dimensions_scored == 16 and not totals.partial and totals.partial_note == ""


def test_dynamic_degree_counts_half():
    assert normalize_dimension("dynamic_degree", 0.5) == pytest.approx(0.25)
    assert normalize_dimension("temporal_flickering", 1.0) == pytest.approx(1.0)


def test_partial_renormalises_instead_of_zero_filling():
    totals = compute_totals({"temporal_flickering": 0.97})
    expected = (0.97 - 0.6293) / (1.0 - 0.6293)
    assert totals.quality == pytest.approx(expected)
    assert totals.semantic is None
    assert totals.total == pytest.approx(expected)  # Total over scored dims only, not (4Q + 0)/5
    assert totals.partial and totals.label == "1/16: temporal_flickering" and totals.reason == ""


def test_partial_quality_weights_renormalise_with_dynamic_half_weight():
    raw = {"temporal_flickering": 0.97, "dynamic_degree": 0.5}
    totals = compute_totals(raw)
    flicker = (0.97 - 0.6293) / (1.0 - 0.6293)
    assert totals.quality == pytest.approx((flicker + 0.25) / 1.5)


def test_nan_dimension_is_not_scored_and_unknown_name_is_rejected():
    raw = dict(PUBLISHED_VECTOR, color=math.nan)
    assert compute_totals(raw).dimensions_scored == len(ALL_DIMENSIONS) - 1
    with pytest.raises(ValueError, match="temporal flickering"):
        compute_totals({"temporal flickering": 0.9})


def test_requested_dimension_without_a_score_makes_the_final_none_and_names_it():
    raw = {"temporal_flickering": 0.97, "aesthetic_quality": math.nan, "scene": 0.4}
    totals = compute_totals(raw)
    assert totals.total is None and totals.quality is None  # aesthetic_quality is a quality dimension
    assert totals.semantic == pytest.approx(0.4 / 0.8222)  # the semantic half has every requested dimension
    assert totals.missing == ("aesthetic_quality",) and "aesthetic_quality" in totals.reason
    assert totals.label == "3/16: temporal_flickering, aesthetic_quality, scene"
    # an absent requested dimension counts the same as NaN; scored but unrequested ones are not in the Final
    same = compute_totals({"temporal_flickering": 0.97, "scene": 0.4}, requested=list(raw))
    assert same.total is None and same.missing == ("aesthetic_quality",)
    only = compute_totals({"temporal_flickering": 0.97, "scene": 0.4}, requested=["temporal_flickering"])
    assert only.total == pytest.approx((0.97 - 0.6293) / (1.0 - 0.6293)) and only.label == "1/16: temporal_flickering"


def test_final_label_lists_included_or_left_out_dimensions():
    assert compute_totals(PUBLISHED_VECTOR).label == ""
    without = {k: v for k, v in PUBLISHED_VECTOR.items() if k not in ("color", "scene")}
    assert compute_totals(without).label == "14/16: without color, scene"
