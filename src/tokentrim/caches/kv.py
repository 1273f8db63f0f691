"""Self Forcing's self-attention KV cache: a block staged after the committed entries, frame-granular eviction with
an attention sink, and TokenTrim's pruning (the shared `entries.CachedEntries`).

Letters: Y layers, B batch, n heads, d head dim, T cache capacity in tokens, L tokens of the block being denoised,
N tokens per latent frame.

The block currently being denoised is *staged* right after the committed entries (`stage`), and attention reads
the contiguous view [:length + L] -- the same zero-copy scheme as Self Forcing's cache, where the block's own
(noisy) K/V sits in the slot that the clean K/V later overwrites. `commit` makes the staged block permanent.
The buffer layout and the (frame, token) labels of the entries are `entries.CachedEntries`'.
"""

from __future__ import annotations

import torch

from tokentrim.caches.entries import CachedEntries


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
