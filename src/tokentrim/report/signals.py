"""Drift signals side by side, monitor-only: each signal is the TokenTrim rule (`tokentrim.trim.TokenTrim`, disabled:
it measures and would-decide, never prunes) replayed on a run's saved final latents (`save_latents=true`) with some
knobs changed (`report.detector.signals`: name -> TokenTrimConfig overrides, e.g. {drift_metric: cosine} or
{drift_reference: first}). One generation thus serves every signal that is a function of the block's final x0.

Exact for a run that never pruned (the baseline, `trim.enabled=false`): the saved latents are the blocks the rule
saw, so a signal without overrides equals the logged D_t (the report checks it and names any gap in its notes).
Signals of the sampling process itself (the first-step x0, `trim.drift_source=first_step`) are not in the final
latents; they are scored from a generation's own events (a run of its own, one row of Table D2).

Letters: F latent frames, C latent channels, H, W latent height / width, N = h w tokens per frame, c = C ph pw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokentrim.models.wan_causal import patchify_tokens
from tokentrim.trim.tokentrim import TokenTrim, TokenTrimConfig

REPLAY_KEYS = ("p", "lam", "warmup", "sigma_floor", "severity", "drift_metric", "drift_reference")  # measure / decide


def signal_config(base: Mapping[str, Any], overrides: Mapping[str, Any], name: str) -> TokenTrimConfig:
    """The monitor-only TokenTrimConfig of signal `name`: the run's trim knobs that measure and decide, with the
    signal's overrides on top, `enabled=false`. Raises ValueError (one line naming report.detector.signals.<name>)."""
    unknown = sorted(set(overrides) - set(REPLAY_KEYS))
    if unknown:
        raise ValueError(f"report.detector.signals.{name} has keys {unknown} that a replay of final latents cannot "
                         f"change; allowed: {list(REPLAY_KEYS)}")
    knobs = {k: base[k] for k in REPLAY_KEYS if k in base}
    try:
        return TokenTrimConfig(**{**knobs, **dict(overrides), "enabled": False})
    except (TypeError, ValueError) as err:
        raise ValueError(f"report.detector.signals.{name}: {str(err).splitlines()[0]}") from None


def block_tokens(latents: torch.Tensor, start_frames: Sequence[int], grid: Sequence[int]) -> list[torch.Tensor]:
    """Per batch, its latent frames on the cache's token grid. latents [F, C, H, W]; start_frames: first latent frame
    of each batch (t order); grid: (h, w) tokens per frame -> list of [F_b, N, c]."""
    frames, _, height, width = latents.shape
    patch = (height // int(grid[0]), width // int(grid[1]))
    if patch[0] * int(grid[0]) != height or patch[1] * int(grid[1]) != width:
        raise ValueError(f"latents of {height}x{width} do not tile the token grid {list(grid)}")
    ends = [*start_frames[1:], frames]
    return [patchify_tokens(latents[a:b].float(), patch) for a, b in zip(start_frames, ends)]


def replay(blocks: Sequence[torch.Tensor], cfg: TokenTrimConfig) -> dict[str, np.ndarray]:
    """The rule's measurements over a video's accepted blocks (list of [F_b, N, c]): D [B] (NaN for batch 1),
    z = (D - mu) / sigma [B] (NaN where untested or sigma = 0) and fired [B] (D > mu + lam sigma on tested batches)."""
    rule = TokenTrim(cfg)
    out = {k: np.full(len(blocks), np.nan) for k in ("D", "z")}
    out["fired"] = np.zeros(len(blocks), dtype=bool)
    for b, tokens in enumerate(blocks):
        decision = rule.decide(tokens)
        v = decision.values
        if v["D"] is not None:
            out["D"][b] = v["D"]
        if decision.is_tested and v["sigma"] is not None:
            out["z"][b] = (v["D"] - v["mu"]) / v["sigma"] if v["sigma"] > 0 else np.nan
            out["fired"][b] = v["D"] > v["threshold"]
        rule.accept(decision)
    return out


def load_latents(run_dir: Path, video: str) -> torch.Tensor | None:
    """`<run>/latents/<video>.safetensors` as [F, C, H, W] float32, or None when the run did not save latents."""
    path = Path(run_dir) / "latents" / f"{video}.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))["latents"].float()


def video_signals(latents: torch.Tensor, start_frames: Sequence[int], grid: Sequence[int],
                  configs: Mapping[str, TokenTrimConfig]) -> dict[str, np.ndarray]:
    """Columns `signal_<name>` (D), `signal_<name>_z`, `signal_<name>_fired` per batch of one video [B] each."""
    blocks = block_tokens(latents, start_frames, grid)
    columns: dict[str, np.ndarray] = {}
    for name, cfg in configs.items():
        values = replay(blocks, cfg)
        columns[f"signal_{name}"] = values["D"]
        columns[f"signal_{name}_z"] = values["z"]
        columns[f"signal_{name}_fired"] = values["fired"]
    return columns

