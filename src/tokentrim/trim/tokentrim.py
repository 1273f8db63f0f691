"""The TokenTrim rule (arXiv 2602.00268), backbone-agnostic.

Per batch t (one generated block of F latent frames on the cache's token grid, [F, N, c]; t = 1, 2, ... over the
video's accepted batches):
  Z_t = mean over frames; d_i = ||Z_t(i) - Z_{t-1}(i)||_2; S_t = top-k(d), k = max(1, round(pN)); D_t from S_t.
  Batch 1 has no predecessor, hence no D; batch t >= 2 has the (t-1)-th severity of the video.
  Warm-up W: the first W severities (batches 2..W+1) only feed mu and sigma; every later batch (t >= W + 2) is tested,
  against the statistics of the t - 2 accepted severities before it: trigger iff D_t > mu + lam * sigma.
  On a trigger the pipeline removes S_t from the cached K/V and regenerates the batch (at most R times).
  mu and sigma are updated with the severity of the *accepted* batch (the regenerated one after a trigger).

Warm-up, resolved (issue 19). The paper: "If t <= T_warm: accept batch, update stats, return", T_warm = 2, and
"removing warm-up causes premature pruning based on unreliable statistics". Its t counts batches that have a drift
severity (the FlowMo-initialised first batch has none), so W counts severities, not batches [our reading]:
  * W = 0: batch 2 is tested against empty statistics, taken as Welford's initial state mu = 0, sigma = 0, so any
    D_2 > 0 prunes (no evidence at all).
  * W = 1: batch 3 is tested against one value, sigma = 0: it prunes iff D_3 > D_2 (sigma_floor aside).
  * W = 2 (paper): batch 4 is the first tested, against two values; W = 3: batch 5; in general batch W + 2.
  So every W gives a different first tested batch, tested on exactly W values: degenerate statistics are used as
  they are, which is the premature pruning the paper's ablation measures. `sigma_floor` (sigma >= sigma_floor * mu,
  default 0 = off) is the one separate guard against a too-small sigma.
  The former `min_history` knob (severities required before any test, default 2) is gone: with the warm-up counted
  in severities it is the same quantity as W. Before, the first tested batch was max(W + 1, min_history + 2), so
  W = 0, 1, 2 all tested from batch 4. What changed: the paper defaults (W = 2) test from batch 4 as before, with the
  same trigger set; W = 0 and 1 now test from batches 2 and 3; W >= 3 tests from batch W + 2 (before W + 1). A batch is flagged `is_warmup` while its severity only feeds the statistics (and batch 1 when W > 0).

Other resolutions of what the paper leaves open (see README "The TokenTrim rule as implemented"):
  * Z_{t-1} is the summary of the previous *accepted* batch.
  * With R = 1 the regenerated batch is accepted unconditionally; with `retest` and R > 1 it is tested again.
  * `experiment_key` (tokentrim.trim.canonical) maps a config to the knobs that can change its outcome.

This module decides; it does not touch the cache or the model (`trim/controller.py` acts on a decision: prune, regenerate, accept).
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
DRIFT_REFERENCES = ("previous", "first")


@dataclass
class TokenTrimConfig:
    """Every knob of the rule; defaults are the paper's (p=0.1, lam=2.0, warm-up 2, R=1).

    Args:
        enabled: False = never prune (drift is still measured and logged, for baselines).
        p: fraction of tokens in the unstable set S_t, in (0, 1].
        lam: threshold multiplier lambda >= 0.
        warmup: W, the first W drift severities (batches 2..W+1) only feed mu/sigma; batch W+2 is the first tested.
        max_retries: R, regenerations per batch at most.
        sigma_floor: sigma is replaced by max(sigma, sigma_floor * mu); 0 disables.
        severity: "mean" | "max" aggregation of d over S_t.
        drift_metric: "l2" (paper) | "cosine".
        drift_reference: the summary d_i compares with: "previous" (Z_{t-1}, the paper) | "first" (Z_1, the first
            accepted batch: the sink block; a slow drift that no consecutive difference shows accumulates here).
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
    sigma_floor: float = 0.0
    severity: str = "mean"
    drift_metric: str = "l2"
    drift_reference: str = "previous"
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

    for key in ("p", "lam", "sigma_floor", "dynamic_p_max"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"trim.{key} must be a number, got {value!r}")
    for key in ("enabled", "retest", "dynamic_p"):
        if not isinstance(getattr(cfg, key), bool):
            raise ValueError(f"trim.{key} must be true or false, got {getattr(cfg, key)!r}")
    if not 0.0 < cfg.p <= 1.0:
        raise ValueError(f"trim.p must be in (0, 1], got {cfg.p}")
    if not cfg.lam >= 0:  # also rejects NaN
        raise ValueError(f"trim.lam must be >= 0, got {cfg.lam}")
    for key in ("warmup", "max_retries"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"trim.{key} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"trim.{key} must be >= 0, got {value}")
    if cfg.sigma_floor < 0:
        raise ValueError(f"trim.sigma_floor must be >= 0, got {cfg.sigma_floor}")
    if cfg.dynamic_p and not cfg.p <= cfg.dynamic_p_max <= 1.0:
        raise ValueError(f"trim.dynamic_p_max must be in [p, 1] = [{cfg.p}, 1], got {cfg.dynamic_p_max}")
    choice("severity", SEVERITIES)
    choice("drift_metric", DRIFT_METRICS)
    choice("drift_reference", DRIFT_REFERENCES)
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
        self.first_summary: torch.Tensor | None = None  # Z_1, the reference of drift_reference="first"

    def decide(self, block_tokens: torch.Tensor) -> Decision:
        """Test the candidate batch t = self.t + 1 (1-based). block_tokens: [F, N, c]. Does not change state."""
        start = time.perf_counter()
        cfg, t = self.cfg, self.t + 1
        summary = drift_ops.latent_summary(block_tokens)  # [N, c]
        if self.prev_summary is None:  # batch 1: nothing to compare with
            return Decision(t, summary, None, None, None, cfg.warmup > 0, False, False,
                            dict(D=None, mu=None, sigma=None, threshold=None))
        reference = self.first_summary if cfg.drift_reference == "first" else self.prev_summary  # [N, c]
        d = drift_ops.token_drift(summary, reference, cfg.drift_metric)  # [N]
        unstable = drift_ops.unstable_set(d, drift_ops.num_unstable(cfg.p, d.numel()))  # [k]
        severity = drift_ops.severity(d, unstable, cfg.severity)  # []
        is_tested = t - 2 >= cfg.warmup  # the statistics hold the t - 2 accepted severities of batches 2..t-1
        if is_tested:  # mu, sigma and the threshold are logged exactly when a test used them
            mu, sigma = self.stats.moments(severity)
            sigma = torch.maximum(sigma, cfg.sigma_floor * mu)
            # lam = inf means "never": avoid inf * 0 = NaN when sigma is 0
            threshold = mu + cfg.lam * sigma if math.isfinite(cfg.lam) else torch.full_like(mu, math.inf)
            packed = torch.stack([severity.float(), mu, sigma, threshold]).tolist()  # the one host sync of this batch
            values = dict(zip(("D", "mu", "sigma", "threshold"), packed))
        else:
            values = dict(D=severity.item(), mu=None, sigma=None, threshold=None)
        should_prune = bool(cfg.enabled and is_tested and values["D"] > values["threshold"])
        if should_prune and cfg.dynamic_p:
            p_t = min(cfg.dynamic_p_max, cfg.p * values["D"] / max(values["threshold"], 1e-12))
            unstable = drift_ops.unstable_set(d, drift_ops.num_unstable(p_t, d.numel()))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        return Decision(t, summary, d, unstable, severity, not is_tested, is_tested, should_prune, values, elapsed_ms)

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
        if self.first_summary is None:
            self.first_summary = decision.summary
        self.t = decision.t

    def snapshot(self) -> tuple[int, RunningStats, torch.Tensor | None, torch.Tensor | None]:
        return self.t, self.stats.snapshot(), self.prev_summary, self.first_summary

    def restore(self, snap: tuple[int, RunningStats, torch.Tensor | None, torch.Tensor | None]) -> None:
        self.t, stats, self.prev_summary, self.first_summary = snap
        self.stats = stats.snapshot()
