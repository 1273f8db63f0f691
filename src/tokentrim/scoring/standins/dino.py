"""DINO ViT-B/16 stand-in for subject_consistency. **The scores it gives mean nothing** (seeded random weights).

Files:
- `<vbench cache>/dino_model/facebookresearch_dino_main/hubconf.py`: our own hub entry (`dino_hubconf.py`, copied
  verbatim), defining `dino_vitb16` with the DINO ViT-B/16 architecture. vbench 0.1.5 loads it with
  `torch.hub.load(..., 'dino_vitb16', source='local')`; a user with the real weights clones facebookresearch/dino there.
- `<vbench cache>/dino_model/dino_vitbase16_pretrain.pth` (vbench checks it exists) and the same bytes at
  `<TORCH_HOME>/hub/checkpoints/dino_vitbase16_pretrain.pth` (where the hub entry actually reads it, through
  `torch.hub.load_state_dict_from_url`).
Format: a plain `torch.save`d state dict, fp32, the published key layout (`cls_token`, `pos_embed` [1, 197, 768],
`patch_embed.proj.*`, `blocks.<0..11>.*`, `norm.*`; no head), loaded with `strict=True`.
Weights: the hub module's own init (DINO's: truncated normal std 0.02 for linear layers and embeddings, LayerNorm
1/0, PyTorch's default for the patch conv) under `torch.manual_seed(seed)`.
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins import dino_hubconf
from tokentrim.scoring.standins.files import copy_file, save_torch, seeded, write_text
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("subject_consistency",)
CHECKPOINT_NAME = "dino_vitbase16_pretrain.pth"


def build_state_dict(seed: int) -> dict:
    with seeded(seed):
        model = dino_hubconf.dino_vitb16(pretrained=False)
    return model.state_dict()


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    hub_dir = roots.cache_dir / "dino_model" / "facebookresearch_dino_main"
    hubconf = hub_dir / "hubconf.py"
    cached = roots.cache_dir / "dino_model" / CHECKPOINT_NAME
    torch_copy = roots.torch_home / "hub" / "checkpoints" / CHECKPOINT_NAME
    write_text(Path(dino_hubconf.__file__).read_text(encoding="utf-8"), hubconf)
    if not cached.is_file():
        save_torch(build_state_dict(seed), cached)
    copy_file(cached, torch_copy)
    return [hubconf, cached, torch_copy]
