"""bench/exec_path.py reads which execution path a tiny CausalWanModel actually ran (compiled regions, split-KV calls)
and names each requested lever that fell back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import exec_path
finally:
    sys.path.remove(str(ROOT / "bench"))

TINY = dict(text_len=8, in_dim=16, dim=64, ffn_dim=128, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2)


@pytest.fixture(scope="module")
def model() -> CausalWanModel:
    torch.manual_seed(0)
    return CausalWanModel(**TINY).eval().requires_grad_(False)


def rollout(model: CausalWanModel, speed: WanSpeedConfig) -> dict:
    """One 3-block video (8x8 latents: 16 tokens a frame, keys of 48, 96, 144 tokens) under `speed`; its path."""
    model.set_speed(speed)
    before = exec_path.counts(model)
    generator = torch.Generator().manual_seed(0)
    context_kv = model.encode_context(torch.randn(1, 5, TINY["text_dim"], generator=generator))
    noise = torch.randn(1, 9, 16, 8, 8, generator=generator)
    with torch.no_grad():
        SelfForcingPipeline(model, SelfForcingConfig())(noise, context_kv, noise_source=lambda s: torch.randn(s, generator=generator))
    return exec_path.observe(model, before)


def test_eager_path_is_recorded_and_nothing_fell_back(model):
    path = rollout(model, WanSpeedConfig())
    assert path["fell_back"] == []
    assert path["attention_kv_splits"]["split_calls"] == 0 and path["attention_kv_splits"]["one_calls"] > 0
    assert path["compile_blocks"]["requested"] is False and path["cuda_graphs"]["graphs"] == 0


def test_split_kv_that_runs_split_is_observed_and_one_that_never_splits_fell_back(model):
    ran = rollout(model, WanSpeedConfig(token_major=True, attention_kv_splits=2))  # 48, 96, 144 keys: all even
    assert ran["attention_kv_splits"]["split_calls"] > 0 and ran["fell_back"] == []
    never = rollout(model, WanSpeedConfig(token_major=True, attention_kv_splits=7))  # no key length divides by 7
    assert never["attention_kv_splits"]["split_calls"] == 0
    assert never["fell_back"] == [f"attention_kv_splits=7: no call ran split "
                                  f"({never['attention_kv_splits']['one_calls']} ran as one call)"]
    both = exec_path.accumulate(never, ran)  # counts of two observations add up
    assert both["attention_kv_splits"]["split_calls"] == ran["attention_kv_splits"]["split_calls"]


def test_compile_is_observed_only_once_dynamo_compiled_the_regions(model):
    torch._dynamo.reset()  # no compiled code for the regions in this process
    model.set_speed(WanSpeedConfig(compile_blocks=True, compile_backend="aot_eager"))
    installed_only = exec_path.observe(model, exec_path.counts(model))
    assert installed_only["compile_blocks"]["installed"] and not installed_only["compile_blocks"]["compiled_code"]
    assert installed_only["fell_back"] == ["compile_blocks: no graph compiled (eager ran)"]
    compiled = rollout(model, WanSpeedConfig(compile_blocks=True, compile_backend="aot_eager"))
    assert compiled["compile_blocks"]["compiled_code"] and compiled["fell_back"] == []
    model.set_speed(WanSpeedConfig())
