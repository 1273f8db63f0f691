"""The decision-relevant canonical form of a TokenTrim config: two configs with the same `experiment_key` make the
same measurements (D_t, S_t), the same trigger decisions and the same prunes on every video, so their videos and
drift logs are the same (only descriptive fields such as the logged threshold or `is_tested` may differ).

Knobs that cannot matter are dropped, each for a reason that follows from `TokenTrim.decide` and the pipelines:
  * measurement knobs (p, severity, drift_metric, drift_reference, drift_source) always matter: they define the logged D_t and S_t;
  * the rule never triggers when it is disabled, when lam = inf, or when the video has fewer than W + 2 batches
    (no batch is tested); then every decision and pruning knob is dropped (a "monitor");
  * with max_retries = 0 a trigger is logged but nothing is pruned or regenerated: the pruning knobs are dropped;
  * sigma_floor only matters when lam > 0 (the threshold is mu when lam = 0);
  * retest only matters when max_retries > 1 (with R = 1 the one regeneration is accepted either way);
  * dynamic_p_max only matters when dynamic_p is on.
"""

from __future__ import annotations

import math

from tokentrim.trim.tokentrim import TokenTrimConfig

Key = tuple[tuple[str, object], ...]


def never_triggers(cfg: TokenTrimConfig, num_batches: int | None = None) -> str | None:
    """Why `cfg` can never trigger on a video of `num_batches` batches (None = any length), or None if it can."""
    if not cfg.enabled:
        return "enabled=false"
    if math.isinf(cfg.lam):
        return "lam=inf"
    if num_batches is not None and num_batches < cfg.warmup + 2:  # the first tested batch is W + 2
        return f"warmup={cfg.warmup} leaves no tested batch among {num_batches}"
    return None


def dropped_knobs(cfg: TokenTrimConfig, num_batches: int | None = None) -> dict[str, str]:
    """{knob: why it cannot change the outcome of `cfg`}."""
    dropped: dict[str, str] = {}
    pruning = ("scope", "regen_noise", "max_retries", "retest", "dynamic_p", "dynamic_p_max")
    never = never_triggers(cfg, num_batches)
    if never is not None:
        for knob in ("enabled", "lam", "warmup", "sigma_floor", *pruning):
            dropped[knob] = f"never triggers ({never})"
        return dropped
    if cfg.max_retries == 0:
        for knob in pruning:
            dropped[knob] = "max_retries=0 never prunes"
    if cfg.lam == 0:
        dropped["sigma_floor"] = "lam=0: the threshold is mu"
    if cfg.max_retries <= 1:
        dropped.setdefault("retest", f"max_retries={cfg.max_retries} <= 1")
    if not cfg.dynamic_p:
        dropped.setdefault("dynamic_p_max", "dynamic_p=false")
    return dropped


def experiment_key(cfg: TokenTrimConfig, num_batches: int | None = None) -> Key:
    """The knobs of `cfg` that can change its outcome, as sorted (name, value) pairs with numbers normalised
    (2 == 2.0, True/False kept as bools). `num_batches`: the video's batch count when known (drops a warm-up that
    leaves nothing to test)."""
    dropped = dropped_knobs(cfg, num_batches)
    key = []
    for name in sorted(TokenTrimConfig.__dataclass_fields__):
        if name in dropped:
            continue
        value = getattr(cfg, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        key.append((name, value))
    if never_triggers(cfg, num_batches) is not None:
        key.append(("mode", "monitor"))
    return tuple(key)
