"""TokenTrim's action on one batch, the same for every backbone: decide -> prune(scope) -> regenerate(noise policy)
-> retest -> accept -> event.

The rule (`tokentrim.trim.tokentrim.TokenTrim`) only decides; this module acts on its decisions through two declared
interfaces, so Self Forcing (`pipelines/self_forcing.py`) and Rolling Forcing (`pipelines/rolling_forcing.py`) run
one copy of the action:
  * `tokentrim.caches.PrunableCache`: the KV cache (discard the staged batch, list the cached frames, prune positions);
  * `TrimBatch`: the pipeline's adapter for the batch being decided (its tokens, where it sits, "denoise it again").

Per batch t, with `candidate` what the pipeline denoised (R = trim.max_retries):
  decision = decide(tokens(candidate))
  while decision triggers and retries < R:
      discard the candidate's staged K/V; prune S_t from the cached frames of trim.scope
      candidate = regenerate(trim.regen_noise: same | fresh noise)
      decision = retest(tokens(candidate)); without trim.retest stop after this one regeneration
  accept(decision): the accepted batch's severity enters the statistics; emit one event

Letters: F latent frames per batch, N tokens per frame, c channels per token, k = |S_t|.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from tokentrim.caches.protocol import PrunableCache, Pruned
from tokentrim.trim.tokentrim import Decision, TokenTrim

Candidate = TypeVar("Candidate")
EventSink = Callable[[dict], None]


class TrimBatch(Protocol[Candidate]):
    """A pipeline's view of the batch TokenTrim decides on. `Candidate` is whatever the pipeline denoises (Self
    Forcing: a block's step state; Rolling Forcing: a window's x0); the controller never looks inside it."""

    cache: PrunableCache
    start_frame: int  # absolute latent frame of the batch's first frame
    num_frames: int  # F
    grid: tuple[int, int]  # (h, w) token grid, N = h * w

    def tokens(self, candidate: Candidate) -> torch.Tensor:
        """The tested latents of the batch on the cache's token grid, [F, N, c]."""

    def regenerate(self, fresh_noise: bool, may_redo: bool) -> Candidate:
        """Denoise the batch again against the (pruned) cache: with its first noise replayed, or fresh noise.
        `may_redo`: the result may still be pruned and regenerated (it will be tested with a retry left)."""

    def event_fields(self) -> dict[str, Any]:
        """Backbone-specific event keys (e.g. Rolling Forcing's window index), placed after "start_frame"."""


def scope_frames(scope: str, cache: PrunableCache, batch_start: int, batch_frames: int) -> list[int]:
    """Cached frames a trigger prunes (`trim.scope`): "all_but_sink" every frame after the sink, "last_batch" the
    F frames before the batch, "all" every cached frame."""
    cached = cache.committed_frames()
    if scope == "all_but_sink":
        return [f for f in cached if f >= cache.sink_frames]
    if scope == "last_batch":
        return [f for f in cached if batch_start - batch_frames <= f < batch_start]
    if scope == "all":
        return cached
    raise ValueError(f"trim.scope must be one of ['all_but_sink', 'last_batch', 'all'], got {scope!r}")


@dataclass
class Pruning:
    """What the triggers of one batch removed, summed over its regenerations."""

    unstable: list[torch.Tensor] = field(default_factory=list)  # S_t of each regeneration, [k] each
    entries: int = 0  # (frame, token) cache slots removed (per layer: every layer loses the same slots)
    tokens: int = 0  # distinct token positions removed, per prune, summed over the regenerations

    @property
    def retries(self) -> int:
        return len(self.unstable)

    def add(self, unstable: torch.Tensor, pruned: Pruned) -> None:
        self.unstable.append(unstable)
        self.entries += pruned.entries
        self.tokens += pruned.tokens


class TrimController:
    """Runs TokenTrim's action for the batches of one video; `reset` between videos.

    Args:
        trim: the decider (its `cfg` holds every knob read here: max_retries, retest, scope, regen_noise).
    """

    def __init__(self, trim: TokenTrim):
        self.trim = trim

    def reset(self) -> None:
        self.trim.reset()

    def may_redo(self, retries: int) -> bool:
        """Whether the candidate denoised after `retries` regenerations may still be pruned and regenerated: the
        first one while R > 0, a regenerated one only with `retest`, and never once R regenerations are spent."""
        cfg = self.trim.cfg
        return retries < cfg.max_retries and (retries == 0 or cfg.retest)

    def step(self, batch: TrimBatch[Candidate], candidate: Candidate, on_event: EventSink | None = None) -> Candidate:
        """Decide on `candidate`; on a trigger prune and regenerate, at most R times. Returns the accepted one."""
        cfg = self.trim.cfg
        decision = first = self.trim.decide(batch.tokens(candidate))
        pruning = Pruning()
        while decision.should_prune and pruning.retries < cfg.max_retries:
            batch.cache.discard_staged()  # the candidate's own K/V: only committed entries are pruned
            frames = scope_frames(cfg.scope, batch.cache, batch.start_frame, batch.num_frames)
            pruning.add(decision.unstable, batch.cache.prune_positions(decision.unstable, frames))
            candidate = batch.regenerate(cfg.regen_noise == "fresh", self.may_redo(pruning.retries))
            decision = self.trim.retest(batch.tokens(candidate))
            if not cfg.retest:
                break
        self.trim.accept(decision)
        if on_event is not None:
            on_event(batch_event(first, decision, pruning, batch))
        return candidate


def batch_event(first: Decision, final: Decision, pruning: Pruning, batch: TrimBatch) -> dict:
    """The per-batch record written to events/<video>.jsonl (floats already on the host): the first decision's
    statistics, the accepted batch's severity, and what the regenerations pruned."""
    return {
        "t": first.t,
        "start_frame": batch.start_frame,
        **batch.event_fields(),
        "D": first.values["D"],
        "mu": first.values["mu"],
        "sigma": first.values["sigma"],
        "threshold": first.values["threshold"],
        "is_warmup": first.is_warmup,
        "is_tested": first.is_tested,
        "triggered": first.should_prune,
        "retries": pruning.retries,
        "D_accepted": final.values["D"],
        "num_pruned_tokens": pruning.tokens,
        "num_pruned_entries": pruning.entries,
        "pruned_indices": torch.cat(pruning.unstable).tolist() if pruning.unstable else [],
        "decision_ms": first.decision_ms,
        "grid": list(batch.grid),
        "drift": None if first.drift is None else first.drift.tolist(),
    }
