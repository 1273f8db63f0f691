"""Causal Wan2.1 text-to-video transformer, as used by Self Forcing and Rolling Forcing.

Architecture of Wan2.1 (arXiv 2503.20314) with the block-causal KV-cache inference of CausVid / Self Forcing
(arXiv 2412.07772, 2506.08009). State-dict keys equal the official `CausalWanModel`'s, so released checkpoints
load strictly. One `forward` = one denoising call; the sampling loop lives in `tokentrim.pipelines`.

Letters: B batch, F latent frames in the call, C latent channels, H, W latent height/width, N = (H/2)(W/2) tokens
per frame, L = F*N query tokens, D model dim, n heads, d = D/n head dim, S text tokens, Y layers.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tokentrim.caches.kv import KVCache
from tokentrim.models.cuda_graphs import GraphedCalls
from tokentrim.models.rope import apply_rope, rope_angles
from tokentrim.models.split_attention import LSE_BACKENDS, can_split, merge_kv_splits, split_kv_attention

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WanConfig:
    """Constructor arguments of `CausalWanModel`; defaults are Wan2.1-T2V-1.3B (`config.json` of the release)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    eps: float = 1e-6


#: Names accepted by `WanSpeedConfig.attention_backends` (torch SDPA kernels).
SDPA_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
#: dynamo's recompile limit while block regions are compiled (graphs per region: call shapes x grad modes x levers).
COMPILED_SHAPES_LIMIT = 32
#: torch >= 2.6 honours the order of a backend list only with `set_priority=True`.
_SDPA_HAS_PRIORITY = "set_priority" in inspect.signature(sdpa_kernel).parameters


@dataclass(frozen=True)
class WanSpeedConfig:
    """Execution knobs of `CausalWanModel` that leave the math unchanged (issue #9; A/B'd by bench/official_side_by_side.py).

    Args:
        attention_backends (`tuple[str, ...]`, default `()`): SDPA kernels for the cached self-attention, in priority
            order, from `SDPA_BACKENDS` ("cudnn" = cuDNN fused attention, fastest on Hopper in our bench; "flash" =
            FlashAttention-2 in torch). `()` = torch's own choice (flash on H100 for bf16).
        compile_blocks (`bool`, default False): `torch.compile` each block's two fixed-shape regions, the part before
            the cached self-attention (norm, modulation, QKV, RMS norms, RoPE) and the part after it (output
            projection, gate, cross-attention, FFN). The attention over the cache, whose length grows block by block,
            stays eager, so the compiled regions see one shape per block size and never recompile for cache growth.
            Fusing the fp32 norm/RoPE elementwise chains is where the gain is (they are ~1/3 of eager block time).
        compile_mode (`str`, default "default"): `torch.compile(mode=...)`; CUDA graphs are not used (the attention
            between the regions has a different shape every block).
        compile_backend (`str`, default "inductor"): "aot_eager" traces without generating kernels (CPU tests).
        compile_fullgraph (`bool`, default False): refuse graph breaks inside a region (tests use True).
        token_major (`bool`, default False): self-attention q, k, v and the KV cache (`new_cache`) in token-major
            memory, [B, L, n, d] (flash-attn's layout, the official code's), handed to SDPA as [B, n, L, d] views.
            RoPE rotates them in place of a transposed copy, and the attention output (laid out like q) reaches the
            output projection without a transpose copy.
        compile_tuning (`bool`, default False): let inductor tune each generated kernel's launch configuration by
            coordinate descent (`coordinate_descent_tuning`; slower compile, same math). The fused norm/RoPE
            reductions over D = 1536 channels are where it matters. Replaces `compile_mode` (torch.compile takes a
            mode or options, not both). Measured on an H200: 1.923 -> 1.919 s per 81-frame video, not worth the
            longer compile, so `backbone.speed` leaves it off (bench lever `tune`).
        gelu_epilogue (`bool`, default False): the FFN's first Linear and its tanh-GELU as one cuBLASLt GEMM with a
            bias + GELU epilogue (`linear_gelu_tanh`) instead of a GEMM and a separate elementwise pass over the
            [L, ffn_dim] activation. CUDA only (elsewhere the same op runs as Linear then GELU); inference only
            (under autograd the FFN runs as Linear, GELU, Linear).
        cuda_graphs (`bool`, default False): replay CUDA graphs of repeated cached calls (`cuda_graphs.GraphedCalls`:
            a Self Forcing block's denoising steps, and every video's same sequence of blocks) instead of launching
            their kernels one by one from Python. CUDA and `KVCache` calls without autograd only; the rest runs
            eagerly.
        attention_kv_splits (`int`, default 1): run the cached self-attention with its keys split into this many
            equal chunks, as batch entries of one fused-attention call, merged exactly by their log-sum-exps
            (`split_attention`). More, shorter thread blocks fill the GPU's last wave: 4,680 queries x 12 heads are
            3.4 waves on 132 SMs. Needs `token_major` and one of `split_attention.LSE_BACKENDS` in
            `attention_backends` (or CPU); applies without autograd to batch-1 calls whose key length divides evenly,
            the rest run as one call.
    """

    attention_backends: tuple[str, ...] = ()
    compile_blocks: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    compile_fullgraph: bool = False
    compile_tuning: bool = False
    token_major: bool = False
    gelu_epilogue: bool = False
    cuda_graphs: bool = False
    attention_kv_splits: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_backends", tuple(str(b) for b in self.attention_backends))
        unknown = [b for b in self.attention_backends if b not in SDPA_BACKENDS]
        if unknown:
            raise ValueError(f"speed.attention_backends must be names from {sorted(SDPA_BACKENDS)}, got {unknown}")
        if len(set(self.attention_backends)) != len(self.attention_backends):
            raise ValueError(f"speed.attention_backends must not repeat a backend, got {list(self.attention_backends)}")
        if isinstance(self.attention_kv_splits, bool) or not isinstance(self.attention_kv_splits, int) \
                or self.attention_kv_splits < 1:
            raise ValueError(f"speed.attention_kv_splits must be an integer >= 1, got {self.attention_kv_splits!r}")
        if self.attention_kv_splits > 1 and not self.token_major:
            raise ValueError(f"speed.attention_kv_splits={self.attention_kv_splits} needs speed.token_major "
                             f"(each key chunk is a view of token-major memory)")

    @property
    def lse_backend(self) -> str | None:
        """The kernel of the split-KV path: the first of `attention_backends` that returns a log-sum-exp."""
        return next((b for b in self.attention_backends if b in LSE_BACKENDS), None)


