"""dynamic_degree (RAFT) and motion_smoothness (AMT-S) on stand-in weights: our scorer == vbench's evaluate per video.

The suite: a 2-s video (whole-video row) and a 5.5-s one (VBench-Long: three 2-s clips). RAFT runs 20 refinement
iterations per frame pair (~2 s of one CPU core at 96x160), so dynamic_degree gets the suite at 4 fps and 64x96
(8-frame clips, 28 pairs per side); AMT-S gets the standard 8 fps, 96x160 suite.
"""

import pytest

from tokentrim.scoring.weights import check_dimensions, required_files
from vbench_parity import assert_equal_per_video, score_and_direct

DIMENSIONS = ("dynamic_degree", "motion_smoothness")


def test_check_says_ready_on_standins_and_names_the_file_when_empty(vbench_standins, tmp_path):
    roots = vbench_standins(DIMENSIONS)
    status = check_dimensions(DIMENSIONS, cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home)
    assert all(status[dim].is_ready for dim in DIMENSIONS), [item.one_line() for item in status.values()]
    empty = check_dimensions(DIMENSIONS, cache_dir=tmp_path / "c", torch_home=tmp_path / "t", hf_home=tmp_path / "h")
    for dim in DIMENSIONS:
        assert not empty[dim].is_ready
        (req,) = required_files(dim, roots.__class__(tmp_path / "c", tmp_path / "t", tmp_path / "h"))
        assert str(req.path) in empty[dim].one_line()


SUITES = {"dynamic_degree": {"fps": 4, "height": 64, "width": 96}, "motion_smoothness": {}}


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_scorer_equals_vbench_evaluate_per_video(vbench_standins, tmp_path, dimension):
    roots = vbench_standins([dimension])
    parity = score_and_direct(tmp_path, dimension, roots, suite=SUITES[dimension])
    assert_equal_per_video(parity)
    print(f"{dimension}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s")
