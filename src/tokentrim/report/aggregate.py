"""Explicit aggregation of `scores.csv` and `videos.csv` into per-variant statistics with bootstrap CIs.

Aggregation (house rule 14; stated again in every table caption):
    1. per video and dimension: mean over its clips (`clip >= 0` rows, VBench-Long protocol,
       `vbench2_beta_long` `reorganize_clips_results`); a video with only a whole-video row (`clip == -1`) uses it.
       Rows with NaN score (scoring errors) are left out. (`tokentrim.scoring.aggregation`, the one rule.)
    2. per variant and dimension: unweighted mean over videos (so a long video weighs as much as a short one).
    3. Quality / Semantic / Final: `tokentrim.scoring.totals.compute_totals` on the step-2 means of the VBench
       dimensions (`scorer == "vbench"`); other scorers' dimensions (e.g. tinyworld) are extra columns, never in Final.
       The Final is over the REQUESTED dimensions: every VBench dimension with a row in any run of the report, error
       rows included (`score_videos` writes a row for every requested dimension on every video its prompt protocol
       assigns it: under `scorer.prompt_protocol=auto` a VBench suite prompt's videos get only the dimensions the
       prompt lists, so a dimension's mean is over its own videos, as VBench's standard protocol). A run without a
       scored video for one of them has a NaN Final and a note naming it (never a Final renormalised over fewer
       dimensions); fewer than 16 is labelled with `totals.final_label` (one rule, in `scoring/totals.py`).

Uncertainty: percentile bootstrap over prompts (all seeds of a prompt are resampled together), `n_boot` replicates
from `numpy.random.default_rng([seed, crc32(label)])`, so results do not depend on variant order.
Delta vs the baseline is relative, 100 * (variant - baseline) / |baseline|, computed on the PAIRED set only: videos
with the same (prompt, seed) in both runs, and per dimension only pairs where both videos have a score. Its CI is
a paired bootstrap: one prompt resample is applied to both sides.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tokentrim.report.run_data import BASELINE, RunData

logger = logging.getLogger(__name__)

TOTAL_METRICS: tuple[str, ...] = ("quality", "semantic", "final")
MIN_VALID_REPLICATE_FRACTION = 0.5  # below this many valid bootstrap replicates the CI is reported as NaN


def _compute_totals_fn() -> Callable[[Mapping[str, float]], Any]:
    """The project's official-normalisation totals (imported lazily: it lives in `scoring/`)."""
    from tokentrim.scoring.totals import compute_totals

    return compute_totals


def final_totals(raw: Mapping[str, float]) -> Any:
    """`scoring.totals.compute_totals` (the one Final rule: requested dimensions, label, reason)."""
    from tokentrim.scoring.totals import compute_totals

    return compute_totals(raw)


def vbench_dimension_names() -> tuple[str, ...]:
    """The 16 VBench dimension names (underscore form) as `scoring.totals` defines them."""
    from tokentrim.scoring.totals import ALL_DIMENSIONS

    return tuple(ALL_DIMENSIONS)


def per_video_scores(scores: pd.DataFrame, videos: Sequence[str] | None = None) -> pd.DataFrame:
    """Step 1 of the aggregation: [videos x dimensions] frame of per-video scores (NaN where not scored).

    The rule itself is `tokentrim.scoring.aggregation.per_video_scores` (the one aggregation of scores.csv rows).

    Args:
        scores: `scores.csv` rows (columns video, clip, dimension, score).
        videos: keep only these video stems (e.g. the status-ok ones), in this order; default all.
    """
    from tokentrim.scoring.aggregation import per_video_scores as per_video

    rows = scores[["video", "clip", "dimension", "score"]].to_dict("records")
    by_dim = per_video(rows)
    table = pd.DataFrame(by_dim).sort_index() if by_dim else pd.DataFrame()
    if videos is not None:
        table = table.reindex(list(videos))
    return table.sort_index(axis=1)


def dimension_scorers(scores: pd.DataFrame) -> dict[str, str]:
    """Map each dimension to its scorer name (first one seen)."""
    pairs = scores[["dimension", "scorer"]].drop_duplicates("dimension")
    return dict(zip(pairs["dimension"].astype(str), pairs["scorer"].astype(str)))


@dataclasses.dataclass
class MetricStat:
    """One statistic of one variant: point estimate, CI and (when a baseline exists) paired relative delta."""

    value: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    delta_pct: float = math.nan
    delta_lo: float = math.nan
    delta_hi: float = math.nan
    n: int = 0


