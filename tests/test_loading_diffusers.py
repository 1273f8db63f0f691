"""diffusers `WanTransformer3DModel` folders convert to the official Wan key layout and compute the same function."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from tokentrim.models.loading import (
    WAN_T2V_1_3B_CONFIG,
    causal_wan_state_dict_shapes,
    convert_diffusers_wan_state_dict,
    diffusers_to_original_wan_key,
    load_diffusers_wan_dit,
    load_state_dict_strict,
    original_to_diffusers_wan_key,
)
from tokentrim.models.wan_causal import CausalWanModel

# diffusers tiny config (as in diffusers' own tests: 2 layers, head dim 12) and the matching CausalWanModel config.
DIFFUSERS_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                      text_dim=16, freq_dim=32, ffn_dim=40, num_layers=2, cross_attn_norm=True,
                      qk_norm="rms_norm_across_heads", eps=1e-6)
CAUSAL_TINY = dict(patch_size=(1, 2, 2), text_len=512, in_dim=4, dim=24, ffn_dim=40, freq_dim=32, text_dim=16,
                   out_dim=4, num_heads=2, num_layers=2, eps=1e-6)


def tiny_diffusers_model() -> WanTransformer3DModel:
    torch.manual_seed(0)  # diffusers initialises from the global RNG; then overwrite every tensor from a Generator
    model = WanTransformer3DModel(**DIFFUSERS_TINY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def test_tiny_diffusers_folder_converts_to_the_official_key_list(tmp_path):
    tiny_diffusers_model().save_pretrained(tmp_path / "transformer")
    state_dict, config = load_diffusers_wan_dit(tmp_path, dtype=None)
    assert config == CAUSAL_TINY
    expected = causal_wan_state_dict_shapes(**config)
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == expected


def test_converted_diffusers_model_matches_causal_wan_forward(tmp_path):
    diffusers_model = tiny_diffusers_model()
    diffusers_model.save_pretrained(tmp_path / "transformer")
    state_dict, config = load_diffusers_wan_dit(tmp_path, dtype=None)
    model = load_state_dict_strict(CausalWanModel(**{**config, "text_len": 6}), state_dict, source="tiny").eval()

    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 3, 4, 4, 6, generator=generator)  # [B, F, C, H, W]
    text = torch.randn(1, 6, 16, generator=generator)  # [B, text_len, text_dim]
    t = torch.tensor([625.0])
    with torch.no_grad():
        ours = model(latents, t.expand(1, 3), model.encode_context(text))  # [B, F, C, H, W]
        theirs = diffusers_model(latents.transpose(1, 2), t, text, return_dict=False)[0].transpose(1, 2)
    assert ours.shape == theirs.shape == latents.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_full_size_diffusers_keys_map_onto_the_1_3b_key_list():
    with torch.device("meta"):
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                                      in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                                      num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    converted = convert_diffusers_wan_state_dict(model.state_dict())
    assert {k: tuple(v.shape) for k, v in converted.items()} == causal_wan_state_dict_shapes(**WAN_T2V_1_3B_CONFIG)


def test_key_mapping_is_the_inverse_of_diffusers_own_converter():
    original_keys = list(causal_wan_state_dict_shapes(**WAN_T2V_1_3B_CONFIG))
    official = convert_wan_transformer_to_diffusers({k: k for k in original_keys})  # diffusers name -> original name
    assert len(official) == len(original_keys)
    assert all(diffusers_to_original_wan_key(new) == old for new, old in official.items())
    assert all(original_to_diffusers_wan_key(old) == new for new, old in official.items())


def test_image_to_video_keys_are_rejected_by_name():
    with pytest.raises(ValueError, match="image-to-video"):
        diffusers_to_original_wan_key("blocks.0.attn2.add_k_proj.weight")
