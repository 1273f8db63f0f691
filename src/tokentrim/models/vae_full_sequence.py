"""Whole-clip (full-sequence) encode and decode for diffusers' `AutoencoderKLWan` (Wan2.1 layout), for training.

diffusers encodes a clip chunk by chunk (frame 0, then 4 frames at a time) and decodes it one latent frame at a time,
carrying each causal convolution's last 2 input frames across chunks. That is the streaming form of one computation
over the whole clip, so the same numbers come out of a single pass in which

- every causal 3-D convolution pads the clip's start with zeros (what an empty cache does), and
- the temporal resampling layers handle frame 0 the way the chunked loop does:
  - downsample3d: frame 0 passes through; a stride-2 temporal conv (no padding) over all frames gives the rest,
    whose windows [0,1,2], [2,3,4], ... are exactly the chunked windows (each chunk starts with the previous chunk's
    last frame);
  - upsample3d: frame 0 passes through; the later frames go through the temporal conv as a sequence of their own,
    zero-padded (the chunked loop marks the cache "Rep" after frame 0, so latent frame 1 sees zeros, not frame 0),
    and each output frame becomes 2.

A 45-frame clip is 12 encoder chunks and 12 decoder calls in the chunked form, 1 + 1 here: training on clips as long
as the DiT's window stops being bound by kernel launches. `tests/test_vae_full_sequence.py` checks equality with
diffusers' chunked `_encode` / `_decode` (values and gradients).

Letters: B batch, C channels, T frames, H, W size (diffusers' `[B, C, T, H, W]` layout throughout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _resample_full_sequence(self, x: torch.Tensor, feat_cache=None, feat_idx=None) -> torch.Tensor:
    """`WanResample.forward` over a whole clip `[B, C, T, H, W]` (bound to a `WanResample` instance)."""
    if feat_cache is not None:
        raise RuntimeError("full-sequence resampling runs without a feature cache")
    b, c, t, h, w = x.shape
    if self.mode == "upsample3d" and t > 1:
        later = self.time_conv(x[:, :, 1:])  # [B, 2C, T-1, H, W], causal zero padding
        later = later.reshape(b, 2, c, t - 1, h, w)
        later = torch.stack((later[:, 0], later[:, 1]), 3).reshape(b, c, 2 * (t - 1), h, w)  # frame k -> (k, a), (k, b)
        x = torch.cat([x[:, :, :1], later], dim=2)  # [B, C, 1 + 2(T-1), H, W]
    t = x.shape[2]
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # spatial resampling is per frame
    frames = self.resample(frames)
    x = frames.view(b, t, frames.shape[1], frames.shape[2], frames.shape[3]).permute(0, 2, 1, 3, 4)
    if self.mode == "downsample3d" and t > 1:
        if (t - 1) % 2:
            raise ValueError(f"downsample3d needs 1 + 2k frames, got {t}")
        x = torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)  # [B, C, 1 + (T-1)/2, H', W']
    return x


@contextlib.contextmanager
def full_sequence_resampling(autoencoder: nn.Module) -> Iterator[None]:
    """Within the block, the temporal resampling layers of `autoencoder` run over whole clips (cache-free)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    patched = [m for m in autoencoder.modules() if isinstance(m, WanResample) and m.mode.endswith("3d")]
    for module in patched:
        module.forward = _resample_full_sequence.__get__(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's method


def _check_layout(autoencoder: nn.Module) -> None:
    config = autoencoder.config
    if config.get("is_residual", False) or config.get("patch_size") is not None:
        raise ValueError("full-sequence encode/decode supports the Wan2.1 VAE layout only "
                         "(is_residual=False, patch_size=None)")


def encode_full_sequence(autoencoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Equals `autoencoder._encode(x)`: pixels `[B, 3, T, H, W]` (T = 1 + 4k) -> moments `[B, 2 z_dim, F, h, w]`."""
    _check_layout(autoencoder)
    stride = 2 ** sum(autoencoder.config["temperal_downsample"])
    if (x.shape[2] - 1) % stride:
        raise ValueError(f"pixels need 1 + {stride}k frames, got {x.shape[2]}")
    with full_sequence_resampling(autoencoder):
        return autoencoder.quant_conv(autoencoder.encoder(x))


def decode_full_sequence(autoencoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Equals `autoencoder._decode(z).sample`: latents `[B, z_dim, F, h, w]` -> pixels `[B, 3, T, H, W]` in [-1, 1]."""
    _check_layout(autoencoder)
    with full_sequence_resampling(autoencoder):
        out = autoencoder.decoder(autoencoder.post_quant_conv(z))
    return out.clamp(-1.0, 1.0)
