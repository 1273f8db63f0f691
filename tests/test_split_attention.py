"""Split-KV attention (`WanSpeedConfig.attention_kv_splits`): the exact merge, where it applies, the rollout it
gives."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from tokentrim.models import split_attention
from tokentrim.models.split_attention import can_split, merge_kv_splits, split_kv_attention
from tokentrim.models.wan_causal import WanSpeedConfig

from test_perf_levers import rollout, tiny_model


def token_major(length: int, heads: int = 3, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """[1, n, L, d] view of [1, L, n, d] memory, as the token-major cache hands keys to the attention."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, heads, dim, generator=gen, dtype=torch.float64).float().transpose(1, 2)


@pytest.mark.parametrize("splits", [2, 3, 5])
def test_split_attention_equals_one_call_and_lays_out_like_q(splits):
    q, k, v = token_major(7, seed=1), token_major(30, seed=2) * 3, token_major(30, seed=3)  # * 3: peaked softmax
    assert can_split(q, k, v, splits)
    out = split_kv_attention(q, k, v, splits, backend="cudnn")  # on CPU: torch's CPU flash kernel
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    assert out.shape == (1, 3, 7, 8) and out.transpose(1, 2).is_contiguous()  # [1, Lq, n, d] memory, like q


def test_merge_weights_each_chunk_by_its_log_sum_exp():
    """Two chunks whose log-sum-exps differ by log 3 -> weights 3/4 and 1/4, whatever their scale."""
    out = torch.stack([torch.full((1, 2, 4), 1.0), torch.full((1, 2, 4), 5.0)])  # [S=2, n=1, Lq=2, d=4]
    lse = torch.stack([torch.full((1, 2), 100.0 + torch.log(torch.tensor(3.0)).item()), torch.full((1, 2), 100.0)])
    torch.testing.assert_close(merge_kv_splits(out, lse), torch.full((1, 1, 2, 4), 0.75 * 1 + 0.25 * 5))


def test_split_applies_only_to_batch_one_token_major_even_lengths():
    q, k, v = token_major(4), token_major(12), token_major(12)
    assert can_split(q, k, v, 2) and can_split(q, k, v, 3) and can_split(q, k, v, 4)
    assert not can_split(q, k, v, 5)  # 12 keys do not divide into 5 chunks
    assert not can_split(q, k, v, 1)
    head_major = k.contiguous()  # [1, n, L, d] memory: a key chunk would not be a view
    assert not can_split(q, head_major, v, 2) and not can_split(q, k, v.contiguous(), 2)
    batch2 = torch.randn(2, 12, 3, 8).transpose(1, 2)
    assert not can_split(q.expand(2, -1, -1, -1), batch2, batch2, 2)


def test_rollout_with_split_keys_equals_one_call_eager_and_compiled(monkeypatch):
    """A rolling-window Self Forcing rollout (eviction included) with 2 and 3 key chunks per attention."""
    model = tiny_model(4)
    reference = rollout(model)
    chunks = []
    real = split_attention.sdpa_with_lse
    monkeypatch.setattr(split_attention, "sdpa_with_lse", lambda *a: chunks.append(a[1].shape[0]) or real(*a))
    for splits in (2, 3):
        model.set_speed(WanSpeedConfig(token_major=True, attention_kv_splits=splits))
        torch.testing.assert_close(rollout(model), reference, rtol=1e-5, atol=1e-5)
    assert len(chunks) > 20 and set(chunks) == {2, 3}  # every cached attention call took the split path
    model.set_speed(WanSpeedConfig(token_major=True, attention_kv_splits=2, compile_blocks=True,
                                   compile_backend="aot_eager", compile_fullgraph=True))
    assert model.blocks[0].self_attn.merge_splits is not merge_kv_splits  # the compiled merge
    torch.testing.assert_close(rollout(model), reference, rtol=1e-5, atol=1e-5)
    model.set_speed(WanSpeedConfig())
    assert model.blocks[0].self_attn.kv_splits == 1 and model.blocks[0].self_attn.merge_splits is merge_kv_splits
    torch.testing.assert_close(rollout(model), reference, rtol=0, atol=0)


def test_split_path_is_taken_without_autograd_only(monkeypatch):
    model = tiny_model(5)
    model.set_speed(WanSpeedConfig(token_major=True, attention_kv_splits=2))
    calls = []
    real = split_attention.sdpa_with_lse
    monkeypatch.setattr(split_attention, "sdpa_with_lse", lambda *a: calls.append(a[0].shape) or real(*a))
    attn = model.blocks[0].self_attn
    q, k, v = token_major(4, heads=2, dim=32), token_major(8, heads=2, dim=32), token_major(8, heads=2, dim=32)
    with torch.no_grad():
        attn.attend(q, k, v, None)
    assert calls == [(2, 2, 4, 32)]  # q expanded over the 2 key chunks
    with torch.enable_grad():  # FlowMo: the log-sum-exp outputs carry no gradient, so autograd takes one call
        attn.attend(q, k, v, None)
    with torch.no_grad():
        attn.attend(q, k, v, torch.ones(4, 8, dtype=torch.bool))  # a mask: one call
    assert len(calls) == 1


def test_a_kernel_that_refuses_warns_once_and_falls_back_to_one_call(monkeypatch, caplog):
    model = tiny_model(6)
    model.set_speed(WanSpeedConfig(token_major=True, attention_kv_splits=2))
    attn = model.blocks[0].self_attn

    def refuse(*args):
        raise RuntimeError("cuDNN: no valid execution plan")

    monkeypatch.setattr(split_attention, "sdpa_with_lse", refuse)
    q, k, v = token_major(4, heads=2, dim=32), token_major(8, heads=2, dim=32), token_major(8, heads=2, dim=32)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = attn.attend(q, k, v, None)
        attn.attend(q, k, v, None)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    assert attn.kv_splits == 1 and sum("split-KV attention failed" in r.message for r in caplog.records) == 1


def test_kv_splits_config_auto_and_errors():
    from tokentrim.backbones import check_speed_config, resolve_speed

    assert resolve_speed({}, "cuda").attention_kv_splits == 2  # auto: CUDA, token-major, cuDNN
    assert resolve_speed({}, "cpu").attention_kv_splits == 1
    assert resolve_speed({"token_major": False}, "cuda").attention_kv_splits == 1
    assert resolve_speed({"attention_backends": []}, "cuda").attention_kv_splits == 1  # no log-sum-exp kernel named
    assert resolve_speed({"attention_kv_splits": 3, "token_major": True}, "cpu").attention_kv_splits == 3
    with pytest.raises(ValueError, match="attention_kv_splits must be auto or an integer >= 1"):
        check_speed_config({"attention_kv_splits": 0})
    with pytest.raises(ValueError, match="attention_kv_splits must be auto or an integer >= 1"):
        check_speed_config({"attention_kv_splits": "two"})
    with pytest.raises(ValueError, match="needs backbone.speed.token_major"):
        check_speed_config({"attention_kv_splits": 2, "token_major": False})
    with pytest.raises(ValueError, match="needs backbone.speed.token_major on"):
        resolve_speed({"attention_kv_splits": 2}, "cpu")  # token_major auto = off on CPU
    with pytest.raises(ValueError, match=r"needs one of \['cudnn', 'flash', 'efficient'\]"):
        resolve_speed({"attention_kv_splits": 2, "attention_backends": ["math"]}, "cuda")
    with pytest.raises(ValueError, match="needs speed.token_major"):
        WanSpeedConfig(attention_kv_splits=2)
