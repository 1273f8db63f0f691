"""3-D rotary position embedding of Wan2.1 (arXiv 2503.20314): angles at absolute (frame, h, w) positions and the
rotation of channel pairs. Model-free, so the KV caches (`tokentrim.caches`) can re-rope stored keys without importing
the network.

Letters: B batch, n heads, L tokens, d head dim, F frames.
"""

from __future__ import annotations

import torch


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Complex channels given to (t, h, w): Wan splits d/2 pairs as [c - 2(c//3), c//3, c//3] (22, 21, 21 for d=128)."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def rope_angles(head_dim: int, frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rotation angles of 3-D RoPE for tokens at absolute latent frames `frames` on an (height, width) token grid.

    Each axis has its own frequency ladder 10000^(-2j/dim_axis) (Wan's `rope_params` per axis). Positions are
    computed on the fly, so there is no 1024-frame table cap. float64, as in Wan.

    Args:
        frames: `[F]` absolute frame indices.
    Returns:
        `[F*height*width, d/2]` angles, tokens ordered (f, h, w) row-major.
    """
    ct, ch, cw = rope_axis_dims(head_dim)
    device = frames.device

    def ladder(c: int) -> torch.Tensor:  # c complex channels -> [c] inverse frequencies
        dim_axis = 2 * c
        return 1.0 / torch.pow(10000.0, torch.arange(0, dim_axis, 2, dtype=torch.float64, device=device) / dim_axis)

    ang_t = torch.outer(frames.to(torch.float64), ladder(ct))  # [F, ct]
    ang_h = torch.outer(torch.arange(height, dtype=torch.float64, device=device), ladder(ch))  # [h, ch]
    ang_w = torch.outer(torch.arange(width, dtype=torch.float64, device=device), ladder(cw))  # [w, cw]
    num_frames = frames.numel()
    angles = torch.cat(
        [
            ang_t[:, None, None, :].expand(num_frames, height, width, ct),
            ang_h[None, :, None, :].expand(num_frames, height, width, ch),
            ang_w[None, None, :, :].expand(num_frames, height, width, cw),
        ],
        dim=-1,
    )  # [F, h, w, d/2]
    return angles.reshape(num_frames * height * width, ct + ch + cw)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x[2i], x[2i+1]) as complex numbers. x: [B, n, L, d] with cos/sin [L, d/2], or
    x: [B, L, n, d] with cos/sin [L, 1, d/2] (token-major)."""
    # (real, imag) -> (real cos - imag sin, imag cos + real sin), written over whole channel rows so a fused kernel
    # stores contiguously: x * (c0, c0, c1, c1, ...) + swap(x) * (-s0, s0, -s1, s1, ...), swap(x) = (x1, x0, x3, ...).
    # The same products and sums as the complex form, bit for bit.
    xf = x.float()  # [B, n, L, d]
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # [B, n, L, d]
    cos2 = cos.repeat_interleave(2, dim=-1)  # [L, d]
    sin2 = torch.stack([-sin, sin], dim=-1).flatten(-2)  # [L, d]
    return (xf * cos2 + swapped * sin2).type_as(x)
