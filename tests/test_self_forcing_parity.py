"""Parity with the official Self Forcing code (guandeh17/Self-Forcing @ 33593df3e81fa3ec10239271dd2c100facac6de1,
the `official_commit` recorded in every fixture JSON) on random weights, fp32.

Fixtures in tests/fixtures/self_forcing/ were produced by running the official `WanDiffusionWrapper` /
`CausalInferencePipeline` at a tiny config (dim 64, 2 heads, 2 layers, 8x8 latents = 16 tokens per frame, block 3
frames, 4 warped steps); see tests/fixtures/README.md for the recipe and the official cache rule:
  * model_forward: two cached model calls (batch 2, per-sample per-frame timesteps), flow, x0 and the final K/V;
  * rollout_global / rollout_local6_sink3 / rollout_local9_sink3: whole rollouts with the official re-noise draws
    stored in call order (global attention; a 6-frame window with a 3-frame sink; a 9-frame window with a sink).
Relative error = max |ours - official| / max |official|.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.pipelines.sampling import sigma_table
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline

FIXTURES = Path(__file__).parent / "fixtures" / "self_forcing"
TOLERANCE = 1e-4
OFFICIAL_COMMIT = "33593df3e81fa3ec10239271dd2c100facac6de1"
UPSTREAM_ONLY_KEYS = ("model_type", "qk_norm", "cross_attn_norm")  # fixed by our class (see WanConfig)


def relative_error(ours: torch.Tensor, official: torch.Tensor) -> float:
    return float((ours - official).abs().max() / official.abs().max())


def load_scenario(name: str):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    assert meta["official_commit"] == OFFICIAL_COMMIT
    tensors = load_file(FIXTURES / meta["tensors_file"])
    model_kwargs = {k: v for k, v in meta["model_config"].items() if k not in UPSTREAM_ONLY_KEYS}
    model = CausalWanModel(**model_kwargs)
    model.load_state_dict(load_file(FIXTURES / meta["weights_file"]), strict=True)  # official key names, no prefix
    return meta, tensors, model.eval()


def nearest_table_sigma(timesteps: torch.Tensor, shift: float) -> torch.Tensor:
    """The official wrapper's sigma: the nearest of the 1000 table entries (t=0 -> sigma[999], not 0). [B, F] -> [B, F]."""
    sigmas, table = sigma_table(shift)
    index = (table[None, None, :] - timesteps[..., None]).abs().argmin(dim=-1)  # [B, F, 1000] -> [B, F]
    return sigmas[index]


def test_model_forward_with_cache_matches_the_official_calls_and_kv():
    meta, tensors, model = load_scenario("model_forward")
    batch_size, tokens_per_frame = meta["batch_size"], meta["tokens_per_frame"]
    _, height, width = meta["latent_shape_CHW"]
    context_kv = model.encode_context(tensors["prompt_embeds"])
    cache = model.new_cache(
        height=height, width=width, max_frames=meta["kv_cache_tokens"] // tokens_per_frame,
        block_frames=meta["frames_per_block"], batch_size=batch_size,
    )
    with torch.no_grad():
        for i, call in enumerate(meta["calls"]):
            x, timesteps = tensors[f"call{i}.x"], tensors[f"call{i}.timestep"]
            cache.begin_block(call["start_frame"], x.shape[1] * tokens_per_frame)
            flow = model(x, timesteps, context_kv, start_frame=call["start_frame"], cache=cache)
            cache.commit()
            sigma = nearest_table_sigma(timesteps, meta["timestep_shift"]).double()[..., None, None, None]  # [B, F, 1, 1, 1]
            x0 = (x.double() - sigma * flow.double()).float()  # the wrapper's float64 flow -> x0
            assert relative_error(flow, tensors[f"call{i}.flow_pred"]) <= TOLERANCE, f"call {i} flow"
            assert relative_error(x0, tensors[f"call{i}.pred_x0"]) <= TOLERANCE, f"call {i} x0"
            assert cache.length == call["cache_indices_after"]["local_end_index"]

    for layer in range(model.config.num_layers):
        for name, ours in (("k", cache.k), ("v", cache.v)):
            official = tensors[f"cache.layer{layer}.{name}"].transpose(1, 2)  # [B, tokens, n, d] -> [B, n, tokens, d]
            assert relative_error(ours[layer, :, :, : cache.length], official) <= TOLERANCE, f"layer {layer} {name}"


@pytest.mark.parametrize("scenario", ["rollout_global", "rollout_local6_sink3", "rollout_local9_sink3"])
def test_rollout_matches_the_official_latents(scenario: str):
    meta, tensors, model = load_scenario(scenario)
    tokens_per_frame = meta["tokens_per_frame"]
    # Mapping of the official cache arguments onto ours: `local_attn_size` (frames, -1 = global) is the number of
    # frames attended at most, the block included -> max_frames; with -1 the official cache holds kv_cache_tokens
    # (21 frames), never full here. `sink_size` (frames) -> sink_frames. The official roll (move the tokens after the
    # sink left, write the new block at the end) keeps exactly the sink + the newest frames, as our frame-granular
    # eviction does; the official last-block cache refresh is skipped by our pipeline (its K/V are never read).
    local = meta["local_attn_size"]
    max_frames = meta["kv_cache_tokens"] // tokens_per_frame if local == -1 else local
    config = SelfForcingConfig(
        denoising_steps=tuple(meta["denoising_step_list"]),
        warp_denoising_step=meta["warp_denoising_step"],
        shift=meta["timestep_shift"],
        block_frames=meta["frames_per_block"],
        context_noise=float(meta["context_noise"]),
        max_frames=max_frames,
        sink_frames=meta["sink_size"],
    )
    pipe = SelfForcingPipeline(model, config)
    assert pipe.timesteps == pytest.approx(meta["warped_timesteps"], rel=1e-7)
    assert pipe.sigmas == pytest.approx(meta["sigmas_float32"], rel=1e-7)
    draws = iter(tensors[call["key"]] for call in meta["renoise_calls"])  # official order: block, then step

    def replay(shape: tuple[int, ...]) -> torch.Tensor:
        eps = next(draws)
        assert tuple(eps.shape) == shape
        return eps

    num_calls = [0]
    model.register_forward_hook(lambda *_: num_calls.__setitem__(0, num_calls[0] + 1))
    latents = pipe(tensors["noise"], model.encode_context(tensors["prompt_embeds"]), noise_source=replay)
    assert next(draws, None) is None  # every official draw consumed, no extra draw
    assert num_calls[0] == len(meta["generator_calls"]) - 1  # the official last-block refresh is skipped
    assert relative_error(latents, tensors["output"]) <= TOLERANCE
