"""Sanity checks of the official parity fixtures (tests/fixtures/README.md): they load and are self-consistent.

These tests do not touch our model; they only guard the recorded data (keys, shapes, noise bookkeeping, x0 relation).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
SF_COMMIT = "33593df3e81fa3ec10239271dd2c100facac6de1"
RF_COMMIT = "a1477d09e85dc759a6a6728f55f77f59342ce388"
SCENARIOS = [
    ("self_forcing", "model_forward"),
    ("self_forcing", "rollout_global"),
    ("self_forcing", "rollout_local6_sink3"),
    ("self_forcing", "rollout_local9_sink3"),
    ("rolling_forcing", "model_trace"),
    ("rolling_forcing", "rollout"),
]


def _load(folder: str, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads((FIXTURES / folder / f"{name}.json").read_text())
    tensors = load_file(FIXTURES / folder / meta["tensors_file"])
    return meta, tensors


def _strip_layer(name: str) -> str:
    return re.sub(r"^blocks\.\d+\.", "blocks.N.", name)


@pytest.mark.parametrize(("folder", "name"), SCENARIOS)
def test_scenario_tensors_match_their_json_listing(folder: str, name: str) -> None:
    meta, tensors = _load(folder, name)
    assert meta["official_commit"] == (SF_COMMIT if folder == "self_forcing" else RF_COMMIT)
    assert {k: list(v.shape) for k, v in tensors.items()} == meta["tensors"]
    assert all(v.dtype == torch.float32 for v in tensors.values())
    assert all(bool(torch.isfinite(v).all()) for v in tensors.values())


@pytest.mark.parametrize("folder", ["self_forcing", "rolling_forcing"])
def test_weights_use_official_key_names_of_the_1_3b_model(folder: str) -> None:
    weights = load_file(FIXTURES / folder / "weights.safetensors")
    real = json.loads((FIXTURES / "wan_t2v_1_3b_params.json").read_text())["params"]
    assert not any(k.startswith("model.") for k in weights)
    # same key set as the real model, modulo the number of blocks
    assert {_strip_layer(k) for k in weights} == {_strip_layer(k) for k in real}
    assert sum(v.numel() for v in weights.values()) == 161_536
    # tiny geometry: dim 64, ffn 128, text_dim 32, freq_dim 256, patch 1x2x2, 16 channels
    assert list(weights["patch_embedding.weight"].shape) == [64, 16, 1, 2, 2]
    assert list(weights["text_embedding.0.weight"].shape) == [64, 32]
    assert list(weights["time_embedding.0.weight"].shape) == [64, 256]
    assert list(weights["blocks.1.modulation"].shape) == [1, 6, 64]
    assert list(weights["head.head.weight"].shape) == [64, 64]
    # non-trivial init: norm weights perturbed away from 1, head not zero
    assert float((weights["blocks.0.self_attn.norm_q.weight"] - 1).abs().max()) > 0.05
    assert float(weights["head.head.weight"].abs().max()) > 0.1


def test_both_backbones_share_the_same_tiny_weights() -> None:
    sf = load_file(FIXTURES / "self_forcing" / "weights.safetensors")
    rf = load_file(FIXTURES / "rolling_forcing" / "weights.safetensors")
    assert sf.keys() == rf.keys()
    assert all(torch.equal(sf[k], rf[k]) for k in sf)


def test_real_param_list_counts_1_419b_parameters() -> None:
    real = json.loads((FIXTURES / "wan_t2v_1_3b_params.json").read_text())
    assert real["num_tensors"] == len(real["params"]) == 825
    assert real["total_parameters"] == 1_418_996_800
    assert real["params"]["blocks.29.ffn.0.weight"] == [8960, 1536]
    assert real["params"]["head.modulation"] == [1, 2, 1536]


def test_sf_model_forward_pred_x0_is_x_minus_sigma_times_flow_on_grid_timesteps() -> None:
    _, t = _load("self_forcing", "model_forward")
    # sample 0 of call0 uses on-grid t = 1000 / 937.5 / 833.33 -> sigma = t / 1000 up to float32 rounding
    sigma = (t["call0.timestep"][0] / 1000.0).double().view(3, 1, 1, 1)
    expected = t["call0.x"][0].double() - sigma * t["call0.flow_pred"][0].double()
    torch.testing.assert_close(t["call0.pred_x0"][0].double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["rollout_global", "rollout_local6_sink3", "rollout_local9_sink3"])
def test_sf_rollout_has_three_renoise_tensors_per_block(name: str) -> None:
    meta, t = _load("self_forcing", name)
    keys = [c["key"] for c in meta["renoise_calls"]]
    assert len(keys) == 3 * meta["num_blocks"]
    assert keys == sorted(k for k in t if k.startswith("renoise."))
    assert len(meta["generator_calls"]) == 5 * meta["num_blocks"]
    assert t["output"].shape == t["noise"].shape
    assert float(t["output"].std()) > 0.5


def test_sf_local_rollouts_actually_evicted() -> None:
    for name, cache_tokens in (("rollout_local6_sink3", 96), ("rollout_local9_sink3", 144)):
        meta, _ = _load("self_forcing", name)
        idx = meta["cache_indices_after"]
        assert idx["local_end_index"] == cache_tokens
        assert idx["global_end_index"] == meta["num_latent_frames"] * meta["tokens_per_frame"] > cache_tokens


def test_rf_rollout_renoises_each_block_four_times_and_evicts() -> None:
    meta, t = _load("rolling_forcing", "rollout")
    per_block: dict[int, int] = {}
    for call in meta["renoise_calls"]:
        per_block[call["block"]] = per_block.get(call["block"], 0) + 1
        assert list(t[call["key"]].shape) == [1, 3, 16, 8, 8]
    assert per_block == {b: 4 for b in range(meta["num_blocks"])}
    assert len(meta["windows"]) == meta["num_blocks"] + 4
    assert meta["cache_indices_after"] == {"global_end_index": 480, "local_end_index": 384}
    assert float(t["output"].std()) > 0.5


def test_rf_trace_alternates_denoise_and_refresh_calls() -> None:
    meta, t = _load("rolling_forcing", "model_trace")
    assert [c["updating_cache"] for c in meta["calls"]] == [False, True] * 4 + [False]
    assert list(t["cache.layer0.k"].shape) == [1, 240, 2, 32]
    assert meta["calls"][-1]["cache_indices_after"] == {"global_end_index": 240, "local_end_index": 240}
