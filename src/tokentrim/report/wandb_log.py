"""Weights & Biases logging of a report: one W&B group per sweep, one W&B run per (variant, backbone).

Offline by default: `mode="offline"` needs no account and no network; W&B writes
`<dir>/wandb/offline-run-<date>_<time>-<id>/run-<id>.wandb` plus `files/`. Upload later with

    wandb sync <dir>/wandb/offline-run-*        # or one run dir; needs `wandb login` once

`mode="disabled"` (and `logger=none` in the CLI) does not import wandb at all, so reports work where it is not
installed. The on-disk artefacts (`table.*`, `plots/`, `events/`, `scores.csv`, `env.json`) stay the durable record
(house rule 10); W&B is a viewer.

One W&B run per (variant, backbone) and group, whoever logs it: its id is a hash of (project, group, backbone,
variant), so a rerun, or the next job of a sweep, resumes the run (`resume="allow"`) rather than adding another.
`tokentrim run` in a sweep logs only its own variant (and the baseline it generated).

Each W&B run gets:
    config   the run's resolved `config.yaml` plus `report.{variant, backbone, run_dir}` and `env` (env.json);
    history  one step per generated batch: `drift/D`, `drift/threshold`, `drift/mu`, `drift/sigma`,
             `drift/triggered` (0/1), `drift/t`, `drift/video_index` (videos in `videos.csv` order);
    tables   `drift_series` (every batch), `trigger_events` (triggered batches), `scores` (per metric: value, CI,
             paired delta), `report_table` (the whole `table.csv`);
    summary  `scores/<dimension>`, `totals/{quality,semantic,final}`, `cost/*`;
    media    up to `max_videos` sample mp4s (`log_videos=True` only) and its own plots as images;
    artifact `report-<group>` of type "report" with table.md / table.csv / table.tex and the sweep-level plots,
             logged once per report (by its first run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tokentrim.report.aggregate import VariantSummary
from tokentrim.report.run_data import RunData

logger = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
# `logger.name`: no logger, or W&B (config_schema.LoggerName is built from this tuple)
LOGGER_NAMES: tuple[str, ...] = ("none", "wandb")


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _safe_name(text: str) -> str:
    """Artifact names allow only alphanumerics, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "report"


