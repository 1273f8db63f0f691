"""Parity with the official Rolling Forcing code (TencentARC/RollingForcing @ a1477d0) on random weights, fp32.

Fixtures in tests/fixtures/rolling_forcing/ were produced by running the official code at a tiny config (dim 64,
2 heads, 2 layers, 8x8 latents = 16 tokens per frame, cache 24 frames, attention 21 frames, block 3 frames):
  * model_trace: a sequence of official denoising / cache-refresh calls on one cache (includes a sink re-rope and a
    tail window), with every call's flow prediction and layer 0's cache after the last call;
  * rollout: `inference_rolling_forcing` on 10 blocks (14 windows, eviction from window 12 on), with the official
    re-noising draws stored in call order.
Relative error = max |ours - official| / max |official|.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokentrim.caches import DENOISE, REFRESH, RollingKVCache
from tokentrim.models.wan_causal import CausalWanModel, apply_rope, rope_angles
from tokentrim.pipelines.rolling_forcing import RollingForcingConfig, RollingForcingPipeline

FIXTURES = Path(__file__).parent / "fixtures" / "rolling_forcing"
TOLERANCE = 1e-4
UPSTREAM_ONLY_KEYS = ("model_type", "qk_norm", "cross_attn_norm")  # fixed by our class (see WanConfig)


def relative_error(ours: torch.Tensor, official: torch.Tensor) -> float:
    return float((ours - official).abs().max() / official.abs().max())


def load_scenario(name: str):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    tensors = load_file(FIXTURES / meta["tensors_file"])
    model_kwargs = {k: v for k, v in meta["model_config"].items() if k not in UPSTREAM_ONLY_KEYS}
    model = CausalWanModel(**model_kwargs)
    model.load_state_dict(load_file(FIXTURES / meta["weights_file"]), strict=True)  # official key names
    return meta, tensors, model.eval()


def test_model_calls_and_cache_match_the_official_trace():
    meta, tensors, model = load_scenario("model_trace")
    tokens_per_frame = meta["tokens_per_frame"]
    context_kv = model.encode_context(tensors["prompt_embeds"])
    cache = RollingKVCache(
        num_layers=model.config.num_layers,
        num_heads=model.config.num_heads,
        head_dim=model.head_dim,
        tokens_per_frame=tokens_per_frame,
        block_frames=meta["frames_per_block"],
        cache_frames=meta["kv_cache_tokens"] // tokens_per_frame,
        max_attention_frames=meta["max_attention_tokens"] // tokens_per_frame,
    )
    with torch.no_grad():
        for i, call in enumerate(meta["calls"]):
            cache.begin_call(call["start_frame"], call["num_frames"], mode=REFRESH if call["updating_cache"] else DENOISE)
            flow = model(tensors[f"call{i}.x"], tensors[f"call{i}.timestep"], context_kv, start_frame=call["start_frame"], cache=cache)
            assert relative_error(flow, tensors[f"call{i}.flow_pred"]) <= TOLERANCE, f"call {i}"
            if call["updating_cache"]:
                cache.commit()

    official_k = tensors["cache.layer0.k"].transpose(1, 2)  # [B, tokens, n, d] -> [B, n, tokens, d]
    official_v = tensors["cache.layer0.v"].transpose(1, 2)
    block = meta["block_tokens"]
    committed = cache.length
    # Later slots: roped at absolute positions in both.
    assert relative_error(cache.k[0, :, :, block:committed], official_k[:, :, block:committed]) <= TOLERANCE
    assert relative_error(cache.v[0, :, :, :committed], official_v[:, :, :committed]) <= TOLERANCE
    # Sink: upstream stores it un-roped; we store it roped at its true frames 0..2.
    side = int(tokens_per_frame**0.5)
    angles = rope_angles(model.head_dim, torch.arange(meta["frames_per_block"]), side, side)  # [block, d/2]
    official_sink = apply_rope(official_k[:, :, :block].double(), angles.cos(), angles.sin()).float()
    assert relative_error(cache.k[0, :, :, :block], official_sink) <= TOLERANCE
    # The last call (a tail window, never refreshed) wrote its noisy first block into the next slot upstream, which
    # only a refresh would have overwritten and read; ours skips that write: nothing past the committed entries.
    assert cache.staged == 0 and bool((cache.entry_frame[committed:] == -1).all())


def _official_config(meta: dict) -> RollingForcingConfig:
    """Our sampler at the settings the official rollout scenario ran with."""
    return RollingForcingConfig(
        denoising_steps=tuple(meta["denoising_step_list"]),
        warp_denoising_step=meta["warp_denoising_step"],
        shift=meta["timestep_shift"],
        block_frames=meta["frames_per_block"],
        cache_frames=meta["kv_cache_tokens"] // meta["tokens_per_frame"],
        max_attention_frames=meta["max_attention_tokens"] // meta["tokens_per_frame"],
        context_noise=float(meta["context_noise"]),
    )


def test_rollout_with_eviction_matches_the_official_latents():
    meta, tensors, model = load_scenario("rollout")
    config = _official_config(meta)
    pipe = RollingForcingPipeline(model, config)
    assert pipe.timesteps == pytest.approx(meta["warped_timesteps"], rel=1e-7)
    draws = iter(tensors[call["key"]] for call in meta["renoise_calls"])  # official order: window, then block

    def replay(shape: tuple[int, ...]) -> torch.Tensor:
        eps = next(draws)
        assert tuple(eps.shape) == shape
        return eps

    latents = pipe(tensors["noise"], model.encode_context(tensors["prompt_embeds"]), noise_source=replay)
    assert next(draws, None) is None  # every official draw consumed, no extra draw
    # upstream's refreshes of block 0 in the ramp-up windows and after the last window are never read: we skip them
    assert pipe.num_model_calls == len(meta["generator_calls"]) - config.window_blocks
    assert relative_error(latents, tensors["output"]) <= TOLERANCE


def _rollout(model: CausalWanModel, meta: dict, tensors: dict) -> tuple[torch.Tensor, RollingForcingPipeline]:
    """The official rollout scenario through our pipeline with the official re-noising draws replayed."""
    config = _official_config(meta)
    pipe = RollingForcingPipeline(model, config)
    draws = iter(tensors[call["key"]] for call in meta["renoise_calls"])
    latents = pipe(tensors["noise"], model.encode_context(tensors["prompt_embeds"]), noise_source=lambda _shape: next(draws))
    return latents, pipe


@functools.lru_cache(maxsize=1)
def eager_rollout() -> torch.Tensor:
    """Our eager latents of the rollout scenario (computed once for the lever tests)."""
    meta, tensors, model = load_scenario("rollout")
    return _rollout(model, meta, tensors)[0]


LEVERS = {  # name -> (WanSpeedConfig kwargs, exact on CPU: same bits as the eager rollout)
    "token_major+gelu_epilogue": (dict(token_major=True, gelu_epilogue=True), True),
    "compiled_regions": (dict(compile_blocks=True, compile_backend="aot_eager", compile_fullgraph=True), True),
    "token_major+kv_splits2": (dict(token_major=True, attention_kv_splits=2), False),
}


@pytest.mark.parametrize("lever", list(LEVERS))
def test_speed_levers_keep_the_official_rollout(lever):
    """Each speed lever on Rolling Forcing's rolling windows (1..5 blocks, staggered levels, refresh calls, eviction):
    still the official latents; the layout / epilogue / compiled regions give our eager bits exactly; split-KV ran
    split (CPU flash kernel, merged by log-sum-exp: rounding-level). Compiled regions: one graph per window size."""
    from torch._dynamo.utils import counters

    from tokentrim.models.wan_causal import WanSpeedConfig

    kwargs, exact = LEVERS[lever]
    meta, tensors, model = load_scenario("rollout")
    eager = eager_rollout()
    torch._dynamo.reset()
    graphs_before = counters["stats"]["unique_graphs"]
    model.set_speed(WanSpeedConfig(**kwargs))
    latents, pipe = _rollout(model, meta, tensors)
    assert relative_error(latents, tensors["output"]) <= TOLERANCE
    if exact:
        assert torch.equal(latents, eager)
    else:
        assert relative_error(latents, eager) <= 1e-5
    attention = [block.self_attn for block in model.blocks]
    if model.speed.attention_kv_splits > 1:
        assert sum(a.split_kv_calls for a in attention) > 0 and all(a.kv_splits == 2 for a in attention)
    if model.speed.compile_blocks:
        window_sizes = pipe.config.window_blocks  # windows of 1..5 blocks; a refresh is one block
        assert counters["stats"]["unique_graphs"] - graphs_before == 2 * window_sizes  # 2 regions, shared by layers