@dataclasses.dataclass
class VariantSummary:
    """Everything the tables show for one (backbone, variant)."""

    backbone: str
    label: str
    is_baseline: bool
    baseline_label: str | None  # label of the paired baseline run, None if the backbone has none
    n_videos: int
    n_errors: int
    n_paired: int
    dimensions: dict[str, MetricStat]
    extras: dict[str, MetricStat]
    totals: dict[str, MetricStat]
    dimensions_scored: int  # Final dimensions with a score for this run
    partial: bool  # the Final is over fewer than 16 dimensions
    overhead_x: float
    trigger_rate: float
    tested_batches: int
    regenerations_per_video: float
    pruned_tokens_per_video: float
    notes: list[str]
    final_label: str = ""  # `totals.final_label` of the Final's dimensions ("" = all 16)


def _percentile_ci(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaN when too few replicates were valid."""
    finite = samples[np.isfinite(samples)]
    if samples.size == 0 or finite.size < MIN_VALID_REPLICATE_FRACTION * samples.size:
        return math.nan, math.nan
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.percentile(finite, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def _prompt_weights(prompt_ids: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap over prompts: [n_boot, V] video weights = how often each video's prompt was drawn.

    prompt_ids: [V] integer prompt index of each video (0..P-1).
    """
    num_prompts = int(prompt_ids.max()) + 1 if prompt_ids.size else 0
    draws = rng.integers(0, num_prompts, size=(n_boot, num_prompts))  # [n_boot, P] drawn prompt indices
    counts = np.stack([np.bincount(row, minlength=num_prompts) for row in draws])  # [n_boot, P] draw counts
    return counts[:, prompt_ids].astype(float)  # [n_boot, P] -> [n_boot, V]


def _weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-column weighted mean ignoring NaN: values [V, M], weights [B, V] -> [B, M] (NaN where no weight)."""
    mask = np.isfinite(values).astype(float)  # [V, M]
    filled = np.where(np.isfinite(values), values, 0.0)  # [V, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ filled) / (weights @ mask)  # [B, V] @ [V, M] -> [B, M]


def _totals_row(
    means: np.ndarray, vbench_dims: Sequence[str], compute_totals: Callable[[Mapping[str, float]], Any]
) -> tuple[float, float, float]:
    """(quality, semantic, final) of one vector of dimension means (NaN in a half / Final lacking a dimension)."""
    if not vbench_dims:
        return math.nan, math.nan, math.nan
    totals = compute_totals({dim: float(v) for dim, v in zip(vbench_dims, means)})
    return tuple(math.nan if x is None else float(x) for x in (totals.quality, totals.semantic, totals.total))


def _totals_matrix(
    means: np.ndarray, vbench_dims: Sequence[str], compute_totals: Callable[[Mapping[str, float]], Any]
) -> np.ndarray:
    """[B, Dv] dimension means -> [B, 3] (quality, semantic, final)."""
    return np.array([_totals_row(row, vbench_dims, compute_totals) for row in means]).reshape(-1, 3)


def _relative_delta(variant: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """100 * (variant - baseline) / |baseline|, NaN where the baseline is 0 or NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = 100.0 * (variant - baseline) / np.abs(baseline)
    return np.where(np.isfinite(delta), delta, np.nan)


def _label_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])


def _device_name(env: Mapping[str, Any] | None) -> str | None:
    if not env:
        return None
    for key in ("device_name", "gpu_name", "device"):
        if env.get(key):
            return str(env[key])
    return None


def _trigger_counts(run: RunData, ok_videos: set[str]) -> tuple[int, int, str | None]:
    """(triggers, tested batches, note) from events; tested = not warm-up and a threshold exists.

    Falls back to `videos.csv` (num_triggers / num_batches) when the run has no events.
    """
    events = run.events[run.events["video"].isin(ok_videos)]
    if len(events):
        tested = (~events["is_warmup"]) & np.isfinite(events["threshold"].astype(float))
        return int((events["triggered"] & tested).sum()), int(tested.sum()), None
    ok = run.ok_videos
    note = "trigger rate uses all batches as denominator (no events/*.jsonl)"
    return int(ok["num_triggers"].fillna(0).sum()), int(ok["num_batches"].fillna(0).sum()), note


@dataclasses.dataclass
class _RunMatrix:
    """Per-video score matrix of one run, aligned with prompt/seed keys."""

    keys: list[tuple[str, int]]  # (prompt, seed) per row
    prompts: list[str]
    values: np.ndarray  # [V, M] per-video scores, columns = `columns`
    columns: list[str]
    wall_s: np.ndarray  # [V]


def _run_matrix(run: RunData, columns: Sequence[str]) -> _RunMatrix:
    ok = run.ok_videos.drop_duplicates("video")
    table = per_video_scores(run.scores, videos=list(ok["video"])).reindex(columns=list(columns))
    return _RunMatrix(
        keys=[(str(p), int(s)) for p, s in zip(ok["prompt"], ok["seed"])],
        prompts=[str(p) for p in ok["prompt"]],
        values=table.to_numpy(dtype=float).reshape(len(ok), len(columns)),
        columns=list(columns),
        wall_s=pd.to_numeric(ok["wall_s"], errors="coerce").to_numpy(dtype=float),
    )