@dataclasses.dataclass
class WandbLogger:
    """Log report runs to W&B (see module docstring). Hydra: `conf/logger/wandb.yaml` targets this class.

    Args:
        mode (`str`, default "offline"): "offline" | "online" | "disabled".
        project (`str`, default "tokentrim"): W&B project.
        entity (`str | None`): W&B entity (team/user); None = the account default (online only).
        group (`str | None`): W&B group; None = name of the sweep (or run) directory being reported.
        dir (`str | None`): where W&B writes `wandb/`; None = the report's output directory.
        tags (`Sequence[str]`): tags of every run.
        log_videos (`bool`, default False): upload sample mp4s (`wandb.Video`), at most `max_videos` per run.
        max_videos (`int`, default 4): cap on logged videos per run.
    """

    mode: str = "offline"
    project: str = "tokentrim"
    entity: str | None = None
    group: str | None = None
    dir: str | None = None
    tags: Sequence[str] = ()
    log_videos: bool = False
    max_videos: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {self.mode!r}")
        if self.max_videos < 0:
            raise ValueError(f"logger.max_videos must be >= 0, got {self.max_videos}")

    def log_report(
        self,
        runs: Sequence[RunData],
        summaries: Sequence[VariantSummary],
        *,
        out_dir: str | os.PathLike,
        report_frame: pd.DataFrame | None = None,
        report_files: Sequence[str | os.PathLike] = (),
        run_files: Mapping[tuple[str, str], Sequence[str | os.PathLike]] | None = None,
    ) -> list[Path]:
        """Log every run as one W&B run of the group; returns the local W&B run directories (empty when disabled).

        A W&B run's id is fixed by (project, group, backbone, variant), so a rerun or a second sweep job resumes that
        run instead of adding one. `run_files[(backbone, label)]` are the run's own plots (logged as its images);
        `report_files` (tables, sweep-level plots) travel once, as the `report-<group>` artifact of the first run.
        """
        if self.mode == "disabled":
            return []
        import wandb

        out_dir = Path(out_dir)
        group = self.group or out_dir.resolve().name
        wandb_dir = Path(self.dir) if self.dir else out_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        by_key = {(s.backbone, s.label): s for s in summaries}
        run_dirs = []
        try:
            for index, run_data in enumerate(runs):
                key = (run_data.backbone, run_data.label)
                run_dirs.append(
                    self._log_one(
                        wandb,
                        run_data,
                        by_key.get(key),
                        group=group,
                        wandb_dir=wandb_dir,
                        report_frame=report_frame,
                        images=[Path(p) for p in (run_files or {}).get(key, ())],
                        report_files=[Path(p) for p in report_files] if index == 0 else [],
                    )
                )
        finally:
            # `run.finish()` can return before the W&B service has flushed `run-<id>.wandb` to disk (seen under CPU
            # load with wandb 0.31); teardown waits for the service, so the offline files are complete on return.
            wandb.teardown()
        return run_dirs

    def _log_one(
        self,
        wandb: Any,
        run_data: RunData,
        summary: VariantSummary | None,
        *,
        group: str,
        wandb_dir: Path,
        report_frame: pd.DataFrame | None,
        images: list[Path],
        report_files: list[Path],
    ) -> Path:
        config = dict(run_data.config or {})
        config["report"] = {"variant": run_data.label, "backbone": run_data.backbone, "run_dir": str(run_data.run_dir)}
        if run_data.env is not None:
            config["env"] = run_data.env
        run = wandb.init(
            mode=self.mode,
            project=self.project,
            entity=self.entity,
            group=group,
            name=f"{run_data.backbone}/{run_data.label}",
            id=run_id(self.project, group, run_data.backbone, run_data.label),
            resume="allow",
            job_type="report",
            tags=list(self.tags),
            dir=str(wandb_dir),
            config=config,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        try:
            self._log_drift(wandb, run, run_data)
            if summary is not None:
                self._log_scores(wandb, run, summary)
            if report_frame is not None:
                run.log({"report_table": wandb.Table(dataframe=report_frame.astype(object).where(report_frame.notna(), None))})
            pictures = {f"plots/{p.stem}": wandb.Image(str(p)) for p in images if p.suffix == ".png" and p.is_file()}
            if pictures:
                run.log(pictures)
            if self.log_videos:
                ok = run_data.ok_videos["video"].tolist()[: self.max_videos]
                videos = {f"videos/{v}": wandb.Video(str(run_data.video_path(v)), format="mp4")
                          for v in ok if run_data.video_path(v).is_file()}
                if videos:
                    run.log(videos)
            if report_files:
                artifact = wandb.Artifact(_safe_name(f"report-{group}"), type="report")
                for path in report_files:
                    if path.is_file():
                        artifact.add_file(str(path), name=path.name if path.suffix != ".png" else f"plots/{path.name}")
                run.log_artifact(artifact)
            sync_dir = Path(run.settings.sync_dir)
        finally:
            run.finish()
        logger.info("W&B %s run %s/%s in %s", self.mode, group, run_data.label, sync_dir)
        return sync_dir

    @staticmethod
    def _log_drift(wandb: Any, run: Any, run_data: RunData) -> None:
        """Per-batch drift series (history) plus `drift_series` and `trigger_events` tables."""
        ok = run_data.ok_videos["video"].tolist()
        events = run_data.events[run_data.events["video"].isin(ok)]
        if events.empty:
            return
        order = {v: i for i, v in enumerate(ok)}
        scalar_cols = ["video", "t", "D", "mu", "sigma", "threshold", "is_warmup", "triggered", "retries",
                       "num_pruned_tokens", "num_pruned_entries", "decision_ms"]
        series = events[scalar_cols].copy()
        series["video_index"] = series["video"].map(order)
        series = series.sort_values(["video_index", "t"], kind="stable")
        for row in series.itertuples(index=False):
            run.log(
                {
                    "drift/D": _finite_or_none(float(row.D)),
                    "drift/threshold": _finite_or_none(float(row.threshold)),
                    "drift/mu": _finite_or_none(float(row.mu)),
                    "drift/sigma": _finite_or_none(float(row.sigma)),
                    "drift/triggered": int(bool(row.triggered)),
                    "drift/t": int(row.t),
                    "drift/video_index": int(row.video_index),
                }
            )
        table_frame = series.astype(object).where(series.notna(), None)
        run.log({"drift_series": wandb.Table(dataframe=table_frame)})
        triggered = table_frame[series["triggered"].to_numpy(dtype=bool)]
        run.log({"trigger_events": wandb.Table(columns=list(table_frame.columns), data=triggered.values.tolist())})

    @staticmethod
    def _log_scores(wandb: Any, run: Any, summary: VariantSummary) -> None:
        """Per-dimension and total scores into the summary and a `scores` table."""
        rows = []
        for kind, stats in (("dimension", summary.dimensions), ("total", summary.totals), ("extra", summary.extras)):
            for name, stat in stats.items():
                key = f"totals/{name}" if kind == "total" else f"scores/{name}"
                run.summary[key] = _finite_or_none(stat.value)
                if not summary.is_baseline:
                    run.summary[f"{key}_delta_pct"] = _finite_or_none(stat.delta_pct)
                rows.append([name, kind] + [_finite_or_none(v) for v in (
                    stat.value, stat.ci_lo, stat.ci_hi, stat.delta_pct, stat.delta_lo, stat.delta_hi)] + [stat.n])
        run.log({"scores": wandb.Table(
            columns=["metric", "kind", "value", "ci_lo", "ci_hi", "delta_pct", "delta_lo", "delta_hi", "n"], data=rows)})
        run.summary["cost/overhead_x"] = _finite_or_none(summary.overhead_x)
        run.summary["cost/trigger_rate"] = _finite_or_none(summary.trigger_rate)
        run.summary["cost/regenerations_per_video"] = _finite_or_none(summary.regenerations_per_video)
        run.summary["cost/pruned_tokens_per_video"] = _finite_or_none(summary.pruned_tokens_per_video)
        run.summary["dimensions_scored"] = summary.dimensions_scored
        run.summary["partial"] = summary.partial


def run_id(project: str, group: str, backbone: str, label: str) -> str:
    """The W&B run id of one variant of one sweep: the same on every rerun (W&B ids allow [a-z0-9], 8-64 chars)."""
    return hashlib.sha256(f"{project}/{group}/{backbone}/{label}".encode()).hexdigest()[:32]


def make_logger(logger_cfg: Any) -> WandbLogger | None:
    """Build the logger from a `logger` config mapping (Hydra group `logger/`), or None for no logging.

    Accepts None, a mapping with `name: none` or without `_target_` (no logging), or the keys of `WandbLogger`
    (`_target_`/`name` are ignored). A `WandbLogger` instance is returned as is.
    """
    if logger_cfg is None or isinstance(logger_cfg, WandbLogger):
        return logger_cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(logger_cfg, DictConfig):
            logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
    except ImportError:
        pass
    if not isinstance(logger_cfg, dict):
        raise TypeError(f"logger config must be a mapping or None, got {type(logger_cfg).__name__}")
    cfg = dict(logger_cfg)
    name = cfg.pop("name", None)
    target = cfg.pop("_target_", None)
    if name in (None, "none") and target is None:
        return None
    if name not in (None, *LOGGER_NAMES):
        raise ValueError(f"logger.name must be one of {list(LOGGER_NAMES)}, got {name!r}")
    fields = {f.name for f in dataclasses.fields(WandbLogger)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(f"logger config has unknown key(s) {unknown}; allowed: {sorted(fields)}")
    return WandbLogger(**cfg)
