"""Rolling Forcing's self-attention KV cache: an attention sink re-roped in front of a rolling working cache.

Rolling Forcing (Liu et al. 2025, `TencentARC/RollingForcing`) denoises a window of up to 5 blocks jointly and keeps a
cache of clean K/V whose semantics differ from Self Forcing's (`tokentrim.caches.kv.KVCache`). Official reference:
`wan/modules/causal_model.py::CausalWanSelfAttention.forward`, kv-cache branch (lines 195-300 @ a1477d0):

* Every call writes only the *first block* of its input (`block_frames` frames) into the cache (l. 206-239); a call
  whose first block is already the newest cached block overwrites it (l. 227-235, `num_new_tokens == 0`).
* The first block of the video is the *attention sink*: kept forever (eviction shifts everything after it, l. 211-226).
  Upstream stores its K un-roped (l. 230-231) and ropes it when read.
* Denoising call (`updating_cache=False`, l. 264-300): if the window starts at the video's first block, plain
  self-attention over the call itself (l. 241-246). Otherwise K/V = [sink, working cache, the call's own K/V] with
  working cache = the newest cached non-sink frames before the window, at most
  `max_attention_frames - num_frames - sink_frames` of them (one block for a full 15-frame window), and the sink
  re-roped to sit directly before the working cache in time (l. 276-281).
* Cache-refresh call (`updating_cache=True`, l. 248-262): K/V = the newest `max_attention_frames` cached frames *including
  the block just written*; the sink only while it falls inside that span, then at its true position (frame 0,
  l. 254-256). Once more than 21 frames are cached the refresh no longer sees the sink, unlike the denoising call.
* Capacity `cache_frames` (24 frames = 37,440 tokens at 832x480, `rolling_forcing_inference.py` l. 348); the oldest
  non-sink block is evicted when a new block does not fit.

Our choices (same results as upstream without pruning; documented where they generalise):

* The sink is stored **roped at its true frames 0..sink_frames-1** (as the model hands K over). RoPE composes, so upstream's
  "rope the un-roped sink at frames r..r+2" equals rotating our stored keys' temporal channels by r (h/w angles 0);
  at the refresh call r = 0, i.e. the stored keys are used as they are. Equal up to fp32 rounding (~1e-7).
* Windows and spans are counted in **frames**, not tokens (upstream slices tokens; the same thing while no token is
  pruned). A frame stays one frame however many of its tokens TokenTrim removed, so pruning never lets older frames slip
  into the attended span and the sink is always placed right before the first working frame.
* Only the refresh call writes: its block's K/V go straight into the buffer slot the block will occupy (right after the
  older frames; over the block's previous copy when it is refreshed again), layer by layer during the call, and
  become cache entries (labels, counts, `length`) at `commit()`, which the pipeline calls right after. The slot lies
  past everything the call attends to, so writing it early changes nothing, and the refresh then attends to the
  buffer's contiguous [span, block] as a view (no concatenated copy). Upstream also writes the denoising call's noisy
  first block into the slot, but the refresh call overwrites it before anything reads it, so results are identical;
  we skip that write (no side buffer: 2 x Y x 3 frames of K/V less memory than a staging copy).
* Pruning (TokenTrim) removes entries physically, with the same (frame, token) bookkeeping as `KVCache`: pruned
  positions stay removed as the cache rolls, and eviction stays frame-granular.

Letters: Y layers, B batch, n heads, d head dim, N tokens per latent frame, L tokens of the call, T capacity in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokentrim.caches.entries import CachedEntries
from tokentrim.models.rope import apply_rope, rope_angles

DENOISE = "denoise"
REFRESH = "refresh"


@dataclass(frozen=True)
class CallPlan:
    """What one model call attends to, in entry offsets of the committed buffer (host ints).

    plain: attend only to the call's own K/V (window at the start of the video).
    sink_end: entries [0, sink_end) are the sink, prepended re-roped by `sink_shift` frames (denoising call only).
    span: entries [span_start, span_end) of `span_frames` frames are attended as stored (denoise: the working cache;
        refresh: the newest cached frames, sink included while it falls inside).
    """

    mode: str
    start_frame: int
    num_frames: int
    plain: bool
    sink_end: int
    sink_shift: int
    span_start: int
    span_end: int
    span_frames: int


class RollingKVCache(CachedEntries):
    """Per-layer K/V storage for Rolling Forcing's rolling-window inference.

    Call protocol, per model call: `begin_call(start_frame, num_frames, mode=...)`, the model's forward (which calls
    `stage(layer, k, v)` once per layer), then `commit()` after a refresh call. A denoising call writes nothing
    (`discard_staged()` just forgets its plan); a refresh call's writes land in the buffer during the call, so a
    refresh must be committed (abandoning one would leave its block's slot overwritten).

    Args:
        num_layers (`int`): transformer blocks Y.
        num_heads (`int`), head_dim (`int`): n and d.
        tokens_per_frame (`int`): N (1560 at 832x480).
        block_frames (`int`, default 3): frames per block; also the sink size (the sink is the video's first block).
        cache_frames (`int`, default 24): frames the cache holds at most (sink included).
        max_attention_frames (`int`, default 21): frames one call attends to at most (its own frames included).
        batch_size (`int`), device, dtype: buffer placement.
        token_major (`bool`, default False): the buffers' memory order, and that of the K/V a call attends to
            (see `tokentrim.caches.entries`).
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        block_frames: int = 3,
        cache_frames: int = 24,
        max_attention_frames: int = 21,
        batch_size: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        token_major: bool = False,
    ):
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        if max_attention_frames < 2 * block_frames:
            raise ValueError(
                f"max_attention_frames must be >= 2 * block_frames = {2 * block_frames} (sink + one block), got {max_attention_frames}"
            )
        if cache_frames < max_attention_frames:
            raise ValueError(f"cache_frames must be >= max_attention_frames={max_attention_frames}, got {cache_frames}")
        super().__init__(  # the sink is the video's first block (upstream: "we keep the first block in the cache")
            num_layers=num_layers, num_heads=num_heads, head_dim=head_dim, tokens_per_frame=tokens_per_frame,
            capacity_frames=cache_frames, sink_frames=block_frames, batch_size=batch_size, device=device, dtype=dtype,
            token_major=token_major,
        )
        self.block_frames = block_frames
        self.cache_frames = cache_frames
        self.max_attention_frames = max_attention_frames
        self.plan: CallPlan | None = None
        self.staged = 0  # tokens the current refresh call wrote into its slot (0 = nothing to commit)
        self.staged_start_frame = -1
        self._sink_rope: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (shift, cos, sin) of the last re-rope

    # ---------------------------------------------------------------- call lifecycle
    def begin_call(self, start_frame: int, num_frames: int, *, mode: str) -> CallPlan:
        """Announce a model call on latent frames [start_frame, start_frame + num_frames); plan what it attends to.

        Evicts the oldest non-sink frames if the call's first block is new and would not fit (upstream evicts on the
        first call that appends, l. 213-226).

        Args:
            start_frame: absolute latent frame of the call's first frame (a block boundary).
            num_frames: frames of the call (>= block_frames; exactly block_frames for a refresh call).
            mode: "denoise" (window denoising call) or "refresh" (clean first block at the context noise).
        """
        bf = self.block_frames
        if mode not in (DENOISE, REFRESH):
            raise ValueError(f"mode must be one of {[DENOISE, REFRESH]}, got {mode!r}")
        if start_frame % bf or start_frame < 0:
            raise ValueError(f"start_frame must be a non-negative multiple of block_frames={bf}, got {start_frame}")
        if num_frames < bf or (mode == REFRESH and num_frames != bf):
            rule = f"== block_frames={bf}" if mode == REFRESH else f">= block_frames={bf}"
            raise ValueError(f"num_frames of a {mode} call must be {rule}, got {num_frames}")
        block_end = start_frame + bf
        if self.frames and self.frames[-1] >= block_end:
            raise RuntimeError(f"call at frame {start_frame} is older than the newest cached frame {self.frames[-1]}")
        # Frames older than the call's first block (a refresh writes over an existing copy of that block).
        num_older = sum(1 for f in self.frames if f < start_frame)
        excess = num_older + bf - self.cache_frames
        if excess > 0:
            self._evict_oldest(excess)
            num_older -= excess
        older_end = sum(self.frame_len[:num_older])  # entries of the older frames: [0, older_end)
        num_sink = sum(1 for f in self.frames[:num_older] if f < self.sink_frames)
        sink_end = sum(self.frame_len[:num_sink])

        if num_older == 0:  # window at the video's start: self-attention only (l. 241-246)
            plan = CallPlan(mode, start_frame, num_frames, True, 0, 0, 0, 0, 0)
        elif mode == DENOISE:  # [sink re-roped, working cache, window] (l. 264-300)
            max_working = self.max_attention_frames - num_frames - self.sink_frames
            if max_working < 0:
                raise ValueError(
                    f"a {num_frames}-frame window leaves no room for the sink within max_attention_frames={self.max_attention_frames}"
                )
            working = min(max_working, num_older - num_sink)
            span_start = sum(self.frame_len[: num_older - working])
            shift = start_frame - working - self.sink_frames  # sink frames 0.. -> shift..; right before the working cache
            plan = CallPlan(mode, start_frame, num_frames, False, sink_end, shift, span_start, older_end, working)
        else:  # newest max_attention_frames frames including the block itself, as stored (l. 248-262)
            span = min(num_older, self.max_attention_frames - num_frames)
            span_start = sum(self.frame_len[: num_older - span])
            plan = CallPlan(mode, start_frame, num_frames, False, 0, 0, span_start, older_end, span)
        self.plan = plan
        self.staged = 0
        self.staged_start_frame = start_frame
        return plan

    def stage(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A refresh call writes its block of one layer into the block's slot; return the K/V the call attends to.

        Args:
            k, v: `[B, n, L, d]`, k rotated at the call's absolute frame positions.
        Returns:
            K, V: `[B, n, L', d]`: the call itself (plain), [sink, working, call] (denoise) or [span, block] (refresh:
            a view of the buffer).
        """
        plan = self.plan
        if plan is None:
            raise RuntimeError("stage() before begin_call()")
        num_tokens = k.shape[2]
        if num_tokens != plan.num_frames * self.tokens_per_frame:
            raise RuntimeError(f"stage() got {num_tokens} tokens but begin_call() announced {plan.num_frames} frames")
        if plan.mode == REFRESH:  # the slot starts right after the older frames (span_end; 0 for a plain call)
            slot = slice(plan.span_end, plan.span_end + num_tokens)
            self.k[layer, :, :, slot] = k
            self.v[layer, :, :, slot] = v
            self.staged = num_tokens
            if plan.plain:
                return k, v
            span = slice(plan.span_start, slot.stop)  # [span, block] contiguous in the buffer
            return self.k[layer, :, :, span], self.v[layer, :, :, span]  # [B, n, span + L, d] views
        if plan.plain:
            return k, v
        span_k = self.k[layer, :, :, plan.span_start : plan.span_end]  # [B, n, span, d]
        span_v = self.v[layer, :, :, plan.span_start : plan.span_end]
        sink_k = self._shift_frames(self.k[layer, :, :, : plan.sink_end], plan.sink_shift)  # [B, n, sink, d]
        sink_v = self.v[layer, :, :, : plan.sink_end]
        return self._cat_tokens([sink_k, span_k, k]), self._cat_tokens([sink_v, span_v, v])

    def _cat_tokens(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate `[B, n, *, d]` parts along tokens, into the cache's memory order."""
        if self.token_major:  # build [B, L', n, d] memory, hand over a [B, n, L', d] view
            return torch.cat([part.transpose(1, 2) for part in parts], dim=1).transpose(1, 2)
        return torch.cat(parts, dim=2)

    def commit(self) -> None:
        """Make the block the refresh call wrote into its slot a cache entry; it replaces the block's previous copy."""
        if self.staged == 0 or self.plan is None or self.plan.mode != REFRESH:
            raise RuntimeError("commit() without a refresh call that wrote its block")
        bf, n = self.block_frames, self.tokens_per_frame
        start = self.staged_start_frame
        if self.frames and self.frames[-1] >= start:  # the newest block again (upstream num_new_tokens == 0)
            num_old = sum(1 for f in self.frames if f >= start)
            del self.frames[-num_old:]
            del self.frame_len[-num_old:]
        slot_start = self.plan.span_end  # = entries of the older frames (begin_call evicted what would not fit)
        if slot_start != sum(self.frame_len) or len(self.frames) + bf > self.cache_frames:
            raise RuntimeError("commit(): the cache changed between begin_call() and commit()")
        self.entry_frame[slot_start : self.length] = -1  # a previous copy (possibly pruned) is replaced
        self.entry_token[slot_start : self.length] = -1
        self.length = slot_start
        end = self.length + self.staged
        positions = torch.arange(self.staged, device=self.entry_frame.device)  # [bf*N]
        self.entry_frame[self.length : end] = start + positions // n
        self.entry_token[self.length : end] = positions % n
        self.length = end
        self.frames.extend(range(start, start + bf))
        self.frame_len.extend([n] * bf)
        self.discard_staged()

    def discard_staged(self) -> None:
        """Forget the staged block and the call plan."""
        self.staged = 0
        self.plan = None

    # ---------------------------------------------------------------- RoPE
    def _shift_frames(self, k: torch.Tensor, shift: int) -> torch.Tensor:
        """Move roped keys `shift` frames later in time: rotate the temporal RoPE channels by shift * theta_t.

        k: `[B, n, L, d]` -> same. RoPE composes (rot(a) rot(b) = rot(a + b)) and the h/w angles of a pure temporal
        shift are 0, so this equals upstream's roping of the un-roped sink at frames shift.. (l. 277-281).
        """
        if shift == 0:
            return k
        if self._sink_rope is None or self._sink_rope[0] != shift:
            angles = rope_angles(self.head_dim, torch.tensor([shift], device=k.device), 1, 1)  # [1, d/2]
            self._sink_rope = (shift, angles.cos().float(), angles.sin().float())
        _, cos, sin = self._sink_rope
        return apply_rope(k, cos, sin)
