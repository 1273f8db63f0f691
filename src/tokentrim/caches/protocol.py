"""What TokenTrim's controller (`tokentrim.trim.controller`) needs from a KV cache: a declared `typing.Protocol`.

Both caches satisfy it: Self Forcing's `KVCache` and Rolling Forcing's `RollingKVCache` (their shared base
`CachedEntries` implements everything but `discard_staged`). Positions are (absolute latent frame, spatial token
index in [0, N)) pairs, so a prune means the same thing whatever the buffer layout.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch


class Pruned(NamedTuple):
    """What one prune removed.

    entries: cache entries, i.e. (frame, token) slots (counted once, not per layer or batch row: every layer and
        every row loses the same slots).
    tokens: distinct spatial token positions that lost at least one entry.
    """

    entries: int
    tokens: int


@runtime_checkable
class PrunableCache(Protocol):
    """A cache of committed (frame, token) K/V entries that TokenTrim may prune between "denoised" and "committed"."""

    sink_frames: int  # the video's first `sink_frames` latent frames (never evicted)

    def discard_staged(self) -> None:
        """Forget the K/V that the current (candidate) batch staged, so the batch can be denoised again."""

    def committed_frames(self) -> list[int]:
        """Absolute latent frames the cache holds, oldest first (a pruned frame stays listed)."""

    def prune_positions(self, tokens: torch.Tensor, frames: list[int]) -> Pruned:
        """Remove spatial positions `tokens` (`[k]` long) from the cached `frames`; nothing may be staged."""
