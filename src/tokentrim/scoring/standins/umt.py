"""UMT-L/16 stand-in for human_action. **The scores it gives mean nothing.**

File (under the vbench cache dir): `umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth`. Format: a plain
`torch.save`d state dict (no `"model"`/`"module"` wrapper): vbench's `human_action.py` passes `torch.load(umt_path)`
straight to `model.load_state_dict(state_dict, strict=False)`, so a wrapped file would load nothing, silently.
Keys are those of vbench's own `third_party/umt/models/modeling_finetune.py::vit_large_patch16_224` built with the
arguments `human_action.py` passes (400 Kinetics classes, 16 frames, tubelet 1, fixed sinusoidal position table,
mean pooling, `init_scale=0.001`): `patch_embed.proj.*`, `pos_embed`, `blocks.<0-23>.{norm1,attn.{qkv.weight,
q_bias,v_bias,proj},norm2,mlp.fc1,mlp.fc2}.*`, `fc_norm.*`, `head.*`; fp32; `torch.manual_seed(seed)` and the
model's own init (truncated normal 0.02, head scaled by `init_scale`).

What the stand-in gives: with the head scaled by 0.001 every sigmoid(logit) is ~0.5, below vbench's 0.85 top-5
threshold, so every video scores False (0.0) whatever its label: the path (label parsing, decode, 16-frame UMT-L
forward, top-5) runs; the value is fixed.
"""

from __future__ import annotations

from pathlib import Path

from tokentrim.scoring.standins.files import save_torch, seeded
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("human_action",)
CHECKPOINT = ("umt_model", "l16_ptk710_ftk710_ftk400_f16_res224.pth")
# vbench/human_action.py::human_action, the create_model("vit_large_patch16_224", ...) arguments
MODEL_KWARGS = dict(
    num_classes=400, all_frames=16, tubelet_size=1, use_learnable_pos_emb=False, fc_drop_rate=0.,
    drop_rate=0., drop_path_rate=0.2, attn_drop_rate=0., drop_block_rate=None, use_checkpoint=False, checkpoint_num=16,
    use_mean_pooling=True, init_scale=0.001,
)


def build_model(seed: int):
    """vbench's UMT-L/16 with its default init under `seed`, made the way human_action.py makes it: timm's
    `create_model` (which drops the None-valued kwargs) on the name that importing third_party/umt registers."""
    from timm.models import create_model  # noqa: PLC0415
    from vbench.third_party.umt.models import modeling_finetune  # noqa: PLC0415,F401  (registers the UMT model)

    with seeded(seed):
        model = create_model("vit_large_patch16_224", pretrained=False, **MODEL_KWARGS)
    if type(model).__module__ != modeling_finetune.__name__:
        raise RuntimeError(f"timm resolved vit_large_patch16_224 to {type(model).__module__}, not vbench's UMT")
    return model


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    path = roots.cache_dir.joinpath(*CHECKPOINT)
    if not path.is_file():
        save_torch(build_model(seed).state_dict(), path)
    return [path]
