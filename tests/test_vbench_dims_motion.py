"""dynamic_degree (RAFT) and motion_smoothness (AMT-S) on stand-in weights: our scorer == vbench's evaluate per video.

The suite: a 1-s video (whole-video row) and a 5.5-s one (VBench-Long, 5.5-s clips: one clip), at least 128 px high and
wide: both networks build a 4-level correlation pyramid at 1/8 resolution, and below 128 px its coarsest level is one
row (or column) high, where RAFT's `bilinear_sampler` divides by `H - 1 = 0`: the flow is NaN for any weights (real
ones too). vbench hides it: dynamic_degree compares NaN > threshold (False), motion_smoothness casts NaN frames to
uint8. `test_flow_networks_are_finite_from_128_px` pins that down. RAFT runs 20 refinement iterations per frame pair
(~1.3 s of one core at 128x128), so dynamic_degree gets the suite at 4 fps (4 + 22 frames, 24 pairs per side).
Both dimensions run in one module-wide `run_parities` (vbench evaluates dynamic_degree while we score the other).
"""

import pytest
import torch

from tokentrim.scoring.standins import amt, raft
from tokentrim.scoring.weights import check_dimensions, required_files
from vbench_parity import Case, assert_equal_per_video, one_thread, parity_of, run_parities

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


SUITES = {"dynamic_degree": {"fps": 4, "height": 128, "width": 128, "short_seconds": 1.0},
          "motion_smoothness": {"fps": 8, "height": 128, "width": 160, "short_seconds": 1.0}}


def test_flow_networks_are_finite_from_128_px():
    """The stand-ins give finite flow / frames at 128 px; at 96 px the pyramid's 1-row level gives NaN (not the weights)."""
    from easydict import EasyDict
    from omegaconf import OmegaConf
    import vbench
    from vbench.third_party.amt.utils.build_utils import build_from_cfg
    from vbench.third_party.RAFT.core.raft import RAFT

    flow_net = RAFT(EasyDict({"small": False, "mixed_precision": False, "alternate_corr": False})).eval()
    flow_net.load_state_dict({key.removeprefix("module."): value for key, value in raft.build_state_dict(0).items()})
    config = OmegaConf.load(f"{vbench.__path__[0]}/third_party/amt/cfgs/AMT-S.yaml").network
    interp = build_from_cfg(config).eval()
    interp.load_state_dict(amt.build_checkpoint(0)["state_dict"])
    generator = torch.Generator().manual_seed(0)
    half = torch.tensor(0.5).view(1, 1, 1, 1)
    with torch.no_grad(), one_thread():
        for height, finite in ((128, True), (96, False)):
            frame0, frame1 = torch.rand(2, 1, 3, height, 128, generator=generator)  # each [1, 3, H, 128] in [0, 1]
            _, flow = flow_net(frame0 * 255, frame1 * 255, iters=2, test_mode=True)  # [1, 2, H, 128]
            middle = interp(frame0, frame1, half, scale_factor=1.0, eval=True)["imgt_pred"]  # [1, 3, H, 128]
            assert bool(torch.isfinite(flow).all()) is finite and bool(torch.isfinite(middle).all()) is finite, height
            if finite:
                assert float(flow.abs().max()) > 0 and float(middle.std()) > 0  # not a constant output


@pytest.fixture(scope="module")
def parities(vbench_standins, tmp_path_factory):
    roots = vbench_standins(DIMENSIONS)
    cases = [Case(dim, suite=SUITES[dim]) for dim in DIMENSIONS]
    return run_parities(tmp_path_factory.mktemp("parity_motion"), roots, cases)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_scorer_equals_vbench_evaluate_per_video(parities, dimension):
    parity = parity_of(parities, dimension)
    assert_equal_per_video(parity)
    print(f"{dimension}: ours {parity.ours_s:.1f} s, vbench {parity.direct_s:.1f} s")
