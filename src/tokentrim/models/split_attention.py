"""Split-KV attention: the keys split into S equal chunks that run as S batch entries of one fused-attention call,
then merged exactly by their log-sum-exps (issue #9, `WanSpeedConfig.attention_kv_splits`).

Why: a fused attention kernel runs one thread block per (batch, head, 128-query tile). A Self Forcing block has
4,680 queries = 37 tiles x 12 heads = 444 thread blocks, 3.4 waves on an H200's 132 SMs: the 4th wave runs 40 %
full, and every thread block walks the whole key length. Splitting the keys in 2 gives 888 shorter thread blocks,
6.7 waves, and the tail shrinks to 5 % of the work. On an H200 (`bench/results/attention_kv_split_NVIDIA_H200_*`), cuDNN
at the 21-frame cache went from 494 to 556 TFLOP/s, and one 81-frame video's self-attention from 1.134 to 1.020 s;
3 and 4 chunks gained less (1.078, 1.050 s).

The merge is exact: with o_s, l_s the softmax-weighted values and log-sum-exp of chunk s,
    o = sum_s exp(l_s - l) o_s,   l = log sum_s exp(l_s),
computed in float32. Letters: S splits, n heads, Lq queries, Lk keys, d head dim.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LSE_BACKENDS", "can_split", "merge_kv_splits", "sdpa_with_lse", "split_kv_attention"]

#: attention kernels that return their log-sum-exp (first match in `WanSpeedConfig.attention_backends` is used).
LSE_BACKENDS = ("cudnn", "flash", "efficient")


def can_split(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int) -> bool:
    """Whether `split_kv_attention` applies: batch 1, Lk divisible by `splits`, and k, v in token-major memory
    (`[1, Lk, n, d]` rows, so each key chunk is a view). q: [1, n, Lq, d], k, v: [1, n, Lk, d]."""
    batch, heads, length, dim = k.shape

    def token_major(t: torch.Tensor) -> bool:
        return t.shape == k.shape and t.stride(3) == 1 and t.stride(1) == dim and t.stride(2) == heads * dim

    return splits > 1 and batch == 1 and q.shape[0] == 1 and length % splits == 0 and token_major(k) and token_major(v)


def sdpa_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention that also returns the log-sum-exp: q [B, n, Lq, d], k, v [B, n, Lk, d] -> out [B, n, Lq, d],
    lse [B, n, Lq] (float32). On CPU, torch's flash kernel for CPU whatever `backend` says (tests)."""
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    elif backend == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]
    elif backend == "flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    elif backend == "efficient":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
    else:
        raise ValueError(f"sdpa_with_lse: backend must be one of {LSE_BACKENDS}, got {backend!r}")
    return out, lse.reshape(out.shape[:3])  # cuDNN returns [B, n, Lq, 1]


def merge_kv_splits(out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """out: [S, n, Lq, d] attention over each key chunk, lse: [S, n, Lq] -> [1, n, Lq, d], the attention over all
    keys, laid out like token-major q ([1, Lq, n, d] memory)."""
    lse = lse.float()
    weights = torch.exp(lse - lse.amax(dim=0, keepdim=True))  # [S, n, Lq], the largest chunk's weight is 1
    merged = (out.float() * weights.unsqueeze(-1)).sum(dim=0) / weights.sum(dim=0).unsqueeze(-1)  # [n, Lq, d]
    return merged.to(out.dtype).transpose(0, 1).contiguous().transpose(0, 1).unsqueeze(0)  # [Lq, n, d] memory


def split_kv_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    splits: int,
    backend: str,
    merge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = merge_kv_splits,
) -> torch.Tensor:
    """Attention of q [1, n, Lq, d] over k, v [1, n, Lk, d] (token-major views, `can_split`) as `splits` key chunks
    in one call -> [1, n, Lq, d]. `merge` is `merge_kv_splits` or a compiled copy of it."""
    _, heads, num_queries, dim = q.shape
    chunk = k.shape[2] // splits

    def chunks(t: torch.Tensor) -> torch.Tensor:  # [1, n, Lk, d] view of [1, Lk, n, d] -> [S, n, Lk/S, d] view
        return t.transpose(1, 2).view(splits, chunk, heads, dim).transpose(1, 2)

    out, lse = sdpa_with_lse(q.expand(splits, heads, num_queries, dim), chunks(k), chunks(v), backend)
    return merge(out, lse)
