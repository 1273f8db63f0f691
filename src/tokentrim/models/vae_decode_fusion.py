"""Memory-traffic and FLOP levers of the Wan VAE decoder: one fused RMS-norm + SiLU kernel
(`backbone.speed.vae_fused_norm`), convolutions that leave their spatial zero padding to cuDNN
(`vae_implicit_padding`), nearest upsampling in the activation's dtype (`vae_native_upsample`) and the upsampling
convolutions run on the low-resolution input (`vae_subpixel_upsample`).

Every residual block of diffusers' `WanDecoder3d` (and its head) applies `WanRMS_norm` and then SiLU to the whole
activation. Eagerly that is a chain of separate kernels, each reading and writing the full tensor:

    F.normalize (the L2 norm over channels, its clamp, the division) -> x scale -> x gamma -> + bias -> SiLU

At 480x832 the top decoder level holds 96 channels x 4 frames x 399,360 pixels per latent frame, 307 MB in bf16, so
these passes are memory-bound and add up to a sizeable share of the decode (bench/results/side_by_side_vae_*). The
fused form reads the activation once and writes it once, computing in float32 and rounding to the input dtype once
(eagerly each step rounds to bf16), so results agree with the eager chain to bf16 rounding.

The fusion replaces, per decoder instance, each such norm's `forward` with the fused norm + SiLU and the block's
SiLU module with an identity (the SiLU of a `WanResidualBlock` and of the decoder head follows only those norms).
`unfuse_decoder_norms` restores both. The mid-block attention's norm (no SiLU after it) is left alone.

diffusers' `WanCausalConv3d` concatenates its cached frames in front of the input and then `F.pad`s the result in
time *and space* before a padding-free convolution: two full copies of the activation per 3x3x3 convolution. With
`implicit_padding_convs` the explicit pad covers only the causal zeros in time (none once the cache is full) and the
convolution pads H and W itself, which cuDNN does without a copy: the same zeros, so the same numbers up to the
convolution algorithm's rounding.

diffusers' `WanUpsample` casts to float32, upsamples (nearest-exact: every output is a copy of one input), and casts
back: at the top level a 4x larger float32 tensor is written and read again. `native_upsampling` upsamples in
the input's dtype, which gives the same bits, since copying a value does not round it.

Every spatial upsampler of the decoder is nearest x2 followed by a 3x3 convolution (padding 1). Each output pixel
(2i + a, 2j + b) then sees only the 2x2 input pixels rows {i - 1 + a, i + a} x columns {j - 1 + b, j + b}, with the
3x3 taps that land on the same input pixel summed: a = 0 takes rows (w0, w1 + w2), a = 1 rows (w0 + w1, w2), and
likewise for columns. `subpixel_upsampling` runs those four 2x2 "phase" kernels as one convolution with 4x the output
channels over the low-resolution input (16 taps per output pixel instead of 36, and no 4x larger upsampled copy),
then interleaves the phases. Exact in exact arithmetic; the summed taps are rounded once to the weights' dtype.

Letters: B batch, C channels, T frames, H, W size (`[B, C, T, H, W]`, any memory format), O output channels.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def rms_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-12) -> torch.Tensor:
    """SiLU(`WanRMS_norm`(x)) over channels (dim 1), in float32, returned in x's dtype.

    Args:
        x: `[B, C, ...]`.
        weight: `[C, 1, ...]` = gamma x sqrt(C) (the norm's gain times its scale).
        bias: `[C, 1, ...]` or None.
        eps: F.normalize's floor on the L2 norm.
    """
    xf = x.float()
    norm = xf.square().sum(dim=1, keepdim=True).sqrt().clamp_min(eps)  # [B, 1, ...]
    y = xf / norm * weight.float()
    if bias is not None:
        y = y + bias.float()
    return F.silu(y).to(x.dtype)


def rms_norm_silu_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       eps: float = 1e-12) -> torch.Tensor:
    """`rms_norm_silu` over the last dim of rows: x `[N, C]`, weight and bias `[C]` (bias may be None) -> `[N, C]`."""
    xf = x.float()
    norm = xf.square().sum(dim=-1, keepdim=True).sqrt().clamp_min(eps)  # [N, 1]
    y = xf / norm * weight.float()
    if bias is not None:
        y = y + bias.float()
    return F.silu(y).to(x.dtype)


def as_channel_rows(kernel, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Run a rows kernel (`rms_norm_silu_rows`) on a channels-last `[B, C, T, H, W]` activation, whose memory is
    `[B*T*H*W, C]` rows: a view in, a view out (channels-last again), no copy."""
    channels = x.shape[1]
    rows = x.permute(0, 2, 3, 4, 1).reshape(-1, channels)  # [B, T, H, W, C] memory -> [N, C] view
    y = kernel(rows, weight.reshape(channels), None if bias is None else bias.reshape(channels))
    return y.view(x.shape[0], *x.shape[2:], channels).permute(0, 4, 1, 2, 3)  # -> [B, C, T, H, W], channels-last


class CompiledRMSNormSiLU:
    """`rms_norm_silu` through torch.compile (shapes symbolic, so the decoder's levels and chunk lengths share one
    kernel per memory layout). If compilation fails on this machine (no Triton, no C++ compiler), it warns once and
    runs the same math eagerly from then on, so a decode never dies on its compiler.

    Channels-last activations (`vae_channels_last`) go through `rms_norm_silu_rows` on their `[N, C]` rows: the
    reduction is then over the contiguous last dim, which inductor's dynamic-shape kernel handles well. The 5-D kernel
    on the same memory took 0.35 s per 81-frame decode at 480x832 on an H200, the rows kernel 0.16 s (whole decode
    1.124 -> 0.946 s, in 2 and 3 processes; `bench/vae_norm_kernel.py`,
    `bench/results/vae_norm_kernel_NVIDIA_H200_202611.jsonl`)."""

    def __init__(self):
        self.compiled = torch.compile(rms_norm_silu, dynamic=True, fullgraph=True)
        self.compiled_rows = torch.compile(rms_norm_silu_rows, dynamic=True, fullgraph=True)
        self.failed = False

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.failed:
            try:
                if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
                    return as_channel_rows(self.compiled_rows, x, weight, bias)
                return self.compiled(x, weight, bias)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: same math, eager
                self.failed = True
                logger.warning("vae_fused_norm: torch.compile failed (%s: %s); running the fused norm eagerly",
                               type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return rms_norm_silu(x, weight, bias)


@functools.cache
def compiled_rms_norm_silu() -> CompiledRMSNormSiLU:
    return CompiledRMSNormSiLU()


def _fused_forward(norm: nn.Module, kernel, x: torch.Tensor) -> torch.Tensor:
    bias = norm.bias if isinstance(norm.bias, torch.Tensor) else None
    if bias is None and norm.bias != 0.0:
        raise ValueError(f"WanRMS_norm with a non-tensor bias {norm.bias!r} is not supported by the fused norm")
    return kernel(x, norm.gamma.float() * norm.scale, bias)


def _norm_silu_pairs(decoder: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """(owner, [norms]) for every module whose `nonlinearity` is a SiLU applied only right after those norms."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResidualBlock

    pairs = [(m, [m.norm1, m.norm2]) for m in decoder.modules() if isinstance(m, WanResidualBlock)]
    pairs.append((decoder, [decoder.norm_out]))
    return [(owner, norms) for owner, norms in pairs if isinstance(owner.nonlinearity, nn.SiLU)]


def fuse_decoder_norms(decoder: nn.Module, *, compile: bool = True) -> int:
    """Fuse every norm + SiLU pair of a diffusers `WanDecoder3d` in place. Returns the number of norms fused.

    `compile=False` runs the same fused math eagerly (CPU tests; it saves no time).
    """
    unfuse_decoder_norms(decoder)
    kernel = compiled_rms_norm_silu() if compile else rms_norm_silu
    norms, silus = [], []  # what unfuse_decoder_norms restores
    for owner, owned_norms in _norm_silu_pairs(decoder):
        for norm in owned_norms:
            norm.forward = functools.partial(_fused_forward, norm, kernel)
            norms.append(norm)
        silus.append((owner, owner.nonlinearity))
        owner.nonlinearity = nn.Identity()
    decoder._fused_norms = (norms, silus)
    return len(norms)


def unfuse_decoder_norms(decoder: nn.Module) -> None:
    """Undo `fuse_decoder_norms` (no-op if nothing is fused)."""
    norms, silus = getattr(decoder, "_fused_norms", None) or ([], [])
    for norm in norms:
        del norm.forward  # back to the class's method
    for owner, silu in silus:
        owner.nonlinearity = silu
    decoder._fused_norms = None


def _switch_forward(module: nn.Module, forward, enabled: bool) -> None:
    """Give `module` the instance forward `forward(module, x, ...)` (enabled), or take it back so the class's method
    runs again (disabled; a no-op if none was set)."""
    if enabled:
        module.forward = functools.partial(forward, module)
    elif "forward" in module.__dict__:
        del module.forward


def _implicit_padding_forward(conv: nn.Conv3d, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """`WanCausalConv3d.forward` with the spatial zero padding inside the convolution. x: `[B, C, T, H, W]`."""
    pad_w, _, pad_h, _, pad_t, _ = conv._padding  # (W left, W right, H top, H bottom, T front, T back = 0)
    if cache_x is not None and pad_t > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)  # [B, C, T_cache + T, H, W]
        pad_t -= cache_x.shape[2]
    if pad_t > 0:
        x = F.pad(x, (0, 0, 0, 0, pad_t, 0))  # causal zeros in front (time only)
    return F.conv3d(x, conv.weight, conv.bias, conv.stride, (0, pad_h, pad_w), conv.dilation, conv.groups)


def implicit_padding_convs(decoder: nn.Module, enabled: bool) -> int:
    """Switch every `WanCausalConv3d` of a diffusers `WanDecoder3d` to (or back from) implicit spatial padding.
    Returns the number of convolutions switched."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    convs = [m for m in decoder.modules() if isinstance(m, WanCausalConv3d)]
    for conv in convs:
        symmetric = conv._padding[0] == conv._padding[1] and conv._padding[2] == conv._padding[3]
        if not symmetric or conv._padding[5] != 0:
            raise ValueError(f"implicit padding needs symmetric H/W and front-only T padding, got {conv._padding}")
        _switch_forward(conv, _implicit_padding_forward, enabled)
    return len(convs)


def _native_upsample_forward(upsample: nn.Upsample, x: torch.Tensor) -> torch.Tensor:
    return nn.Upsample.forward(upsample, x)  # diffusers' WanUpsample wraps this in .float() ... .type_as(x)


def native_upsampling(decoder: nn.Module, enabled: bool) -> int:
    """Switch every nearest `WanUpsample` of a diffusers `WanDecoder3d` to (or back from) upsampling in the input's
    dtype. Returns the number of upsamplers switched."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanUpsample

    upsamplers = [m for m in decoder.modules() if isinstance(m, WanUpsample)]
    for upsample in upsamplers:
        if not upsample.mode.startswith("nearest"):
            raise ValueError(f"native upsampling is exact for nearest modes only, got {upsample.mode!r}")
        _switch_forward(upsample, _native_upsample_forward, enabled)
    return len(upsamplers)


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """The four 2x2 kernels of nearest x2 + a 3x3 convolution. weight `[O, C, 3, 3]` -> `[4 O, C, 2, 2]`, ordered
    (row phase a, column phase b, O); taps summed in float32 (or wider), returned in weight's dtype."""
    w = weight.to(torch.promote_types(weight.dtype, torch.float32))

    def fold(k: torch.Tensor, dim: int, phase: int) -> torch.Tensor:  # 3 taps along dim -> 2
        t0, t1, t2 = k.unbind(dim)
        pair = (t0, t1 + t2) if phase == 0 else (t0 + t1, t2)
        return torch.stack(pair, dim)

    kernels = [fold(fold(w, 2, a), 3, b) for a in (0, 1) for b in (0, 1)]  # 4 x [O, C, 2, 2]
    return torch.cat(kernels, dim=0).to(weight.dtype)


def _subpixel_forward(resample: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """nearest x2 + conv 3x3 (`resample` = [WanUpsample, Conv2d]) from the low-resolution x `[N, C, H, W]`."""
    conv = resample[1]
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    key = (conv.weight.data_ptr(), conv.weight._version, conv.weight.dtype, layout)
    if getattr(resample, "_phase_key", None) != key:  # (re)build after a load, a dtype / device move or a new layout
        resample._phase_weight = phase_kernels(conv.weight).contiguous(memory_format=layout)
        resample._phase_bias = None if conv.bias is None else conv.bias.repeat(4)
        resample._phase_key = key
    weight = resample._phase_weight
    n, _, h, w = x.shape
    out_ch = conv.out_channels
    # padded by one on every side, a 2x2 kernel gives [H + 1, W + 1]; phase (a, b) is its window [a:a+H, b:b+W]
    phases = F.conv2d(x, weight, resample._phase_bias, padding=1)  # [N, 4 O, H + 1, W + 1]
    phases = phases.unflatten(1, (2, 2, out_ch))  # [N, 2, 2, O, H + 1, W + 1]
    out = torch.empty((n, out_ch, 2 * h, 2 * w), dtype=phases.dtype, device=phases.device, memory_format=layout)
    grid = out.unflatten(3, (w, 2)).unflatten(2, (h, 2))  # [N, O, H, 2, W, 2] view of out
    for a in (0, 1):
        for b in (0, 1):
            grid[:, :, :, a, :, b] = phases[:, a, b, :, a : a + h, b : b + w]
    return out


def subpixel_upsampling(decoder: nn.Module, enabled: bool) -> int:
    """Switch every nearest x2 + 3x3 convolution of a diffusers `WanDecoder3d` to (or back from) its four phase
    kernels on the low-resolution input. Returns the number of upsamplers switched."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanUpsample

    stacks = [m for m in decoder.modules() if isinstance(m, nn.Sequential) and len(m) == 2
              and isinstance(m[0], WanUpsample) and isinstance(m[1], nn.Conv2d)]
    for stack in stacks:
        upsample, conv = stack
        shape_ok = conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1) \
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        if not (shape_ok and upsample.mode.startswith("nearest") and tuple(upsample.scale_factor) == (2.0, 2.0)):
            raise ValueError(f"subpixel upsampling needs nearest x2 + a 3x3 convolution (padding 1), got "
                             f"{upsample.mode} x{upsample.scale_factor} + {conv}")
        _switch_forward(stack, _subpixel_forward, enabled)
        if not enabled:
            stack.__dict__.pop("_phase_key", None)
    return len(stacks)
