"""Wan VAE: key conversion from `Wan2.1_VAE.pth`, latent normalisation, and streaming decode == one-shot decode."""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from tokentrim.models.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WanVAE,
    diffusers_to_original_vae_key,
    original_to_diffusers_vae_key,
)

TINY = dict(base_dim=4, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1, temperal_downsample=(False, True, True))
TINY_2_LEVELS = dict(base_dim=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=2, temperal_downsample=(True,),
                     latents_mean=(0.1, -0.2, 0.3, 0.0), latents_std=(1.5, 0.5, 2.0, 1.0))


def tiny_vae(config: dict = TINY, seed: int = 0) -> WanVAE:
    vae = WanVAE(**config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in vae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return vae.eval()


def original_layout(vae: WanVAE) -> dict[str, torch.Tensor]:
    """The tiny model's weights under `Wan2.1_VAE.pth` key names (via the inverse mapping)."""
    res = vae.config["num_res_blocks"]
    return {diffusers_to_original_vae_key(k, num_res_blocks=res): v.clone()
            for k, v in vae.autoencoder.state_dict().items()}


def test_full_size_key_mapping_agrees_with_diffusers_converter():
    with torch.device("meta"):
        vae = WanVAE()
    diffusers_keys = list(vae.autoencoder.state_dict())
    original_keys = [diffusers_to_original_vae_key(k, num_res_blocks=2) for k in diffusers_keys]
    official = convert_wan_vae_to_diffusers({k: k for k in original_keys})  # diffusers name -> original name
    assert set(official) == set(diffusers_keys) and len(diffusers_keys) == 194
    assert all(original_to_diffusers_vae_key(old, num_res_blocks=2, num_levels=4) == new
               for new, old in official.items())


def test_full_size_vae_has_wan_parameter_count():
    with torch.device("meta"):
        vae = WanVAE()
    assert sum(p.numel() for p in vae.parameters()) == 126_892_531


@pytest.mark.parametrize("config", [TINY, TINY_2_LEVELS], ids=["4-levels", "2-levels"])
def test_wan_pth_with_original_keys_loads_to_identical_decoder(tmp_path, config):
    source = tiny_vae(config)
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(original_layout(source), path)
    loaded = WanVAE.from_wan_checkpoint(path, dtype=torch.float32, **config)
    latents = torch.randn(1, 2, config["z_dim"], 2, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.decode(latents), source.decode(latents))


def test_saved_diffusers_folder_round_trips(tmp_path):
    source = tiny_vae(TINY_2_LEVELS)
    source.save_pretrained(tmp_path / "vae")
    loaded = WanVAE.from_diffusers_folder(tmp_path, dtype=torch.float32)
    assert loaded.config == source.config
    latents = torch.randn(1, 3, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.decode(latents), source.decode(latents))


def test_streaming_decode_equals_one_shot_diffusers_decode():
    vae = tiny_vae()
    latents = torch.randn(2, 5, 16, 2, 3, generator=torch.Generator().manual_seed(3))  # [B, F, C, h, w]
    chunks = [latents[:, :1], latents[:, 1:3], latents[:, 3:]]
    streamed = list(vae.decode_stream(chunks))
    assert [c.shape[1] for c in streamed] == [1, 8, 8]  # first latent -> 1 frame, later ones -> 4 each
    with torch.no_grad():
        raw = vae.denormalize(latents).transpose(1, 2)  # [B, C, F, h, w]
        reference = vae.autoencoder.decode(raw).sample.transpose(1, 2)  # diffusers' own one-shot decode
    assert reference.shape == (2, 17, 3, 16, 24)
    torch.testing.assert_close(torch.cat(streamed, dim=1), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames_per_call", [2, 3])
def test_decoding_several_latent_frames_per_call_equals_one_at_a_time(frames_per_call):
    """After the first latent, k latents per decoder call give the one-at-a-time numbers (float64), also when the
    stream's chunks do not line up with k."""
    vae = tiny_vae().double()
    latents = torch.randn(1, 7, 16, 2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference = vae.decode(latents)
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, frames_per_call=frames_per_call)
    torch.testing.assert_close(vae.decode(latents), reference, rtol=0, atol=1e-12)
    streamed = torch.cat(list(vae.decode_stream([latents[:, :2], latents[:, 2:6], latents[:, 6:]])), dim=1)
    torch.testing.assert_close(streamed, reference, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="frames_per_call must be a positive integer, got 0"):
        vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, frames_per_call=0)


def test_stream_snapshot_restore_replays_a_chunk_exactly():
    vae = tiny_vae()
    latents = torch.randn(1, 4, 16, 2, 2, generator=torch.Generator().manual_seed(4))
    decoder = vae.stream_decoder()
    decoder.decode_chunk(latents[:, :2])
    state = decoder.snapshot()
    first = decoder.decode_chunk(latents[:, 2:])
    decoder.restore(state)
    assert torch.equal(decoder.decode_chunk(latents[:, 2:]), first)


def test_latent_normalisation_uses_wan_constants():
    vae = tiny_vae()
    mu = torch.zeros(1, 1, 16, 1, 1)
    z = vae.normalize(mu)
    expected = -torch.tensor(WAN21_LATENTS_MEAN) / torch.tensor(WAN21_LATENTS_STD)
    torch.testing.assert_close(z.flatten(), expected)
    torch.testing.assert_close(vae.denormalize(z), mu, rtol=0, atol=1e-6)


def test_encode_gives_normalised_posterior_mean_with_wan_frame_count():
    vae = tiny_vae()
    pixels = torch.rand(1, 9, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1  # [B, T, 3, H, W]
    latents = vae.encode(pixels)
    assert latents.shape == (1, 3, 16, 2, 2)  # T = 1 + 4 (F - 1)
    with torch.no_grad():
        mu = vae.autoencoder.encode(pixels.transpose(1, 2)).latent_dist.mean.transpose(1, 2)
    torch.testing.assert_close(latents, vae.normalize(mu))


def test_encode_rejects_frame_count_not_1_plus_4k():
    with pytest.raises(ValueError, match=r"\[B, 1\+4k, 3, H, W\]"):
        tiny_vae().encode(torch.zeros(1, 8, 3, 16, 16))


def test_missing_vae_file_is_one_line_naming_config_key(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        WanVAE.from_wan_checkpoint(tmp_path / "Wan2.1_VAE.pth")
    message = str(info.value)
    assert "\n" not in message and "set backbone.vae_path" in message and "Wan2.1_VAE.pth" in message


def test_vae_weights_missing_a_key_fail_strictly(tmp_path):
    state_dict = original_layout(tiny_vae(TINY_2_LEVELS))
    del state_dict["decoder.head.2.bias"]
    torch.save(state_dict, tmp_path / "vae.pth")
    with pytest.raises(ValueError, match=r"1 missing \(e.g. decoder.conv_out.bias\)"):
        WanVAE.from_wan_checkpoint(tmp_path / "vae.pth", dtype=torch.float32, **TINY_2_LEVELS)