def _prompt_ids(prompts: Sequence[str]) -> np.ndarray:
    index = {p: i for i, p in enumerate(sorted(set(prompts)))}
    return np.array([index[p] for p in prompts], dtype=int)


def find_baseline(runs: Sequence[RunData], backbone: str, baseline: str) -> RunData | None:
    """The baseline run of `backbone`: label == baseline, else the first run whose variant == baseline."""
    same = [r for r in runs if r.backbone == backbone]
    for run in same:
        if run.label == baseline:
            return run
    by_variant = [r for r in same if r.variant == baseline]
    if len(by_variant) > 1:
        logger.warning("several %r runs for backbone %s; pairing with %s", baseline, backbone, by_variant[0].run_dir)
    return by_variant[0] if by_variant else None


def summarize_runs(
    runs: Sequence[RunData],
    *,
    baseline: str = BASELINE,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    compute_totals: Callable[[Mapping[str, float]], Any] | None = None,
) -> list[VariantSummary]:
    """Aggregate every run (see module docstring) and compare it with its backbone's baseline.

    Args:
        runs: loaded runs (`run_data.load_runs`).
        baseline (`str`, default "baseline"): label (or variant) of the baseline run (trim none, init none).
        n_boot (`int`, default 1000): bootstrap replicates; 0 disables CIs.
        seed (`int`, default 0): bootstrap seed.
        ci (`float`, default 0.95): confidence level of the percentile intervals.
        compute_totals: override of `tokentrim.scoring.totals.compute_totals` (tests).
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    compute_totals = compute_totals or _compute_totals_fn()
    scorers: dict[str, str] = {}
    for run in runs:
        for dim, scorer in dimension_scorers(run.scores).items():
            scorers.setdefault(dim, scorer)
    known = set(vbench_dimension_names())
    # a dimension enters Final only if VBench scored it and it is one of the 16; anything else is an extra column
    vbench_dims = sorted(d for d, s in scorers.items() if s == "vbench" and d in known)
    extra_dims = sorted(d for d in scorers if d not in vbench_dims)
    columns = [*vbench_dims, *extra_dims]
    num_v = len(vbench_dims)

    summaries = []
    for run in runs:
        base = find_baseline(runs, run.backbone, baseline)
        is_baseline = base is run
        notes: list[str] = []
        mat = _run_matrix(run, columns)
        rng = _label_rng(seed, f"{run.backbone}/{run.label}")

        # 1-2. per-video scores -> mean over videos; 3. totals on the VBench means
        point = _weighted_means(mat.values, np.ones((1, len(mat.keys))))[0] if mat.keys else np.full(len(columns), np.nan)
        point_totals = _totals_matrix(point[None, :num_v], vbench_dims, compute_totals)[0]
        unscored = [vbench_dims[i] for i in range(num_v) if not np.isfinite(point[i])]
        if unscored:
            notes.append(f"Final is NaN: no scored video for requested dimension(s) {', '.join(unscored)}")
        boot_means = np.empty((0, len(columns)))
        boot_totals = np.empty((0, 3))
        if n_boot and mat.keys:
            weights = _prompt_weights(_prompt_ids(mat.prompts), n_boot, rng)  # [n_boot, V]
            boot_means = _weighted_means(mat.values, weights)  # [n_boot, M]
            boot_totals = _totals_matrix(boot_means[:, :num_v], vbench_dims, compute_totals)  # [n_boot, 3]

        def stat(value: float, samples: np.ndarray, n: int) -> MetricStat:
            lo, hi = _percentile_ci(samples, ci) if samples.size else (math.nan, math.nan)
            return MetricStat(value=float(value), ci_lo=lo, ci_hi=hi, n=n)

        counts = np.isfinite(mat.values).sum(axis=0) if mat.keys else np.zeros(len(columns), dtype=int)
        col_stats = {c: stat(point[j], boot_means[:, j], int(counts[j])) for j, c in enumerate(columns)}
        tot_stats = {m: stat(point_totals[k], boot_totals[:, k], len(mat.keys)) for k, m in enumerate(TOTAL_METRICS)}

        # paired comparison with the baseline on common (prompt, seed)
        overhead_x = math.nan
        n_paired = 0
        if base is None:
            notes.append(f"no baseline run {baseline!r} for backbone {run.backbone}: no deltas / overhead")
        else:
            bmat = mat if is_baseline else _run_matrix(base, columns)
            common = sorted(set(mat.keys) & set(bmat.keys))
            n_paired = len(common)
            if not is_baseline and len(common) < max(len(mat.keys), len(bmat.keys)):
                notes.append(
                    f"paired on {len(common)} (prompt, seed) pairs of {len(mat.keys)} variant / {len(bmat.keys)} baseline videos"
                )
            if common:
                row_of_v = {k: i for i, k in enumerate(mat.keys)}
                row_of_b = {k: i for i, k in enumerate(bmat.keys)}
                rows_v = [row_of_v[k] for k in common]
                rows_b = [row_of_b[k] for k in common]
                vals_v, vals_b = mat.values[rows_v], bmat.values[rows_b]  # [Vp, M] each
                joint = np.isfinite(vals_v) & np.isfinite(vals_b)  # pair only where both were scored
                vals_v, vals_b = np.where(joint, vals_v, np.nan), np.where(joint, vals_b, np.nan)
                ones = np.ones((1, len(common)))
                pv, pb = _weighted_means(vals_v, ones)[0], _weighted_means(vals_b, ones)[0]
                tv = _totals_matrix(pv[None, :num_v], vbench_dims, compute_totals)[0]
                tb = _totals_matrix(pb[None, :num_v], vbench_dims, compute_totals)[0]
                delta_cols, delta_tot = _relative_delta(pv, pb), _relative_delta(tv, tb)
                boot_dc = np.empty((0, len(columns)))
                boot_dt = np.empty((0, 3))
                if n_boot and not is_baseline:
                    weights = _prompt_weights(_prompt_ids([k[0] for k in common]), n_boot, rng)  # [n_boot, Vp]
                    bv, bb = _weighted_means(vals_v, weights), _weighted_means(vals_b, weights)  # [n_boot, M]
                    boot_dc = _relative_delta(bv, bb)
                    boot_dt = _relative_delta(
                        _totals_matrix(bv[:, :num_v], vbench_dims, compute_totals),
                        _totals_matrix(bb[:, :num_v], vbench_dims, compute_totals),
                    )
                for j, c in enumerate(columns):
                    _set_delta(col_stats[c], delta_cols[j], boot_dc[:, j] if boot_dc.size else boot_dc, ci)
                for k, m in enumerate(TOTAL_METRICS):
                    _set_delta(tot_stats[m], delta_tot[k], boot_dt[:, k] if boot_dt.size else boot_dt, ci)
                unpaired = [vbench_dims[i] for i in range(num_v) if not (np.isfinite(pv[i]) and np.isfinite(pb[i]))]
                if unpaired and not is_baseline:
                    notes.append(f"total deltas are NaN: no paired scores for {', '.join(unpaired)}")

                # overhead: median generation wall time per video, same device only
                dev_v, dev_b = _device_name(run.env), _device_name(base.env)
                if dev_v is not None and dev_b is not None and dev_v != dev_b:
                    notes.append(f"overhead not computed: devices differ ({dev_v} vs baseline {dev_b})")
                else:
                    if dev_v is None or dev_b is None:
                        notes.append("overhead: device not verified (env.json missing)")
                    wall_v, wall_b = mat.wall_s[rows_v], bmat.wall_s[rows_b]
                    if np.isfinite(wall_v).any() and np.isfinite(wall_b).any():
                        overhead_x = float(np.nanmedian(wall_v) / np.nanmedian(wall_b))

        triggers, tested, trigger_note = _trigger_counts(run, set(run.ok_videos["video"]))
        if trigger_note:
            notes.append(trigger_note)
        ok = run.ok_videos
        scope = final_totals({d: float(point[i]) for i, d in enumerate(vbench_dims)})
        summaries.append(
            VariantSummary(
                backbone=run.backbone,
                label=run.label,
                is_baseline=is_baseline,
                baseline_label=None if base is None else base.label,
                n_videos=len(ok),
                n_errors=int((run.videos["status"].astype(str) != "ok").sum()),
                n_paired=n_paired,
                dimensions={c: col_stats[c] for c in vbench_dims},
                extras={c: col_stats[c] for c in extra_dims},
                totals=tot_stats,
                dimensions_scored=scope.dimensions_scored,
                partial=scope.partial,
                overhead_x=overhead_x,
                trigger_rate=triggers / tested if tested else math.nan,
                tested_batches=tested,
                regenerations_per_video=float(ok["num_regenerations"].mean()) if len(ok) else math.nan,
                pruned_tokens_per_video=float(ok["num_pruned_tokens"].mean()) if len(ok) else math.nan,
                notes=notes,
                final_label=scope.label,
            )
        )
    return summaries


def _set_delta(target: MetricStat, delta: float, samples: np.ndarray, ci: float) -> None:
    target.delta_pct = float(delta)
    if samples.size:
        target.delta_lo, target.delta_hi = _percentile_ci(samples, ci)
