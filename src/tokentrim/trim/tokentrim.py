"""The TokenTrim rule (arXiv 2602.00268), backbone-agnostic.

Per batch t (one generated block of F latent frames on the cache's token grid, [F, N, c]):
  Z_t = mean over frames; d_i = ||Z_t(i) - Z_{t-1}(i)||_2; S_t = top-k(d), k = max(1, round(pN)); D_t from S_t.
  Trigger iff t > warm-up, at least `min_history` accepted severities are in the statistics, and D_t > mu + lam*sigma.
  On a trigger the pipeline removes S_t from the cached K/V and regenerates the batch (at most R times).
  mu and sigma are updated with the severity of the *accepted* batch (the regenerated one after a trigger).

Resolutions of what the paper leaves open (see README "TokenTrim rule"):
  * Z_{t-1} is the summary of the previous *accepted* batch; batch 1 has no predecessor, so no D.
  * With sigma computed from a single value (=0), any rise would trigger: no test happens before `min_history` (2)
    severities are in the statistics; `sigma_floor` optionally bounds sigma below by sigma_floor * mu.
  * With R = 1 the regenerated batch is accepted unconditionally; with `retest` and R > 1 it is tested again.

This module decides; it does not touch the cache or the model (the pipelines do: `pipelines/self_forcing.py`, `pipelines/rolling_forcing.py`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from tokentrim.trim import drift as drift_ops
from tokentrim.trim.stats import RunningStats

SCOPES = ("all_but_sink", "last_batch", "all")
REGEN_NOISE = ("same", "fresh")
DRIFT_SOURCES = ("final", "first_step")
SEVERITIES = ("mean", "max")
DRIFT_METRICS = ("l2", "cosine")


@dataclass
class TokenTrimConfig:
    """Every knob of the rule; defaults are the paper's (p=0.1, lam=2.0, warm-up 2, R=1).

    Args:
        enabled: False = never prune (drift is still measured and logged, for baselines).
        p: fraction of tokens in the unstable set S_t, in (0, 1].
        lam: threshold multiplier lambda >= 0.
        warmup: the first `warmup` batches never trigger.
        max_retries: R, regenerations per batch at most.
        min_history: accepted severities needed in the statistics before any test (>= 1).
        sigma_floor: sigma is replaced by max(sigma, sigma_floor * mu); 0 disables.
        severity: "mean" | "max" aggregation of d over S_t.
        drift_metric: "l2" (paper) | "cosine".
        scope: cached frames pruned on a trigger: "all_but_sink" | "last_batch" | "all".
        regen_noise: "same" (replay the batch's noise) | "fresh".
        drift_source: "final" (x0 after the last step) | "first_step" (x0 after the first step; abort early).
        retest: with R > 1, test a regenerated batch again and retry while it still triggers.
        dynamic_p: scale p on a trigger by D_t / threshold, capped at `dynamic_p_max`.
        dynamic_p_max: upper bound of the dynamic p.
    """

    enabled: bool = True
    p: float = 0.1
    lam: float = 2.0
    warmup: int = 2
    max_retries: int = 1
    min_history: int = 2
    sigma_floor: float = 0.0
    severity: str = "mean"
    drift_metric: str = "l2"
    scope: str = "all_but_sink"
    regen_noise: str = "same"
    drift_source: str = "final"
    retest: bool = False
    dynamic_p: bool = False
    dynamic_p_max: float = 0.2

    def __post_init__(self) -> None:
        check_trim_config(self)


def check_trim_config(cfg: TokenTrimConfig) -> None:
    """One clear ValueError per bad knob (called at composition time and on construction)."""

    def choice(key: str, allowed: tuple[str, ...]) -> None:
        value = getattr(cfg, key)
        if value not in allowed:
            raise ValueError(f"trim.{key} must be one of {list(allowed)}, got {value!r}")

    if not 0.0 < cfg.p <= 1.0:
        raise ValueError(f"trim.p must be in (0, 1], got {cfg.p}")
    if not cfg.lam >= 0:  # also rejects NaN
        raise ValueError(f"trim.lam must be >= 0, got {cfg.lam}")
    if cfg.warmup < 0:
        raise ValueError(f"trim.warmup must be >= 0, got {cfg.warmup}")
    if cfg.max_retries < 0:
        raise ValueError(f"trim.max_retries must be >= 0, got {cfg.max_retries}")
    if cfg.min_history < 1:
        raise ValueError(f"trim.min_history must be >= 1, got {cfg.min_history}")
    if cfg.sigma_floor < 0:
        raise ValueError(f"trim.sigma_floor must be >= 0, got {cfg.sigma_floor}")
    if cfg.dynamic_p and not cfg.p <= cfg.dynamic_p_max <= 1.0:
        raise ValueError(f"trim.dynamic_p_max must be in [p, 1] = [{cfg.p}, 1], got {cfg.dynamic_p_max}")
    choice("severity", SEVERITIES)
    choice("drift_metric", DRIFT_METRICS)
    choice("scope", SCOPES)
    choice("regen_noise", REGEN_NOISE)
    choice("drift_source", DRIFT_SOURCES)


@dataclass
class Decision:
    """TokenTrim's verdict on one candidate batch. Tensors stay on the latents' device.

    `should_prune` and the floats in `record()` are the only host values (one sync, in `TokenTrim.decide`).
    """

    t: int
    summary: torch.Tensor  # [N, c]
    drift: torch.Tensor | None  # [N]
    unstable: torch.Tensor | None  # [k] token indices, largest drift first
    severity: torch.Tensor | None  # []
    is_warmup: bool
    is_tested: bool
    should_prune: bool
    values: dict[str, float | None] = field(default_factory=dict)  # D, mu, sigma, threshold as floats
    decision_ms: float = 0.0


class TokenTrim:
    """Stateful decider over the batches of one video (call `reset` between videos)."""

    def __init__(self, cfg: TokenTrimConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.t = 0  # batches accepted so far
        self.stats = RunningStats()
        self.prev_summary: torch.Tensor | None = None

    def decide(self, block_tokens: torch.Tensor) -> Decision:
        """Test the candidate batch t = self.t + 1 (1-based). block_tokens: [F, N, c]. Does not change state."""
        start = time.perf_counter()
        cfg, t = self.cfg, self.t + 1
        summary = drift_ops.latent_summary(block_tokens)  # [N, c]
        is_warmup = t <= cfg.warmup
        if self.prev_summary is None:  # batch 1: nothing to compare with
            return Decision(t, summary, None, None, None, is_warmup, False, False, dict(D=None, mu=None, sigma=None, threshold=None))
        d = drift_ops.token_drift(summary, self.prev_summary, cfg.drift_metric)  # [N]
        unstable = drift_ops.unstable_set(d, drift_ops.num_unstable(cfg.p, d.numel()))  # [k]
        severity = drift_ops.severity(d, unstable, cfg.severity)  # []
        has_history = self.stats.count >= cfg.min_history
        if has_history:
            mu, sigma = self.stats.mean, self.stats.std
            sigma = torch.maximum(sigma, cfg.sigma_floor * mu)
            # lam = inf means "never": avoid inf * 0 = NaN when sigma is 0
            threshold = mu + cfg.lam * sigma if math.isfinite(cfg.lam) else torch.full_like(mu, math.inf)
            packed = torch.stack([severity, mu, sigma, threshold]).tolist()  # the one host sync of this batch
            values = dict(zip(("D", "mu", "sigma", "threshold"), packed))
        else:
            values = dict(D=severity.item(), mu=None, sigma=None, threshold=None)
        is_tested = has_history and not is_warmup
        should_prune = bool(cfg.enabled and is_tested and values["D"] > values["threshold"])
        if should_prune and cfg.dynamic_p:
            p_t = min(cfg.dynamic_p_max, cfg.p * values["D"] / max(values["threshold"], 1e-12))
            unstable = drift_ops.unstable_set(d, drift_ops.num_unstable(p_t, d.numel()))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        return Decision(t, summary, d, unstable, severity, is_warmup, is_tested, should_prune, values, elapsed_ms)

    def retest(self, block_tokens: torch.Tensor) -> Decision:
        """Decision on a regenerated batch (same t). Alias of `decide`, named for the call site."""
        return self.decide(block_tokens)

    def accept(self, decision: Decision) -> None:
        """The batch of `decision` is final: its severity enters the statistics; its summary becomes Z_{t-1}."""
        if decision.t != self.t + 1:
            raise RuntimeError(f"accept() got batch {decision.t}, expected {self.t + 1}")
        if decision.severity is not None:
            self.stats.push(decision.severity)
        self.prev_summary = decision.summary
        self.t = decision.t

    def snapshot(self) -> tuple[int, RunningStats, torch.Tensor | None]:
        return self.t, self.stats.snapshot(), self.prev_summary

    def restore(self, snap: tuple[int, RunningStats, torch.Tensor | None]) -> None:
        self.t, stats, self.prev_summary = snap
        self.stats = stats.snapshot()
