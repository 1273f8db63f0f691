"""Offline text encoder of the embedded TinyWorld model: the grammar's word tokenizer + a small transformer.

The real backbone encodes prompts with umT5-XXL (4096-d states, 512 tokens). TinyWorld prompts come from a fixed
grammar of 35 words (`tinyworld.prompts.VOCABULARY`), so a word embedding and two pre-norm transformer layers trained
jointly with the DiT (through `CausalWanModel.encode_context`) are enough; nothing is downloaded.

Output contract (same as the umT5 path): `[B, S, text_dim]` states with the rows past the prompt zeroed, S = the
tokenizer's `max_length`; the DiT pads to its `text_len` with zeros.

Letters: B prompts, S tokens, D = dim, n heads, d = D / n.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tokentrim.tinyworld.prompts import MAX_LENGTH, VOCABULARY, Tokenizer

logger = logging.getLogger(__name__)


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer (self-attention over real tokens only, GELU MLP). Plain SDPA, no fast paths, so
    training and inference run the same arithmetic."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, S, D]; key_mask: [B, S] bool (True = real token)."""
        batch_size, num_tokens, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch_size, num_tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, S, 3, n, d] -> 3 x [B, n, S, d]
        attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, S]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, n, S, d]
        x = x + self.proj(out.transpose(1, 2).reshape(batch_size, num_tokens, dim))  # [B, n, S, d] -> [B, S, D]
        return x + self.ffn(self.norm2(x))


class TinyTextEncoder(nn.Module):
    """Word embedding + learned positions + pre-norm transformer layers over TinyWorld prompts.

    Args:
        dim: state width (= the DiT's `text_dim`).
        num_layers: transformer layers.
        num_heads: attention heads.
        ffn_dim: MLP hidden width.
        max_length: tokens per prompt S (the tokenizer pads/limits to it; 40 >= the longest prompt, 36).
    """

    def __init__(self, *, dim: int = 64, num_layers: int = 2, num_heads: int = 4, ffn_dim: int = 256,
                 max_length: int = MAX_LENGTH):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"text_encoder.dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        self.config = {"dim": dim, "num_layers": num_layers, "num_heads": num_heads, "ffn_dim": ffn_dim,
                       "max_length": max_length}
        self.tokenizer = Tokenizer(max_length=max_length)
        self.token_embedding = nn.Embedding(len(VOCABULARY), dim)
        self.position_embedding = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.layers = nn.ModuleList(_EncoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    @property
    def device(self) -> torch.device:
        return self.position_embedding.device

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: [B, S] (mask True on real tokens) -> states [B, S, dim], zero on padding rows."""
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]  # [B, S, D]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)  # [B, S, D]

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> `[B, S, dim]` text states (ValueError on words outside the grammar's vocabulary)."""
        ids, mask = self.tokenizer(list(prompts))  # [B, S], [B, S]
        return self.forward(ids.to(self.device), mask.to(self.device))
