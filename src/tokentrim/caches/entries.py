"""Committed K/V entries labelled by (frame, token): the storage both KV caches share (`kv.KVCache` for Self Forcing,
`rolling.RollingKVCache` for Rolling Forcing).

Letters: Y layers, B batch, n heads, d head dim, T capacity in tokens, N tokens per latent frame.

Layout: one preallocated buffer per K and V of shape [Y, B, n, T, d]; the first `length` entries hold committed
(clean) tokens, in commit order. The buffers are indexed as [Y, B, n, T, d] whatever their memory order: head-major
(each head's tokens contiguous, the default) or token-major (`token_major=True`: memory [Y, B, T, n, d], flash-attn's
layout, so a slice [:length] handed to SDPA has the strides of the official code's cache). Each entry carries its
absolute latent-frame index (`entry_frame`) and its spatial token index inside that frame (`entry_token`), so pruning
and eviction are expressed in (frame, token) positions rather than buffer offsets, and stay consistent with each
other.

Pruning (TokenTrim) removes entries physically: the kept entries are gathered to the front with one index_select per
layer (so the temporary is one layer's entries, not the whole cache), so fused attention kernels need no mask.
Removal and a -inf logit are the same under softmax; zeroing K/V would not be (a zero key still takes softmax weight).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from tokentrim.caches.protocol import Pruned


@dataclass
class CacheSnapshot:
    """What `KVCache.snapshot` returns: enough to undo pruning/commits of one block."""

    k: torch.Tensor  # [Y, B, n, length, d]
    v: torch.Tensor  # [Y, B, n, length, d]
    entry_frame: torch.Tensor  # [length]
    entry_token: torch.Tensor  # [length]
    length: int
    frames: list[int]
    frame_len: list[int]


class CachedEntries(ABC):
    """Committed K/V entries labelled by (frame, token), shared by `KVCache` and Rolling Forcing's `RollingKVCache`.

    Owns the buffers `k`, `v` `[Y, B, n, T, d]`, the per-entry labels, the host-side per-frame counts, and the
    operations that only depend on them: pruning (physical removal), frame-granular eviction of the oldest non-sink
    frames, snapshot / restore. Subclasses define how a model call stages and commits its block (`discard_staged`).

    Args:
        num_layers (`int`), num_heads (`int`), head_dim (`int`): Y, n, d.
        tokens_per_frame (`int`): N.
        capacity_frames (`int`): frames the buffer holds at most.
        sink_frames (`int`): the first `sink_frames` latent frames of the video are never evicted (nor pruned by default).
        batch_size (`int`), device, dtype: buffer placement.
        token_major (`bool`, default False): memory order [Y, B, T, n, d] instead of [Y, B, n, T, d] (same indexing).
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        capacity_frames: int,
        sink_frames: int,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        token_major: bool = False,
    ):
        self.num_layers = num_layers
        self.head_dim = head_dim
        self.tokens_per_frame = tokens_per_frame
        self.sink_frames = sink_frames
        self.capacity = capacity_frames * tokens_per_frame
        self.token_major = token_major
        self.k = self._buffer(num_layers, batch_size, num_heads, head_dim, device, dtype)  # [Y, B, n, T, d]
        self.v = self._buffer(num_layers, batch_size, num_heads, head_dim, device, dtype)
        self.entry_frame = torch.full((self.capacity,), -1, dtype=torch.long, device=device)
        self.entry_token = torch.full((self.capacity,), -1, dtype=torch.long, device=device)
        self.length = 0  # committed entries
        # Host-side bookkeeping (no device sync on the hot path): committed frames, oldest first, and how many
        # entries each still holds (fewer than N after pruning). Entries are frame-major in this order.
        self.frames: list[int] = []
        self.frame_len: list[int] = []

    def _buffer(self, num_layers, batch_size, num_heads, head_dim, device, dtype) -> torch.Tensor:
        """A zeroed [Y, B, n, T, d] buffer; token-major = a transposed view of a contiguous [Y, B, T, n, d]."""
        if self.token_major:
            shape = (num_layers, batch_size, self.capacity, num_heads, head_dim)
            return torch.zeros(shape, device=device, dtype=dtype).transpose(2, 3)
        return torch.zeros((num_layers, batch_size, num_heads, self.capacity, head_dim), device=device, dtype=dtype)

    @abstractmethod
    def discard_staged(self) -> None:
        """Forget whatever the current call staged."""

    # ---------------------------------------------------------------- queries
    def committed_frames(self) -> list[int]:
        """Absolute latent-frame indices held by the cache, oldest first (a frame stays listed after pruning)."""
        return list(self.frames)

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame, token) of every committed entry: two `[length]` tensors."""
        return self.entry_frame[: self.length], self.entry_token[: self.length]

    # ---------------------------------------------------------------- pruning / eviction
    def prune(self, tokens: torch.Tensor, frames: list[int] | None = None) -> int:
        """Remove spatial positions `tokens` from the given cached frames (default: every non-sink frame).

        Args:
            tokens: `[k]` long, spatial token indices in [0, N).
            frames: absolute frame indices to prune in; `None` = all committed frames except sink frames.
        Returns:
            number of entries removed (see `prune_positions` for the token count too).
        """
        if frames is None:
            frames = [f for f in self.committed_frames() if f >= self.sink_frames]
        return self.prune_positions(tokens, frames).entries

    def prune_positions(self, tokens: torch.Tensor, frames: list[int]) -> Pruned:
        """Remove spatial positions `tokens` (`[k]` long, in [0, N)) from the cached `frames` (absolute indices).

        Returns the entries removed and the distinct token positions among them (one host sync for the latter;
        pruning happens only on a trigger).
        """
        if self.staged:
            raise RuntimeError("prune() while a block is staged; call discard_staged() first")
        device = self.entry_frame.device
        entry_frame, entry_token = self.positions()
        token_hit = torch.zeros(self.tokens_per_frame, dtype=torch.bool, device=device)
        token_hit[tokens.to(device)] = True
        frame_hit = torch.isin(entry_frame, torch.as_tensor(frames, dtype=torch.long, device=device))
        drop = frame_hit & token_hit[entry_token]  # [length]
        num_tokens = int(torch.unique(entry_token[drop]).numel())
        return Pruned(entries=self._keep_entries(~drop), tokens=num_tokens)

    def _evict_oldest(self, num_frames: int) -> None:
        """Drop the `num_frames` oldest non-sink frames: one contiguous shift of the entries after them."""
        first = next(i for i, f in enumerate(self.frames) if f >= self.sink_frames)  # first evictable frame
        start = sum(self.frame_len[:first])  # entries of the sink frames stay in place
        evicted = sum(self.frame_len[first : first + num_frames])
        rest = self.length - start - evicted
        for buf in (self.k, self.v):
            for layer in range(self.num_layers):  # per layer: the overlap clone is 1/Y of the cache, not all of it
                # tokens are dim 2 of [B, n, T, d]: [start + evicted, length) -> [start, start + rest); clone: overlap
                buf[layer, :, :, start : start + rest] = buf[layer, :, :, start + evicted : self.length].clone()
        for buf in (self.entry_frame, self.entry_token):
            buf[start : start + rest] = buf[start + evicted : self.length].clone()  # [T]
        self.entry_frame[start + rest : self.length] = -1
        self.entry_token[start + rest : self.length] = -1
        self.length = start + rest
        del self.frames[first : first + num_frames]
        del self.frame_len[first : first + num_frames]

    def _keep_entries(self, keep: torch.Tensor) -> int:
        """Gather kept entries to the front of every layer's buffer (one index_select per layer for K and V)."""
        keep_idx = keep.nonzero().squeeze(1)  # [kept]
        kept = keep_idx.numel()
        removed = self.length - kept
        if removed == 0:
            return 0
        for buf in (self.k, self.v):
            for layer in range(self.num_layers):  # per layer: the gathered temporary is 1/Y of the cache
                # [B, n, length, d] -> [B, n, kept, d]
                buf[layer, :, :, :kept] = buf[layer, :, :, : self.length].index_select(2, keep_idx)
        self.entry_frame[:kept] = self.entry_frame[: self.length][keep_idx]
        self.entry_token[:kept] = self.entry_token[: self.length][keep_idx]
        self.entry_frame[kept : self.length] = -1
        self.entry_token[kept : self.length] = -1
        self.length = kept
        # recount entries per frame (one host sync; pruning happens only on a trigger). Frames are increasing.
        frames = torch.as_tensor(self.frames, dtype=torch.long, device=keep.device)  # [num_frames]
        slot = torch.searchsorted(frames, self.entry_frame[:kept])  # [kept] -> index into self.frames
        self.frame_len = torch.bincount(slot, minlength=len(self.frames)).tolist()
        return removed

    # ---------------------------------------------------------------- snapshot / restore
    def snapshot(self) -> CacheSnapshot:
        """Copy of the committed state (staged block excluded)."""
        end = self.length
        return CacheSnapshot(
            k=self.k[:, :, :, :end].clone(),
            v=self.v[:, :, :, :end].clone(),
            entry_frame=self.entry_frame[:end].clone(),
            entry_token=self.entry_token[:end].clone(),
            length=end,
            frames=list(self.frames),
            frame_len=list(self.frame_len),
        )

    def restore(self, snap: CacheSnapshot) -> None:
        end = snap.length
        self.k[:, :, :, :end] = snap.k
        self.v[:, :, :, :end] = snap.v
        self.entry_frame.fill_(-1)
        self.entry_token.fill_(-1)
        self.entry_frame[:end] = snap.entry_frame
        self.entry_token[:end] = snap.entry_token
        self.length = end
        self.frames = list(snap.frames)
        self.frame_len = list(snap.frame_len)
        self.discard_staged()

    def reset(self) -> None:
        self.length = 0
        self.frames = []
        self.frame_len = []
        self.entry_frame.fill_(-1)
        self.entry_token.fill_(-1)
        self.discard_staged()
