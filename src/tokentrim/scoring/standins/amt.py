"""AMT-S stand-in for motion_smoothness. **The scores it gives mean nothing** (seeded random weights).

File (under the vbench cache dir): `amt_model/amt-s.pth`.
Format: a `torch.save`d checkpoint dict whose `"state_dict"` holds the AMT-S network's state dict (keys as the
network names them: `feat_encoder.*`, `encoder.*`, `decoder{1..4}.*`, `comb_block.*`), the layout AMT's trainer
saves and vbench's `MotionSmoothness.load_model` reads (`load_state_dict(ckpt['state_dict'])`). The optimizer state
and epoch the trainer also stores are left out; vbench never reads them.
Weights: the network vbench builds from its own `third_party/amt/cfgs/AMT-S.yaml` (`build_from_cfg`), default init
under `torch.manual_seed(seed)`.
vbench 0.1.5 loads this file with `torch.load` without `weights_only=False`; our scorer and the tests set
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` for this dimension as for the published pickle (this stand-in itself holds only
tensors and would also load without it).
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins.files import save_torch, seeded
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("motion_smoothness",)


def build_checkpoint(seed: int) -> dict:
    """{"state_dict": AMT-S state dict} of a seeded AMT-S built from vbench's shipped config."""
    import vbench  # noqa: PLC0415  (only to find the shipped config)
    from omegaconf import OmegaConf  # noqa: PLC0415
    from vbench.third_party.amt.utils.build_utils import build_from_cfg  # noqa: PLC0415

    config = Path(vbench.__file__).parent / "third_party" / "amt" / "cfgs" / "AMT-S.yaml"
    with seeded(seed):
        model = build_from_cfg(OmegaConf.load(config).network)
    return {"state_dict": model.state_dict()}


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    path = roots.cache_dir / "amt_model" / "amt-s.pth"
    if not path.is_file():
        save_torch(build_checkpoint(seed), path)
    return [path]
