"""MUSIQ stand-in for imaging_quality. **The scores it gives mean nothing** (seeded random weights).

File (under the vbench cache dir): `pyiqa_model/musiq_spaq_ckpt-358bb6af.pth`.
Format: a plain `torch.save`d state dict of pyiqa's `MUSIQ` as vbench builds it (`MUSIQ(pretrained_model_path=...)`:
the SPAQ head `head.weight` [1, 384] / `head.bias` [1], no softmax), keys `conv_root.weight`, `gn_root.*`, `block1.*`,
`embedding.*`, `transformer_encoder.*`, `head.*`, read by pyiqa's `load_pretrained_network(..., strict=True)`.
Weights: pyiqa 0.1.10's own `MUSIQ(pretrained=False)` (same architecture, num_class 1) with its default init under
`torch.manual_seed(seed)`.
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins.files import save_torch, seeded
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("imaging_quality",)


def build_state_dict(seed: int) -> dict:
    from pyiqa.archs.musiq_arch import MUSIQ  # noqa: PLC0415  (imported only when writing)

    with seeded(seed):
        model = MUSIQ(pretrained=False)  # num_class 1: the head vbench's MUSIQ(pretrained_model_path=...) builds
    return model.state_dict()


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    path = roots.cache_dir / "pyiqa_model" / "musiq_spaq_ckpt-358bb6af.pth"
    if not path.is_file():
        save_torch(build_state_dict(seed), path)
    return [path]