# ---------------------------------------------------------------------------------------------- embeddings
def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: [cos(t w), sin(t w)], w_i = 10000^(-i/(dim/2)), in float64. t: [M] -> [M, dim]."""
    half = dim // 2
    t = t.to(torch.float64)
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)  # [half]
    angles = torch.outer(t, omega)  # [M, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


# ---------------------------------------------------------------------------------------------- layers
@torch.library.custom_op("tokentrim::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x @ weight.T + bias): x [..., K], weight [M, K], bias [M] -> [..., M].

    On CUDA one cuBLASLt GEMM whose epilogue adds the bias and applies the tanh GELU to the fp32 accumulator
    (`torch._addmm_activation`); elsewhere Linear then GELU. A custom op so that `torch.compile` keeps the call as
    one opaque kernel (inductor would otherwise decompose it back into a GEMM and an elementwise pass).
    """
    rows = x.reshape(-1, x.shape[-1])  # [R, K]
    if x.is_cuda:
        out = torch._addmm_activation(bias, rows, weight.t(), use_gelu=True)  # [R, M]
    else:
        out = F.gelu(F.linear(rows, weight, bias), approximate="tanh")
    return out.view(*x.shape[:-1], weight.shape[0])


@linear_gelu_tanh.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class WanRMSNorm(nn.Module):
    """RMS norm over the full model dim (across heads), computed in fp32 and cast back, then scaled."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (why: bf16 statistics over 1536 channels are too coarse)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps=eps)
        self.norm_k = WanRMSNorm(dim, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]. With a cache, the block attends to the committed entries and itself;
        without, to the whole call under `attn_mask` ([L, L] bool, True = attend; None = bidirectional)."""
        q, k, v = self.qkv(x, cos, sin)
        if cache is not None:
            k, v = cache.stage(layer, k, v)  # -> [B, n, length + L, d]
        return self.project_out(self.attend(q, k, v, attn_mask))

    # set by `CausalWanModel.set_speed`
    sdpa_backends: tuple[SDPBackend, ...] = ()
    token_major: bool = False
    kv_splits: int = 1
    lse_backend: str | None = None
    merge_splits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = staticmethod(merge_kv_splits)
    # which path `attend` took, counted per call in Python (benches record them; CUDA-graph replays run no Python)
    split_kv_calls: int = 0
    one_call_calls: int = 0

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: [B, L, D] -> rotated q, rotated k, v: [B, n, L, d] (token-major: views of [B, L, n, d] memory)."""
        batch_size, num_tokens, _ = x.shape
        heads = (batch_size, num_tokens, self.num_heads, self.head_dim)
        q = self.norm_q(self.q(x)).view(heads)  # [B, L, D] -> [B, L, n, d]
        k = self.norm_k(self.k(x)).view(heads)  # [B, L, n, d]
        v = self.v(x).view(heads)  # [B, L, n, d]
        if self.token_major:  # rotate in [B, L, n, d] memory (cos/sin broadcast over heads), hand over views
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [L, 1, d/2]
            return apply_rope(q, cos, sin).transpose(1, 2), apply_rope(k, cos, sin).transpose(1, 2), v.transpose(1, 2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # -> [B, n, L, d]
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """SDPA of q [B, n, L, d] over k, v [B, n, K, d] -> [B, n, L, d], on the configured kernels (split-KV where
        `kv_splits` > 1 applies: see `WanSpeedConfig.attention_kv_splits`)."""
        if (self.kv_splits > 1 and attn_mask is None and not torch.is_grad_enabled()
                and (self.lse_backend is not None or q.device.type == "cpu") and can_split(q, k, v, self.kv_splits)):
            try:
                out = split_kv_attention(q, k, v, self.kv_splits, self.lse_backend or "", self.merge_splits)
                self.split_kv_calls += 1
                return out
            except RuntimeError as err:  # a kernel that refuses these shapes: one call from now on, as before
                logger.warning("split-KV attention failed (%s); this layer runs its attention as one call", err)
                self.kv_splits = 1
        self.one_call_calls += 1
        if not self.sdpa_backends:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        options = {"set_priority": True} if _SDPA_HAS_PRIORITY else {}
        with sdpa_kernel(list(self.sdpa_backends), **options):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        return self.o(out.transpose(1, 2).flatten(2))  # [B, n, L, d] -> [B, L, D]


class CrossAttention(nn.Module):
    """Text cross-attention (no RoPE, no gating). Its K/V depend only on the prompt: see `context_kv`."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps=eps)
        self.norm_k = WanRMSNorm(dim, eps=eps)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context: [B, S, D] -> K, V: [B, n, S, d]."""
        batch_size, num_text, _ = context.shape
        heads = (batch_size, num_text, self.num_heads, self.head_dim)
        k = self.norm_k(self.k(context)).view(heads).transpose(1, 2)
        v = self.v(context).view(heads).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch_size, num_tokens, _ = x.shape
        q = self.norm_q(self.q(x)).view(batch_size, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, *kv)  # [B, n, L, d]
        return self.o(out.transpose(1, 2).flatten(2))


class CausalWanBlock(nn.Module):
    # compiled region functions installed by `set_speed`; None = the eager methods
    _before_fn: Callable | None = None
    _after_fn: Callable | None = None

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float):
        super().__init__()
        self.norm1 = WanLayerNorm(dim, eps)
        self.self_attn = CausalSelfAttention(dim, num_heads, eps)
        self.norm3 = WanLayerNorm(dim, eps, elementwise_affine=True)  # Wan's cross_attn_norm=True
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm2 = WanLayerNorm(dim, eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.gelu_epilogue = False  # set by `set_speed`

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        context_kv: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
        layer: int,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, L, D]; e: [B, F, 6, D] per-frame modulation (broadcast over each frame's N tokens).

        Runs as [region 1] -> cached self-attention -> [region 2]; the regions are `torch.compile`d when the model's
        `WanSpeedConfig.compile_blocks` is on (same math, fused kernels)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation_terms(e)
        # 1. Self-attention
        q, k, v = (self._before_fn or self.before_attention)(x, shift1, scale1, cos, sin)
        if cache is not None:
            k, v = cache.stage(layer, k, v)  # -> [B, n, length + L, d]
        attn = self.self_attn.attend(q, k, v, attn_mask)  # [B, n, L, d]
        # 2. Cross-attention and 3. feed-forward
        return (self._after_fn or self.after_attention)(x, attn, gate1, shift2, scale2, gate2, context_kv)

    def modulation_terms(self, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """e: [B, F, 6, D] -> shift1, scale1, gate1, shift2, scale2, gate2: 6 x [B, F, 1, D] (views of one sum, so
        every caller hands region 1 the same strides and it never recompiles)."""
        return (self.modulation.unsqueeze(1) + e).chunk(6, dim=2)

    def stage_kv(self, x, e, cos, sin, cache: KVCache, layer: int) -> None:
        """Region 1 and `cache.stage` only: the block's K/V for the cache, without its attention and the rest."""
        shift1, scale1 = self.modulation_terms(e)[:2]
        _, k, v = (self._before_fn or self.before_attention)(x, shift1, scale1, cos, sin)
        cache.stage(layer, k, v)

    def set_speed(self, speed: WanSpeedConfig) -> None:
        """Install eager or compiled region functions (compiled wrappers are built once per setting and reused)."""
        self.self_attn.sdpa_backends = tuple(SDPA_BACKENDS[b] for b in speed.attention_backends)
        self.self_attn.token_major = speed.token_major
        self.self_attn.kv_splits = speed.attention_kv_splits
        self.self_attn.lse_backend = speed.lse_backend
        self.gelu_epilogue = speed.gelu_epilogue
        if not speed.compile_blocks:
            self._before_fn = self._after_fn = None
            self.self_attn.merge_splits = merge_kv_splits
            return
        key = (speed.compile_mode, speed.compile_backend, speed.compile_fullgraph, speed.compile_tuning)
        # one graph per call shape and grad mode: Rolling Forcing's windows of 1..5 blocks (the refresh = 1 block)
        # x FlowMo's grad-enabled ramp-up calls are up to 10 per region, past dynamo's default of 8 (eager beyond)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILED_SHAPES_LIMIT)
        compiled = self.__dict__.setdefault("_compiled_regions", {})
        if key not in compiled:
            options = dict(backend=speed.compile_backend, fullgraph=speed.compile_fullgraph, dynamic=False)
            if speed.compile_tuning:
                options["options"] = {"coordinate_descent_tuning": True}
            else:
                options["mode"] = speed.compile_mode
            compiled[key] = (torch.compile(self.before_attention, **options),
                             torch.compile(self.after_attention, **options),
                             torch.compile(merge_kv_splits, **options))  # the split-KV merge: one fused kernel
        self._before_fn, self._after_fn, self.self_attn.merge_splits = compiled[key]

    def before_attention(self, x, shift1, scale1, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Region 1: modulated norm1 then QKV with RMS norms and RoPE. x: [B, L, D] -> q, k, v [B, n, L, d]."""
        num_frames = shift1.shape[1]
        h = self.norm1(x).unflatten(1, (num_frames, -1))  # [B, L, D] -> [B, F, N, D]
        h = (h * (1 + scale1) + shift1).flatten(1, 2)  # -> [B, L, D]
        return self.self_attn.qkv(h, cos, sin)

    def after_attention(self, x, attn, gate1, shift2, scale2, gate2, context_kv) -> torch.Tensor:
        """Region 2: output projection and gated residual, cross-attention, modulated FFN. -> [B, L, D]."""
        num_frames = gate1.shape[1]

        def per_frame(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, F, N, D]
            return t.unflatten(1, (num_frames, -1))

        y = self.self_attn.project_out(attn)  # [B, n, L, d] -> [B, L, D]
        x = x + (per_frame(y) * gate1).flatten(1, 2)
        x = x + self.cross_attn(self.norm3(x), context_kv)
        y = self.feed_forward((per_frame(self.norm2(x)) * (1 + scale2) + shift2).flatten(1, 2))
        return x + (per_frame(y) * gate2).flatten(1, 2)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Wan's FFN, Linear -> tanh-GELU -> Linear: [B, L, D] -> [B, L, D]; the first two as one GEMM when
        `gelu_epilogue` is on and no gradient is recorded (the fused op is inference-only: it has no backward)."""
        up, act, down = self.ffn
        if self.gelu_epilogue and not torch.is_grad_enabled():
            return down(linear_gelu_tanh(x, up.weight, up.bias))  # [B, L, ffn_dim] -> [B, L, D]
        return down(act(up(x)))


class CausalHead(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D]; e: [B, F, 1, D] -> [B, F, N, prod(patch)*out_dim]."""
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)  # 2 x [B, F, 1, D]
        return self.head(self.norm(x).unflatten(1, (e.shape[1], -1)) * (1 + scale) + shift)


# ---------------------------------------------------------------------------------------------- model
class CausalWanModel(nn.Module):
    """Block-causal Wan2.1 DiT; predicts the flow v = noise - x0 for a block of latent frames.

    Args: see `WanConfig` (every field is a keyword argument here).
    """

    def __init__(self, *, speed: WanSpeedConfig | dict | None = None, **kwargs):
        super().__init__()
        self.config = cfg = WanConfig(**{k: tuple(v) if k == "patch_size" else v for k, v in kwargs.items()})
        if cfg.dim % cfg.num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={cfg.dim}, num_heads={cfg.num_heads}")
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(
            CausalWanBlock(cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.eps) for _ in range(cfg.num_layers)
        )
        self.head = CausalHead(cfg.dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.speed = WanSpeedConfig()
        self._graphs: GraphedCalls | None = None
        if speed is not None:
            self.set_speed(speed)

    def set_speed(self, speed: WanSpeedConfig | dict) -> None:
        """Switch execution levers (attention kernels, compiled block regions) in place; weights are untouched,
        so a benchmark can A/B them on one model. `speed` may be a `WanSpeedConfig` or its fields as a dict."""
        if isinstance(speed, dict):
            speed = WanSpeedConfig(**speed)
        if not isinstance(speed, WanSpeedConfig):
            raise TypeError(f"speed must be a WanSpeedConfig or dict, got {type(speed).__name__}")
        for block in self.blocks:
            block.set_speed(speed)
        self.speed = speed
        # one set of graphs per lever setting (graphs replay the kernels of the levers they were captured under), kept
        # across switches so that a benchmark alternating settings replays them
        graph_sets = self.__dict__.setdefault("_graph_sets", {})
        self._graphs = graph_sets.setdefault(speed, GraphedCalls()) if speed.cuda_graphs else None
        logger.debug("CausalWanModel speed levers: %s", speed)

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.num_heads

    def tokens_per_frame(self, height: int, width: int) -> int:
        _, ph, pw = self.config.patch_size
        return (height // ph) * (width // pw)

    def new_cache(
        self, *, height: int, width: int, max_frames: int, block_frames: int, sink_frames: int = 0, batch_size: int = 1
    ) -> KVCache:
        """An empty self-attention cache sized for latents of (height, width)."""
        param = self.patch_embedding.weight
        return KVCache(
            num_layers=self.config.num_layers,
            num_heads=self.config.num_heads,
            head_dim=self.head_dim,
            tokens_per_frame=self.tokens_per_frame(height, width),
            max_frames=max_frames,
            block_frames=block_frames,
            sink_frames=sink_frames,
            batch_size=batch_size,
            device=param.device,
            dtype=param.dtype,
            token_major=self.speed.token_major,
        )

    def encode_context(self, text_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention K/V of a prompt, computed once per prompt.

        Args:
            text_embeds: `[B, S, text_dim]` encoder states, rows past the prompt zeroed; padded with zeros to text_len.
        Returns:
            Y pairs of `[B, n, text_len, d]`.
        """
        batch_size, num_text, text_dim = text_embeds.shape
        if num_text > self.config.text_len:
            raise ValueError(f"text_embeds has {num_text} tokens, more than text_len={self.config.text_len}")
        padded = F.pad(text_embeds, (0, 0, 0, self.config.text_len - num_text))  # [B, text_len, text_dim]
        context = self.text_embedding(padded.to(self.patch_embedding.weight.dtype))  # [B, text_len, D]
        return [block.cross_attn.context_kv(context) for block in self.blocks]

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context_kv: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        start_frame: int = 0,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
        kv_only: bool = False,
    ) -> torch.Tensor | None:
        """One denoising call on a block of latent frames.

        Args:
            latents: `[B, F, C, H, W]` noisy latents of the block.
            timesteps: `[B, F]` per-frame flow timesteps in [0, 1000].
            context_kv: from `encode_context`.
            start_frame: absolute latent-frame index of the block's first frame (temporal RoPE offset).
            cache: committed context; the caller brackets the call with `cache.begin_block` / `cache.commit`.
                `None` = the call attends only to itself, under `attn_mask`.
            attn_mask: `[L, L]` bool (True = attend), for training on whole clips with `block_causal_mask`;
                only without a cache.
            kv_only: only stage the block's K/V in `cache` (Self Forcing's cache refresh, whose prediction is
                discarded): the last block stops after staging its K/V, and the head is skipped. Returns None.
        Returns:
            flow prediction `[B, F, C, H, W]` (Wan convention v = noise - x0), or None with `kv_only`.
        """
        if (self._graphs is not None and isinstance(cache, KVCache) and attn_mask is None and latents.is_cuda
                and not torch.is_grad_enabled()):
            first, last = self.patch_embedding.weight, self.head.head.weight  # moved weights: new graphs
            return self._graphs(self._forward, latents, timesteps, context_kv, start_frame=start_frame, cache=cache,
                                kv_only=kv_only, weights=(first.data_ptr(), last.data_ptr(), first.dtype))
        return self._forward(latents, timesteps, context_kv, start_frame=start_frame, cache=cache,
                             attn_mask=attn_mask, kv_only=kv_only)

    def _forward(self, latents, timesteps, context_kv, *, start_frame=0, cache=None, attn_mask=None, kv_only=False):
        """`forward` without the CUDA-graph dispatch."""
        batch_size, num_frames, channels, height, width = latents.shape
        if attn_mask is not None and cache is not None:
            raise ValueError("attn_mask is for cache-free (training) calls; the cache already defines what is attended")
        if kv_only and cache is None:
            raise ValueError("kv_only stages K/V in a cache; got cache=None")
        pt, ph, pw = self.config.patch_size
        grid_h, grid_w = height // ph, width // pw
        dtype = self.patch_embedding.weight.dtype

        # 1. Patchify: [B, F, C, H, W] -> [B, D, F, h, w] -> [B, L, D], tokens (f, h, w) row-major
        x = self.patch_embedding(latents.to(dtype).transpose(1, 2))
        x = x.flatten(2).transpose(1, 2)

        # 2. Per-frame time embedding: [B, F] -> e [B*F, D] -> e0 [B, F, 6, D]
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, timesteps.flatten()).to(dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.config.dim)).unflatten(0, (batch_size, num_frames))

        # 3. RoPE at absolute frame positions
        frames = torch.arange(start_frame, start_frame + num_frames // pt, device=latents.device)
        angles = rope_angles(self.head_dim, frames, grid_h, grid_w)  # [L, d/2]
        cos, sin = angles.cos().float(), angles.sin().float()

        # 4. Blocks (with kv_only, the last one only stages its K/V: nothing after it is read)
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            if kv_only and layer == last:
                block.stage_kv(x, e0, cos, sin, cache, layer)
                return None
            x = block(x, e0, cos, sin, context_kv[layer], cache, layer, attn_mask)

        # 5. Head and unpatchify: [B, F, N, pt*ph*pw*C] -> [B, F, C, H, W]
        out = self.head(x, e.unflatten(0, (batch_size, num_frames)).unsqueeze(2))
        return unpatchify(out, (grid_h, grid_w), self.config.patch_size, self.config.out_dim)


def block_causal_mask(num_frames: int, tokens_per_frame: int, block_frames: int, device=None) -> torch.Tensor:
    """Training mask of block-causal attention: a token sees every token of its own block and of earlier blocks.

    Returns `[L, L]` bool with L = num_frames * tokens_per_frame (True = attend).
    """
    block_of_frame = torch.arange(num_frames, device=device) // block_frames  # [F]
    block_of_token = block_of_frame.repeat_interleave(tokens_per_frame)  # [L]
    return block_of_token[None, :] <= block_of_token[:, None]  # key block <= query block


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int, int], channels: int) -> torch.Tensor:
    """[B, F, N, pt*ph*pw*C] -> [B, F*pt, C, h*ph, w*pw]; channel order (p, q, r, c) as Wan's einsum 'fhwpqrc->cfphqwr'."""
    batch_size, num_frames = tokens.shape[:2]
    pt, ph, pw = patch_size
    grid_h, grid_w = grid
    x = tokens.reshape(batch_size, num_frames, grid_h, grid_w, pt, ph, pw, channels)  # [B, F, h, w, p, q, r, C]
    x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # -> [B, F, p, C, h, q, w, r]
    return x.reshape(batch_size, num_frames * pt, channels, grid_h * ph, grid_w * pw)


def patchify_tokens(latents: torch.Tensor, patch_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """Latent frames on the DiT token grid, for drift summaries: [F, C, H, W] -> [F, N, C*ph*pw].

    Token i of a frame is the DiT token at the same cache position (row-major over (h, w)).
    """
    num_frames, channels, height, width = latents.shape
    ph, pw = patch_size
    x = latents.reshape(num_frames, channels, height // ph, ph, width // pw, pw)  # [F, C, h, q, w, r]
    x = x.permute(0, 2, 4, 3, 5, 1)  # -> [F, h, w, q, r, C]
    return x.reshape(num_frames, (height // ph) * (width // pw), ph * pw * channels)
