"""Reports from run / sweep directories: paper tables, figures and (optionally) W&B.

Entry point: `make_report(run_or_sweep_dir, ...)`, called by `tokentrim report <dir>`. It reads only files on disk
(`videos.csv`, `scores.csv`, `events/*.jsonl`, `config.yaml`, `env.json`), so it can run anywhere after generation
and scoring, and re-running it rewrites the same files (all writes atomic, bootstrap seeded).

Modules: `run_data` (loading), `aggregate` (explicit aggregation + bootstrap), `tables` (table.md/csv/tex),
`plots` (PNG figures), `detector` (drift signal vs TinyWorld ground truth: detector.md), `wandb_log` (W&B,
offline by default).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokentrim.report import plots as figs
from tokentrim.report.atomic_io import remove_stale_temps, write_text_atomic
from tokentrim.report.aggregate import find_baseline
from tokentrim.report.completeness import missing_parts
from tokentrim.report.detector import write_detector_report
from tokentrim.report.run_data import BASELINE, RunData, differing_parameters, find_run_dirs, flatten_config, load_runs
from tokentrim.report.tables import build_tables, write_tables

logger = logging.getLogger(__name__)

__all__ = ["ReportPaths", "find_run_dirs", "load_runs", "make_report", "swept_parameters"]

@dataclasses.dataclass
class ReportPaths:
    """Files written by `make_report`."""

    out_dir: Path
    tables: dict[str, Path]
    plots: list[Path]
    wandb_runs: list[Path]

    def all(self) -> list[Path]:
        return [*self.tables.values(), *self.plots]


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")
    return slug[:limit] or "x"


def swept_parameters(runs: Sequence[RunData], baseline: str = BASELINE) -> list[str]:
    """Numeric config leaves (dotted keys) that differ between the non-baseline runs of a sweep.

    Seeds, paths, names and dates are ignored (`run_data.NOT_A_PARAMETER`). Empty for a single run.
    """
    return differing_parameters([r.config for r in runs if r.config is not None and r.variant != baseline])


def _drift_plots(
    run: RunData, plot_dir: Path, *, max_videos: int, max_heatmaps: int, token_grid: Sequence[int] | None
) -> list[Path]:
    ok = set(run.ok_videos["video"])
    events = run.events[run.events["video"].isin(ok)]
    if events.empty or not np.isfinite(events["D"].astype(float)).any():
        return []
    tag = _slug(f"{run.backbone}_{run.label}")
    written = [figs.plot_drift_overview(events, plot_dir / f"drift_overview_{tag}.png",
                                         title=f"{run.backbone} / {run.label}: drift severity per batch (grey = warm-up)")]
    ranked = events.groupby("video")["triggered"].sum().sort_values(ascending=False, kind="stable")
    for video in list(ranked.index[:max_videos]):
        written.append(figs.plot_drift_severity(
            events[events["video"] == video], plot_dir / f"drift_{tag}_{_slug(video)}.png",
            title=f"{run.label}: {video}"))
    triggers = events[events["triggered"] & events["drift"].map(lambda d: isinstance(d, list) and len(d) > 0)]
    for row in list(triggers.itertuples(index=False))[:max_heatmaps]:
        grid = row.grid if isinstance(row.grid, list) and len(row.grid) == 2 else token_grid
        written.append(figs.plot_drift_heatmap(
            row.drift, plot_dir / f"heatmap_{tag}_{_slug(row.video)}_t{int(row.t)}.png", grid=grid,
            pruned_indices=row.pruned_indices if isinstance(row.pruned_indices, list) else None,
            title=f"{run.label}: {row.video}, batch t={int(row.t)} (D_t={row.D:.3g} > {row.threshold:.3g})"))
    return written


def _frame_strip(run: RunData, base: RunData, plot_dir: Path, *, num_times: int) -> list[Path]:
    """Frames of the paired video with the most triggers, baseline vs this variant."""
    ok_v = run.ok_videos.set_index("video")
    ok_b = base.ok_videos
    paired = ok_v.reset_index().merge(ok_b[["video", "prompt", "seed"]], on=["prompt", "seed"], suffixes=("", "_base"))
    paired = paired[[run.video_path(v).is_file() and base.video_path(b).is_file()
                     for v, b in zip(paired["video"], paired["video_base"])]]
    if paired.empty:
        return []
    best = paired.sort_values("num_triggers", ascending=False, kind="stable").iloc[0]
    out = plot_dir / f"frames_{_slug(run.backbone + '_' + run.label)}_{_slug(best['video'])}.png"
    return [figs.plot_frame_strip(base.video_path(best["video_base"]), run.video_path(best["video"]), out,
                                   num_times=num_times, labels=(base.label, run.label),
                                   title=f"{best['prompt']} (seed {best['seed']}): {base.label} vs {run.label}")]


def _param_plots(runs: Sequence[RunData], frame: pd.DataFrame, plot_dir: Path, params: Sequence[str],
                 baseline: str, metric: str) -> list[Path]:
    """`metric` vs each swept parameter (absolute, with the baseline as a dashed line) and its paired delta %."""
    written = []
    names = {"final": "Final Score", "quality": "Quality Score", "semantic": "Semantic Score"}
    metric_label = names.get(metric, metric)
    for param in params:
        values = {(r.backbone, r.label): flatten_config(r.config or {}).get(param) for r in runs}
        data = frame[~frame["is_baseline"].astype(bool)].copy()
        data[param] = [values.get((b, v)) for b, v in zip(data["backbone"], data["variant"])]
        data[param] = pd.to_numeric(data[param], errors="coerce")
        if data[param].nunique() < 2 or metric not in data.columns:
            continue
        base_rows = frame[frame["is_baseline"].astype(bool)]
        base_value = float(base_rows[metric].iloc[0]) if len(base_rows) == 1 else None
        written.append(figs.plot_metric_vs_param(
            data, plot_dir / f"{metric}_vs_{_slug(param)}.png", param=param, metric=metric, metric_label=metric_label,
            baseline_value=base_value,
            title=f"{metric_label} vs {param} (bars: bootstrap CI over prompts; dashed: {baseline})"))
        delta = f"{metric}_delta_pct"
        if delta in data.columns and np.isfinite(data[delta].to_numpy(dtype=float)).any():
            written.append(figs.plot_metric_vs_param(
                data, plot_dir / f"{metric}_delta_vs_{_slug(param)}.png", param=param, metric=delta,
                metric_label=f"{metric_label} Δ% vs {baseline}", baseline_value=0.0,
                ci_columns=(f"{metric}_delta_lo", f"{metric}_delta_hi"),
                title=f"{metric_label} change vs paired {baseline} (bars: paired bootstrap CI)"))
    return written


def make_report(
    run_or_sweep_dir: str | os.PathLike,
    *,
    baseline: str = BASELINE,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    plots: bool = True,
    logger_cfg: Any = None,
    out_dir: str | os.PathLike | None = None,
    sweep_params: Sequence[str] | None = None,
    sweep_metric: str = "final",
    token_grid: Sequence[int] | None = None,
    max_video_plots: int = 4,
    max_heatmaps: int = 4,
    frame_strip_times: int = 6,
    wandb_variants: Sequence[str] | None = None,
    detector: Any = None,
) -> ReportPaths:
    """Write table.md / table.csv / table.tex (+ plots/*.png, + W&B) for a run dir or a sweep dir.

    Args:
        run_or_sweep_dir: a run dir (has videos.csv) or a dir with run dirs below it.
        baseline (`str`, default "baseline"): variant label of the paired baseline (trim=none, init=none); the CLI
            passes `report.baseline_variant`.
        wandb_variants: log only these variant labels to W&B (a sweep job logs its own); None = every run.
        n_boot (`int`, default 1000): bootstrap replicates over prompts (0: no CIs).
        seed (`int`, default 0): bootstrap seed.
        ci (`float`, default 0.95): CI level.
        plots (`bool`, default True): write figures to `<out_dir>/plots/`.
        logger_cfg: `logger` config (None / name none: no W&B; see `wandb_log.make_logger`).
        out_dir: where to write; default `run_or_sweep_dir`.
        sweep_params: dotted config keys to plot `sweep_metric` against; None = auto-detect (`swept_parameters`).
        sweep_metric (`str`, default "final"): column of table.csv for the sweep plot.
        token_grid: latent token grid (h, w) for drift heatmaps when events carry no "grid"; None = most square.
        max_video_plots / max_heatmaps (`int`, default 4): per run, how many per-video drift plots / heatmaps.
        frame_strip_times (`int`, default 6): frames per row of the baseline-vs-variant strip.
        detector: `report.detector` (a mapping or `detector.DetectorConfig`; None = its defaults): detector.md /
            detector.csv / plots/detector_roc_*.png for runs scored with scorer=tinyworld (`report.detector`).

    Raises:
        FileNotFoundError: the directory does not exist or holds no videos.csv at any depth <= 4.
    """
    root = Path(run_or_sweep_dir)
    runs = load_runs(root)
    out = Path(out_dir) if out_dir is not None else root
    remove_stale_temps(out, recursive=False)  # a killed report's half-written tables / plots
    remove_stale_temps(out / "plots")
    title = f"TokenTrim report: {root.resolve().name} ({len(runs)} run{'s' if len(runs) != 1 else ''})"
    tables = build_tables(runs, title=title, baseline=baseline, n_boot=n_boot, seed=seed, ci=ci)
    table_paths = write_tables(tables, out)
    missing = missing_parts(root, runs, baseline)
    if missing:  # a partial report says so above its table
        text = Path(table_paths["table_md"]).read_text(encoding="utf-8")
        header = ["**INCOMPLETE**: this report lacks:", "", *[f"- {line}" for line in missing], ""]
        write_text_atomic(table_paths["table_md"], "\n".join(header) + "\n" + text)
    run_plots: dict[tuple[str, str], list[Path]] = {}  # (backbone, label) -> that run's own figures
    sweep_plots: list[Path] = []
    if plots:
        plot_dir = out / "plots"
        for run in runs:
            own = _drift_plots(run, plot_dir, max_videos=max_video_plots, max_heatmaps=max_heatmaps,
                               token_grid=token_grid)
            base = find_baseline(runs, run.backbone, baseline)
            if base is not None and base is not run:
                own += _frame_strip(run, base, plot_dir, num_times=frame_strip_times)
            run_plots[(run.backbone, run.label)] = own
        params = list(sweep_params) if sweep_params is not None else swept_parameters(runs, baseline)
        sweep_plots = _param_plots(runs, tables.frame, plot_dir, params, baseline, sweep_metric)
    detector_paths = write_detector_report(runs, out, detector, baseline=baseline, n_boot=n_boot, ci=ci, plots=plots)
    table_paths.update({k: p for k, p in detector_paths.items() if not k.startswith("detector_roc")})
    sweep_plots += [p for k, p in detector_paths.items() if k.startswith("detector_roc")]
    written_plots = [*(p for own in run_plots.values() for p in own), *sweep_plots]
    wandb_runs: list[Path] = []
    from tokentrim.report.wandb_log import make_logger

    wandb_logger = make_logger(logger_cfg)
    if wandb_logger is not None:
        logged = [r for r in runs if wandb_variants is None or r.label in wandb_variants or r.variant in wandb_variants]
        wandb_runs = wandb_logger.log_report(logged, tables.summaries, out_dir=out, report_frame=tables.frame,
                                             report_files=[*table_paths.values(), *sweep_plots], run_files=run_plots)
    finals = ", ".join(f"{s.label}={s.totals['final'].value:.4f}" for s in tables.summaries
                       if math.isfinite(s.totals["final"].value))
    logger.info("report for %s: %d run(s), %d plot(s); Final: %s", root, len(runs), len(written_plots), finals or "n/a")
    return ReportPaths(out_dir=out, tables=table_paths, plots=written_plots, wandb_runs=wandb_runs)
