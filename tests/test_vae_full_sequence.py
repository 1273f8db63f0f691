"""The whole-clip VAE pass used for training equals diffusers' chunked encode / decode (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan

from tokentrim.models.vae import WanVAE
from tokentrim.models.vae_full_sequence import decode_full_sequence, encode_full_sequence

TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True])


def tiny_autoencoder(seed: int = 0, **overrides) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    ae = AutoencoderKLWan(**(TINY | overrides)).double()
    with torch.no_grad():  # diffusers zero-inits nothing here, but make every parameter matter (gammas are ones)
        for p in ae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ae


@pytest.mark.parametrize("frames", [1, 5, 13])
def test_encode_decode_equal_the_chunked_loop(frames: int) -> None:
    ae = tiny_autoencoder()
    x = torch.randn(2, 3, frames, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chunked = ae._encode(x)  # [B, 2 z_dim, F, h, w]
    full = encode_full_sequence(ae, x)
    assert full.shape == chunked.shape == (2, 8, 1 + (frames - 1) // 4, 4, 4)
    torch.testing.assert_close(full, chunked, rtol=0, atol=1e-12)
    z = torch.randn(2, 4, chunked.shape[2], 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(decode_full_sequence(ae, z), ae._decode(z, return_dict=False)[0], rtol=0, atol=1e-12)


def test_one_temporal_level_and_frame0_dependence() -> None:
    """A VAE with one temporal level; and latents differing only in frame 0 (frame 0 bypasses the upsampling time
    conv, and latent frame 1 sees zeros there, diffusers' "Rep" cache) decode equally in both forms."""
    ae = tiny_autoencoder(seed=3, temperal_downsample=[True, False])
    z = torch.randn(1, 4, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z2 = z.clone()
    z2[:, :, 0] += 1.0
    for zz in (z, z2):
        torch.testing.assert_close(decode_full_sequence(ae, zz), ae._decode(zz, return_dict=False)[0], rtol=0, atol=1e-12)


def test_gradients_equal_the_chunked_loop() -> None:
    ae = tiny_autoencoder(seed=5)
    x = torch.randn(1, 3, 9, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def grads(encode, decode) -> list[torch.Tensor]:
        ae.zero_grad(set_to_none=True)
        recon = decode(encode(x)[:, :4])
        (recon - x).abs().mean().backward()
        return [p.grad.clone() for p in ae.parameters()]

    chunked = grads(ae._encode, lambda z: ae._decode(z, return_dict=False)[0])
    full = grads(lambda v: encode_full_sequence(ae, v), lambda z: decode_full_sequence(ae, z))
    assert len(full) == len(chunked) > 0 and any(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_patch_is_undone_and_bad_lengths_fail() -> None:
    ae = tiny_autoencoder()
    x = torch.randn(1, 3, 5, 16, 16, dtype=torch.float64)
    encode_full_sequence(ae, x)
    assert not any("forward" in vars(m) for m in ae.modules())  # the class methods are back
    with pytest.raises(ValueError, match=r"1 \+ 4k frames, got 6"):
        encode_full_sequence(ae, torch.randn(1, 3, 6, 16, 16, dtype=torch.float64))


def test_wan_vae_encode_full_sequence_flag() -> None:
    torch.manual_seed(0)
    vae = WanVAE(**TINY, latents_mean=[0.1] * 4, latents_std=[2.0] * 4).float()
    pixels = torch.rand(2, 9, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    torch.testing.assert_close(vae.encode(pixels, full_sequence=True), vae.encode(pixels), rtol=1e-5, atol=1e-6)
