"""What both official loops need inside the side-by-side bench (`official_side_by_side.py` for Self Forcing,
`official_rf.py` for Rolling Forcing): package stubs so their modules import without the T5 / training stack, and
their `CausalInferencePipeline` (one name and signature in both repositories) built around their `CausalWanModel` at
our model's config holding OUR state dict (strict), with fixed prompt embeddings for the text encoder and an identity
for the VAE. Imported from local checkouts only; nothing of theirs is vendored.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from pathlib import Path
from unittest import mock

import torch


def stub_official_packages(repo: Path, packages: tuple[str, ...]) -> None:
    """Make `repo`'s top-level `packages` importable without their `__init__`s (which import the whole
    T2V/I2V/training stack), block flash-attn, and stub the T5 encoder and tokenizer modules, which inference here
    never uses (t5.py calls torch.cuda.current_device() at import; tokenizers.py imports transformers/ftfy/regex)."""
    sys.path.insert(0, str(repo))
    # attention.py probes flash_attn / flash_attn_interface catching only ModuleNotFoundError; a None entry makes the
    # import raise exactly that (the GPU image's import blocker would raise a plain ImportError). Callers route to SDPA.
    for name in ("flash_attn", "flash_attn_interface"):
        sys.modules[name] = None
    for name in packages:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(repo / name.replace(".", "/"))]
        sys.modules[name] = pkg
    t5 = types.ModuleType("wan.modules.t5")
    t5.umt5_xxl = None
    tok = types.ModuleType("wan.modules.tokenizers")
    tok.HuggingfaceTokenizer = None
    sys.modules.update({"wan.modules.t5": t5, "wan.modules.tokenizers": tok})


class FixedText:
    """The official text encoder's interface, returning the same prompt embeddings for every prompt."""

    def __init__(self, prompt_embeds: torch.Tensor):
        self.prompt_embeds = prompt_embeds  # [1, text_len, text_dim]

    def __call__(self, text_prompts):
        return {"prompt_embeds": self.prompt_embeds}


class NoDecode:
    """The official VAE wrapper's interface as an identity: the bench times the DiT loop."""

    def decode_to_pixel(self, latent, use_cache=False):
        return latent


def official_pipeline(mods, ours, *, step_list: list[int], block_frames: int, timestep_shift: float,
                      prompt_embeds: torch.Tensor, device, dtype):
    """The official `CausalInferencePipeline` around its `CausalWanModel` built at `ours.config` with our weights
    (strict load); returns (pipeline, model, wrapper). `mods` holds the imported `causal`, `wrapper`, `pipeline`
    modules. The caller patches what the official code hard-codes for the 1.3B geometry."""
    cfg = ours.config
    kwargs = dict(model_type="t2v", patch_size=tuple(cfg.patch_size), text_len=cfg.text_len, in_dim=cfg.in_dim,
                  dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim,
                  num_heads=cfg.num_heads, num_layers=cfg.num_layers, eps=cfg.eps)
    with torch.device(device):
        model = mods.causal.CausalWanModel(**kwargs)
    model.load_state_dict(ours.state_dict(), strict=True)
    model = model.to(dtype).eval().requires_grad_(False)
    with mock.patch.object(mods.wrapper.CausalWanModel, "from_pretrained", lambda *a, **k: model):
        wrapper = mods.wrapper.WanDiffusionWrapper(timestep_shift=timestep_shift, is_causal=True)
    args = types.SimpleNamespace(denoising_step_list=step_list, warp_denoising_step=True,
                                 num_frame_per_block=block_frames, independent_first_frame=False, context_noise=0)
    with contextlib.redirect_stdout(io.StringIO()):
        pipe = mods.pipeline.CausalInferencePipeline(args, device=device, generator=wrapper,
                                                     text_encoder=FixedText(prompt_embeds), vae=NoDecode())
    return pipe, model, wrapper
