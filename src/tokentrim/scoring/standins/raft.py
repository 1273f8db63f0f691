"""RAFT stand-in for dynamic_degree. **The scores it gives mean nothing** (seeded random weights).

File (under the vbench cache dir): `raft_model/models/raft-things.pth`, as unzipped from the published `models.zip`.
Format: a plain `torch.save`d state dict of the full RAFT model (`small=False`) as saved from `nn.DataParallel`: every
key carries the `module.` prefix (`module.fnet.conv1.weight`, `module.cnet.norm1.running_mean`,
`module.update_block.mask.2.bias`, ...), which vbench's `DynamicDegree.load_model` strips before `load_state_dict`.
Weights: vbench's own `vbench.third_party.RAFT.core.raft.RAFT` with its default init under `torch.manual_seed(seed)`;
BatchNorm buffers (context encoder) keep their defaults (mean 0, var 1), as a fresh model has them.
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins.files import save_torch, seeded
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("dynamic_degree",)


def build_state_dict(seed: int) -> dict:
    """{`module.<key>`: tensor} of a seeded RAFT (the args vbench passes in `compute_dynamic_degree`)."""
    from easydict import EasyDict  # noqa: PLC0415  (vbench dependency; imported only when writing)
    from vbench.third_party.RAFT.core.raft import RAFT  # noqa: PLC0415

    with seeded(seed):
        model = RAFT(EasyDict({"small": False, "mixed_precision": False, "alternate_corr": False}))
    return {f"module.{key}": value for key, value in model.state_dict().items()}


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    path = roots.cache_dir / "raft_model" / "models" / "raft-things.pth"
    if not path.is_file():
        save_torch(build_state_dict(seed), path)
    return [path]
