"""The official Rolling Forcing loop (TencentARC/RollingForcing) inside the side-by-side bench: import, build, run.

Imported from a local checkout (`--official-rf PATH`, never vendored). Its `wan.modules.causal_model.CausalWanModel`
is built at our model's config and given OUR state dict (same key names; strict load); its
`pipeline/rolling_forcing_inference.py::CausalInferencePipeline.inference_rolling_forcing` runs the rolling windows
with the text encoder replaced by fixed prompt embeddings and the VAE by an identity. Its attention calls
(`flash_attention` / `attention`) are routed to torch SDPA in the inputs' dtype (`official_side_by_side.official_sdpa`).

The official repositories of Self Forcing and Rolling Forcing use the same top-level package names (`wan`, `utils`,
`pipeline`): `import_official_rf` drops whatever `sys.modules` holds under those names before importing, so both can
be loaded into one process one after the other (module objects already imported keep their own globals).

Official constants hard-coded for Wan2.1-1.3B at 832x480 (patched at the tiny geometry only): the pipeline's
`num_transformer_blocks = 30`, `frame_seq_length = 1560`, its KV cache of 1560 * 24 tokens x 12 heads x 128, and each
self-attention's `frame_length = 1560`, `max_attention_size = 21 * 1560`, `block_length = 3 * 1560`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from pathlib import Path

import torch

from official_common import official_pipeline, stub_official_packages

from tokentrim.pipelines.rolling_forcing import RollingForcingConfig, window_schedule

STEP_LIST = [1000, 800, 600, 400, 200]  # official configs/rolling_forcing_dmd.yaml
BLOCK_FRAMES = 3
CACHE_FRAMES = 24  # official _initialize_kv_cache: 1560 * 24 tokens
MAX_ATTENTION_FRAMES = 21  # official CausalWanSelfAttention.max_attention_size = 21 * 1560
OFFICIAL_PACKAGES = ("wan", "utils", "pipeline", "demo_utils")


def ours_config() -> RollingForcingConfig:
    """Our sampler at the official release's settings (equal to `conf/backbone/rolling_forcing.yaml: sampler`)."""
    return RollingForcingConfig(denoising_steps=tuple(STEP_LIST), warp_denoising_step=True, shift=5.0,
                                block_frames=BLOCK_FRAMES, window_blocks=len(STEP_LIST), cache_frames=CACHE_FRAMES,
                                max_attention_frames=MAX_ATTENTION_FRAMES, context_noise=0.0)


def import_official_rf(repo: Path, sdpa) -> types.SimpleNamespace:
    """Import the official RF modules from `repo` (stubs for the unused T5 / tokenizer); attention routed to `sdpa`."""
    repo = repo.resolve()
    if not (repo / "pipeline/rolling_forcing_inference.py").is_file():
        raise FileNotFoundError(f"--official-rf: {repo}/pipeline/rolling_forcing_inference.py does not exist")
    for name in [m for m in sys.modules if m.split(".")[0] in OFFICIAL_PACKAGES]:
        del sys.modules[name]  # a Self Forcing checkout imported earlier uses the same package names
    stub_official_packages(repo, ("wan", "wan.modules", "pipeline", "utils"))
    try:
        import pipeline.rolling_forcing_inference as pipeline_mod
        import utils.wan_wrapper as wrapper_mod
        import wan.modules.attention as attention_mod
        import wan.modules.causal_model as causal_mod
        import wan.modules.model as model_mod
    finally:
        sys.path.remove(str(repo))
    attention_mod.attention = attention_mod.flash_attention = sdpa
    model_mod.flash_attention = sdpa
    causal_mod.attention = sdpa
    return types.SimpleNamespace(causal=causal_mod, wrapper=wrapper_mod, pipeline=pipeline_mod, repo=repo)


def build_official_rf(mods, ours, *, tokens_per_frame: int, full_geometry: bool, prompt_embeds: torch.Tensor,
                      device, dtype):
    """Official RF wrapper + pipeline holding our model's weights (strict load); returns (pipeline, wrapper)."""
    cfg = ours.config
    pipe, model, wrapper = official_pipeline(mods, ours, step_list=STEP_LIST, block_frames=BLOCK_FRAMES,
                                             timestep_shift=5.0, prompt_embeds=prompt_embeds, device=device,
                                             dtype=dtype)
    if not full_geometry:  # the official code hard-codes the 1.3B geometry at 832x480
        pipe.num_transformer_blocks = cfg.num_layers
        pipe.frame_seq_length = tokens_per_frame
        for block in model.blocks:
            attn = block.self_attn
            attn.frame_length = tokens_per_frame
            attn.max_attention_size = MAX_ATTENTION_FRAMES * tokens_per_frame
            attn.block_length = BLOCK_FRAMES * tokens_per_frame
        heads, head_dim = cfg.num_heads, cfg.dim // cfg.num_heads

        def init_kv(self, batch_size, dtype, device):
            shape = [batch_size, CACHE_FRAMES * tokens_per_frame, heads, head_dim]
            self.kv_cache_clean = [{"k": torch.zeros(shape, dtype=dtype, device=device),
                                    "v": torch.zeros(shape, dtype=dtype, device=device),
                                    "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
                                    "local_end_index": torch.tensor([0], dtype=torch.long, device=device)}
                                   for _ in range(cfg.num_layers)]

        pipe._initialize_kv_cache = types.MethodType(init_kv, pipe)
    return pipe, wrapper


def run_official_rf(pipe, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """One video through `inference_rolling_forcing`; fresh caches allocated inside the video, as ours are."""
    pipe.kv_cache_clean = None
    pipe.crossattn_cache = None
    torch.manual_seed(seed)  # its re-noising draws torch.randn_like from the default generator
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every window
        _video, latents = pipe.inference_rolling_forcing(noise, ["side-by-side"], return_latents=True)
    return latents


def official_cache_gib(pipe) -> float:
    """GiB of the caches the official RF pipeline keeps between videos (`kv_cache_clean`, `crossattn_cache`)."""
    total = 0
    for name in ("kv_cache_clean", "crossattn_cache"):
        for entry in getattr(pipe, name, None) or []:
            total += sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, torch.Tensor))
    return total / 2**30


def official_renoise_source(config: RollingForcingConfig, noise: torch.Tensor):
    """Our pipeline's `noise_source` drawing what the official loop draws: for every re-noised block, in window then
    block order, one `randn_like` of the WHOLE window ([B*F_w, C, H, W], default generator) of which the block's
    slice is used. Same generator, shapes and order, so seeded videos of both sides get the same noise."""
    batch, num_frames, channels, height, width = noise.shape
    fb, k = config.block_frames, config.window_blocks
    draws = iter([(len(w.levels) * fb, j) for w in window_schedule(num_frames // fb, k)
                  for j, level in enumerate(w.levels) if level < k - 1])

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        window_frames, j = next(draws)
        eps = torch.randn((batch * window_frames, channels, height, width), device=noise.device, dtype=noise.dtype)
        block = eps.unflatten(0, (batch, window_frames))[:, j * fb:(j + 1) * fb]  # [B, F, C, H, W]
        if tuple(block.shape) != tuple(shape):
            raise RuntimeError(f"re-noise draw of shape {tuple(shape)}, official order expects {tuple(block.shape)}")
        return block

    return draw
