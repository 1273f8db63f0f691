"""CLIP ViT-B/32, CLIP ViT-L/14 and the LAION aesthetic head: stand-ins for background_consistency, appearance_style
(ViT-B/32) and aesthetic_quality (ViT-L/14 + head). **The scores they give mean nothing** (seeded random weights).

Files (under the vbench cache dir):
- `clip_model/ViT-B-32.pt`, `clip_model/ViT-L-14.pt`: TorchScript archives, as OpenAI publishes them, so that
  `clip.load(path)` takes the same branch as with the real files (`torch.jit.load`, then
  `build_model(model.state_dict())`). Each is `clip.model.CLIP` with OpenAI's hyper-parameters and its own
  `initialize_parameters()` under `torch.manual_seed(seed)`, plus the `input_resolution` / `context_length` /
  `vocab_size` entries the published state dicts carry (and `build_model` drops), traced with `torch.jit.trace` on a
  dummy image and text in fp32, then every floating tensor cast to fp16 (the published precision; ViT-L/14 ~0.9 GB).
  Only the archive's state dict is meant to be used: vbench calls `clip.load(..., jit=False)`; the traced graph
  itself was recorded in fp32 and is not meant to run with `jit=True` on a GPU.
- `aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth`: the LAION aesthetic predictor, a plain state dict of
  `nn.Linear(768, 1)` (`weight` [1, 768], `bias` [1], fp32), `torch.load`ed by vbench; PyTorch's default init under
  `torch.manual_seed(seed + 1)`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokentrim.scoring.standins.files import save_torch, seeded, write_atomic
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("background_consistency", "appearance_style", "aesthetic_quality")

# clip.model.CLIP(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
#                 vocab_size, transformer_width, transformer_heads, transformer_layers) of OpenAI's released models
CLIP_CONFIGS: dict[str, tuple[int, ...]] = {
    "ViT-B-32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-L-14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
}


def build_clip(name: str, seed: int) -> torch.nn.Module:
    """Seeded `clip.model.CLIP` of OpenAI's `name` config (fp32), with the published metadata buffers."""
    from clip.model import CLIP  # noqa: PLC0415  (imported only when writing)

    config = CLIP_CONFIGS[name]
    with seeded(seed):
        model = CLIP(*config).eval()
    for key, value in (("input_resolution", config[1]), ("context_length", config[5]), ("vocab_size", config[6])):
        if hasattr(model, key):
            delattr(model, key)  # CLIP keeps context_length / vocab_size as ints; the archive holds them as tensors
        model.register_buffer(key, torch.tensor(value))
    return model


def save_clip_archive(model: torch.nn.Module, path: Path) -> bool:
    """Trace `model.forward(image, text)` and save it as a TorchScript archive with fp16 floating tensors."""
    resolution = int(model.input_resolution)
    image = torch.zeros(1, 3, resolution, resolution)  # [B, 3, H, W]
    text = torch.zeros(1, int(model.context_length), dtype=torch.long)  # [B, 77]
    with torch.no_grad():
        traced = torch.jit.trace(model, (image, text), check_trace=False)
    traced = traced.half()
    return write_atomic(path, lambda tmp: torch.jit.save(traced, str(tmp)))


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    written = []
    for name in CLIP_CONFIGS:
        path = roots.cache_dir / "clip_model" / f"{name}.pt"
        if not path.is_file():
            save_clip_archive(build_clip(name, seed), path)
        written.append(path)
    head = roots.cache_dir / "aesthetic_model" / "emb_reader" / "sa_0_4_vit_l_14_linear.pth"
    if not head.is_file():
        with seeded(seed + 1):
            state = torch.nn.Linear(768, 1).state_dict()
        save_torch(state, head)
    return [*written, head]
