"""Per-frame image networks on stand-in weights: subject_consistency (DINO ViT-B/16), background_consistency and
appearance_style (CLIP ViT-B/32), aesthetic_quality (CLIP ViT-L/14 + LAION head), imaging_quality (MUSIQ).

For each: `score_videos` on a 1-s video (whole-video row) and a 5.5-s one (VBench-Long with a 5.5-s clip length: one
clip) gives finite scores whose `raw_score` equals vbench 0.1.5's own `VBench(...).evaluate` on the same files, exactly
(one module-wide run: vbench evaluates a dimension while our scorer runs the next).
appearance_style reads `auxiliary_info`, so it runs with two prompts of VBench_full_info.json in vbench_standard mode.
The frame rate of each suite is set by the network's CPU cost (frames per side = 6.5 x fps): ViT-L/14 gets 2 fps,
DINO at 224x373 and MUSIQ 4 fps, CLIP ViT-B/32 the standard 8 fps.
"""

import importlib

import pytest

from tokentrim.scoring.standins import family_of
from tokentrim.scoring.weights import required_files
from vbench_parity import (Case, assert_equal_per_video, assert_ready_and_named_when_missing, parity_of,
                           run_parities)

DIMENSIONS = ("subject_consistency", "background_consistency", "appearance_style", "aesthetic_quality",
              "imaging_quality")
SUITES = {"subject_consistency": {"fps": 4}, "background_consistency": {}, "appearance_style": {},
          "aesthetic_quality": {"fps": 2}, "imaging_quality": {"fps": 4}}
SUITES = {dim: suite | {"short_seconds": 1.0} for dim, suite in SUITES.items()}
STYLE_PROMPTS = ("A beautiful coastal beach in spring, waves lapping on sand, Van Gogh style",
                 "A beautiful coastal beach in spring, waves lapping on sand, oil painting")


def test_check_says_ready_on_standins_and_names_the_files_when_empty(vbench_standins, tmp_path):
    roots = vbench_standins(DIMENSIONS)
    assert_ready_and_named_when_missing(DIMENSIONS, roots, tmp_path)


@pytest.mark.parametrize("family", ["dino", "clip_models", "musiq", "raft", "amt"])
def test_family_writes_exactly_the_files_its_dimensions_require(vbench_standins, family):
    module = importlib.import_module(f"tokentrim.scoring.standins.{family}")
    roots = vbench_standins(module.DIMENSIONS)
    required = {req.path for dim in module.DIMENSIONS for req in required_files(dim, roots)}
    assert set(module.write(roots, seed=0)) == required  # files already complete: kept, not rewritten
    assert all(family_of(dim) == family for dim in module.DIMENSIONS)


@pytest.fixture(scope="module")
def parities(vbench_standins, tmp_path_factory):
    roots = vbench_standins(DIMENSIONS)
    cases = [Case(dim, suite=SUITES[dim], **({"prompts": STYLE_PROMPTS, "mode": "vbench_standard"}
                                              if dim == "appearance_style" else {})) for dim in DIMENSIONS]
    return run_parities(tmp_path_factory.mktemp("parity_image"), roots, cases)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_scorer_equals_vbench_evaluate_per_video(parities, dimension):
    parity = parity_of(parities, dimension)
    assert_equal_per_video(parity)
    values = sorted({row["raw_score"] for row in parity.ours.values()})
    assert len(values) > 1, values  # the random networks still tell the files apart
    print(f"{dimension}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s, raw {values}")
