"""TokenTrim's drift quantities (arXiv 2602.00268, method figure): latent summaries, per-token drift, the unstable
set S_t and the drift severity D_t. Small pure functions named for the paper's symbols.

Letters: F latent frames in a batch (block), N spatial tokens per frame, c channels per token, k = |S_t|.
"""

from __future__ import annotations

import torch


def latent_summary(block_tokens: torch.Tensor) -> torch.Tensor:
    """Z_t(i) = (1/F) sum_f z_{t,f}(i): average each spatial token over the batch's frames. [F, N, c] -> [N, c]."""
    return block_tokens.float().mean(dim=0)  # fp32: drift differences of bf16 latents lose too many bits


def token_drift(summary: torch.Tensor, prev_summary: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """d_i between consecutive summaries. [N, c], [N, c] -> [N].

    metric "l2": d_i = ||Z_t(i) - Z_{t-1}(i)||_2 (the paper's). "cosine": d_i = 1 - cos(Z_t(i), Z_{t-1}(i)) (variant).
    """
    if metric == "l2":
        return (summary - prev_summary).norm(dim=-1)
    if metric == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(summary, prev_summary, dim=-1, eps=1e-8)
    raise ValueError(f"drift metric must be one of ['l2', 'cosine'], got {metric!r}")


def num_unstable(p: float, num_tokens: int) -> int:
    """|S_t| = max(1, round(p N)): 156 of 1560 tokens at p = 0.1."""
    return max(1, min(num_tokens, round(p * num_tokens)))


def unstable_set(drift: torch.Tensor, k: int) -> torch.Tensor:
    """S_t: indices of the k largest drifts, largest first. [N] -> [k] long."""
    return torch.topk(drift, k, sorted=True).indices


def severity(drift: torch.Tensor, unstable: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """D_t from S_t: the mean of the top-k drifts (default; the sum gives the same decisions) or their max. -> []."""
    top = drift[unstable]
    if how == "mean":
        return top.mean()
    if how == "max":
        return top.max()
    raise ValueError(f"severity must be one of ['mean', 'max'], got {how!r}")
