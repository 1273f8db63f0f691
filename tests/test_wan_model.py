"""The causal Wan2.1 DiT: official state-dict layout at 1.3B, RoPE without the 1024-frame table cap, and the
block-causal training mask agreeing with cached block-by-block inference."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tokentrim.models.wan_causal import CausalWanModel, block_causal_mask

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(text_len=8, in_dim=16, dim=64, ffn_dim=128, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2)
HEIGHT = WIDTH = 8  # 16 tokens per frame
BLOCK_FRAMES = 3


def tiny_model(seed: int = 0) -> CausalWanModel:
    """Tiny random model, initialised like the parity fixtures (biases N(0, .05), norm weights 1 + N(0, .1), rest N(0, .1))."""
    model = CausalWanModel(**TINY).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            draw = torch.randn(param.shape, generator=generator)
            if name.endswith(".bias"):
                param.copy_(0.05 * draw)
            elif "norm" in name:
                param.copy_(1 + 0.1 * draw)
            else:
                param.copy_(0.1 * draw)
    return model


def inputs(num_frames: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, num_frames, 16, HEIGHT, WIDTH, generator=generator)
    text = torch.randn(1, 5, TINY["text_dim"], generator=generator)
    return latents, text


def cached_call(model, cache, latents, t: float, context_kv, start_frame: int, commit: bool) -> torch.Tensor:
    num_frames = latents.shape[1]
    cache.begin_block(start_frame, num_frames * cache.tokens_per_frame)
    flow = model(latents, torch.full((1, num_frames), t), context_kv, start_frame=start_frame, cache=cache)
    if commit:
        cache.commit()
    else:
        cache.discard_staged()
    return flow


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def test_1_3b_config_has_the_official_parameter_names_shapes_and_count():
    official = json.loads((FIXTURES / "wan_t2v_1_3b_params.json").read_text())
    with torch.device("meta"):
        model = CausalWanModel()  # WanConfig defaults = Wan2.1-T2V-1.3B
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == official["params"]
    assert len(ours) == official["num_tensors"] == 825
    assert sum(p.numel() for p in model.parameters()) == official["total_parameters"] == 1_418_996_800


@torch.no_grad()
def test_apply_rope_is_the_complex_rotation_of_channel_pairs_in_both_layouts():
    """Channel pairs (x[2i], x[2i+1]) rotate as complex numbers by the angle's (cos, sin): head-major [B, n, L, d]
    with [L, d/2] tables, token-major [B, L, n, d] with [L, 1, d/2]; bf16 in, bf16 out."""
    from tokentrim.models.wan_causal import apply_rope

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 8, generator=generator)  # [B, n, L, d]
    angles = torch.randn(10, 4, generator=generator, dtype=torch.float64)  # [L, d/2]
    cos, sin = angles.cos().float(), angles.sin().float()
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())
                                  * torch.polar(torch.ones_like(cos), angles.float())).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, rtol=1e-6, atol=1e-6)
    token_major = apply_rope(x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1))  # [B, L, n, d]
    torch.testing.assert_close(token_major.transpose(1, 2), expected, rtol=1e-6, atol=1e-6)
    rotated = apply_rope(x.bfloat16(), cos, sin)
    assert rotated.dtype == torch.bfloat16
    torch.testing.assert_close(rotated.float(), apply_rope(x.bfloat16().float(), cos, sin), rtol=0, atol=0.02)


def test_rope_positions_past_1024_frames_work():
    """Upstream's RoPE table stops at frame 1024; ours computes angles on the fly. A block at frame 2000 after a
    cached block at 1997 must see exactly what a block at 3 after a cached block at 0 sees (RoPE is relative), and
    differ from a block at 2000 after a cached block at 0 (a different relative distance)."""
    model = tiny_model()
    latents, text = inputs(6)
    context_kv = model.encode_context(text)
    first, second = latents[:, :3], latents[:, 3:]

    def second_block(first_start: int, second_start: int) -> torch.Tensor:
        cache = model.new_cache(height=HEIGHT, width=WIDTH, max_frames=6, block_frames=BLOCK_FRAMES, sink_frames=0)
        cached_call(model, cache, first, 0.0, context_kv, first_start, commit=True)
        return cached_call(model, cache, second, 500.0, context_kv, second_start, commit=False)

    near = second_block(0, 3)
    far = second_block(1997, 2000)
    far_apart = second_block(0, 2000)
    assert torch.isfinite(far).all()
    assert relative_error(far, near) < 1e-4  # same relative positions past the 1024-frame table
    assert relative_error(far_apart, near) > 1e-2  # the temporal offset is really applied
    empty = model.new_cache(height=HEIGHT, width=WIDTH, max_frames=6, block_frames=BLOCK_FRAMES)
    alone_at_0 = cached_call(model, empty, first, 500.0, context_kv, 0, commit=False)
    alone_at_2000 = cached_call(model, empty, first, 500.0, context_kv, 2000, commit=False)
    assert torch.isfinite(alone_at_2000).all() and not torch.equal(alone_at_2000, alone_at_0)


@torch.no_grad()
def test_block_causal_mask_training_path_equals_cached_inference_block_by_block():
    """One masked forward over 6 frames (blocks at timesteps 0 and 400) = block 0 committed at t=0, then block 1
    at t=400 against the cache: both see block 0's K/V computed from the same latents at the same timestep."""
    model = tiny_model()
    latents, text = inputs(6)
    context_kv = model.encode_context(text)
    t_first, t_second = 0.0, 400.0
    tokens_per_frame = model.tokens_per_frame(HEIGHT, WIDTH)
    mask = block_causal_mask(6, tokens_per_frame, BLOCK_FRAMES)  # [96, 96]
    timesteps = torch.tensor([[t_first] * 3 + [t_second] * 3])  # [1, 6]
    masked = model(latents, timesteps, context_kv, start_frame=0, attn_mask=mask)

    cache = model.new_cache(height=HEIGHT, width=WIDTH, max_frames=6, block_frames=BLOCK_FRAMES)
    block0 = cached_call(model, cache, latents[:, :3], t_first, context_kv, 0, commit=True)
    block1 = cached_call(model, cache, latents[:, 3:], t_second, context_kv, 3, commit=False)
    assert relative_error(block0, masked[:, :3]) < 1e-5
    assert relative_error(block1, masked[:, 3:]) < 1e-5
    unmasked = model(latents, timesteps, context_kv, start_frame=0)  # block 0 would see block 1
    assert relative_error(block0, unmasked[:, :3]) > 1e-3


def test_block_causal_mask_lets_a_token_see_its_block_and_earlier_blocks_only():
    mask = block_causal_mask(num_frames=4, tokens_per_frame=2, block_frames=2)  # [8, 8], blocks of 4 tokens
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = True
    expected[4:, :] = True
    assert torch.equal(mask, expected)
