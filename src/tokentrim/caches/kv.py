"""Self-attention KV cache of a causal video transformer, with frame-granular eviction and token pruning.

Letters: Y layers, B batch, n heads, d head dim, T cache capacity in tokens, L tokens of the block being denoised,
N tokens per latent frame.

Layout: one preallocated buffer per K and V of shape [Y, B, n, T, d]; the first `length` entries hold committed
(clean) tokens, in commit order. The buffers are indexed as [Y, B, n, T, d] whatever their memory order: head-major
(each head's tokens contiguous, the default) or token-major (`token_major=True`: memory [Y, B, T, n, d], flash-attn's
layout, so a slice [:length] handed to SDPA has the strides of the official code's cache). Each entry carries its
absolute latent-frame index (`entry_frame`) and its spatial token index inside that frame (`entry_token`), so pruning
and eviction are expressed in (frame, token) positions rather than buffer offsets, and stay consistent with each
other.

The block currently being denoised is *staged* right after the committed entries (`stage`), and attention reads
the contiguous view [:length + L] -- the same zero-copy scheme as Self Forcing's cache, where the block's own
(noisy) K/V sits in the slot that the clean K/V later overwrites. `commit` makes the staged block permanent.

Pruning (TokenTrim) removes entries physically: the kept entries are gathered to the front with one
index_select per layer (so the temporary is one layer's entries, not the whole cache), so fused attention
kernels need no mask. Removal and a -inf logit are the same
under softmax; zeroing K/V would not be (a zero key still takes softmax weight).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


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
            number of entries removed.
        """
        if self.staged:
            raise RuntimeError("prune() while a block is staged; call discard_staged() first")
        if frames is None:
            frames = [f for f in self.committed_frames() if f >= self.sink_frames]
        device = self.entry_frame.device
        entry_frame, entry_token = self.positions()
        token_hit = torch.zeros(self.tokens_per_frame, dtype=torch.bool, device=device)
        token_hit[tokens.to(device)] = True
        frame_hit = torch.isin(entry_frame, torch.as_tensor(frames, dtype=torch.long, device=device))
        keep = ~(frame_hit & token_hit[entry_token])  # [length]
        return self._keep_entries(keep)

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


class KVCache(CachedEntries):
    """Per-layer K/V storage for Self Forcing's block-causal inference.

    Args:
        num_layers (`int`): transformer blocks Y.
        num_heads (`int`), head_dim (`int`): n and d.
        tokens_per_frame (`int`): N.
        max_frames (`int`): frames attended at most, the block being denoised included (Self Forcing's
            `local_attn_size`; 21 for the released 81-frame checkpoint).
        block_frames (`int`): frames per denoised block (3 for Self Forcing / Rolling Forcing).
        sink_frames (`int`): the first `sink_frames` latent frames of the video are never evicted.
        batch_size (`int`), device, dtype: buffer placement.
        token_major (`bool`, default False): the buffers' memory order (see the module docstring).
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        max_frames: int,
        block_frames: int,
        sink_frames: int = 0,
        batch_size: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        token_major: bool = False,
    ):
        if max_frames < block_frames:
            raise ValueError(f"max_frames must be >= block_frames, got max_frames={max_frames}, block_frames={block_frames}")
        if not 0 <= sink_frames <= max_frames - block_frames:
            raise ValueError(
                f"sink_frames must be in [0, max_frames - block_frames] = [0, {max_frames - block_frames}], got {sink_frames}"
            )
        super().__init__(
            num_layers=num_layers, num_heads=num_heads, head_dim=head_dim, tokens_per_frame=tokens_per_frame,
            capacity_frames=max_frames, sink_frames=sink_frames, batch_size=batch_size, device=device, dtype=dtype,
            token_major=token_major,
        )
        self.max_frames = max_frames
        self.block_frames = block_frames
        self.staged = 0  # entries of the block being denoised, right after the committed ones
        self.staged_start_frame = -1

    # ---------------------------------------------------------------- block lifecycle
    def begin_block(self, start_frame: int, num_tokens: int) -> None:
        """Make room for a block of `num_tokens` query tokens starting at latent frame `start_frame`.

        Evicts the oldest non-sink frames so that committed frames + the block fit in `max_frames`
        (frame-granular eviction: a pruned frame counts as one frame whatever its remaining tokens).
        """
        if num_tokens % self.tokens_per_frame:
            raise ValueError(f"num_tokens must be a multiple of tokens_per_frame={self.tokens_per_frame}, got {num_tokens}")
        block_frames = num_tokens // self.tokens_per_frame
        excess = len(self.frames) + block_frames - self.max_frames
        if excess > 0:
            self._evict_oldest(excess)
        if self.length + num_tokens > self.capacity:
            raise RuntimeError(f"KV cache overflow: {self.length} committed + {num_tokens} new > capacity {self.capacity}")
        self.staged = num_tokens
        self.staged_start_frame = start_frame

    def stage(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the block's K/V of one layer after the committed entries; return the attended K/V.

        Args:
            k, v: `[B, n, L, d]` (k already rotated at absolute positions).
        Returns:
            K, V: `[B, n, length + L, d]` views of the buffer (committed entries, then the block).
        """
        num_tokens = k.shape[2]
        if num_tokens != self.staged:
            raise RuntimeError(f"stage() got {num_tokens} tokens but begin_block() announced {self.staged}")
        end = self.length + num_tokens
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def commit(self) -> None:
        """Keep the staged block (its K/V as last written, i.e. from the clean context pass)."""
        num_tokens, n = self.staged, self.tokens_per_frame
        frames = self.staged_start_frame + torch.arange(num_tokens, device=self.entry_frame.device) // n
        tokens = torch.arange(num_tokens, device=self.entry_frame.device) % n
        self.entry_frame[self.length : self.length + num_tokens] = frames
        self.entry_token[self.length : self.length + num_tokens] = tokens
        self.length += num_tokens
        self.frames.extend(range(self.staged_start_frame, self.staged_start_frame + num_tokens // n))
        self.frame_len.extend([n] * (num_tokens // n))
        self.staged = 0

    def discard_staged(self) -> None:
        """Forget the staged block (its slot is overwritten by the next `stage`)."""
        self.staged = 0
