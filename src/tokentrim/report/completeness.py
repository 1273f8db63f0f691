"""What a report is missing: planned variants without a run directory, videos not generated, videos not scored, and a
baseline whose columns are absent. A killed sweep's table must not look complete.

Planned variants come from the Hydra sweeps of the experiment: every `multirun.yaml` under the report's directory
(Hydra writes it before the first job starts) holds the sweep's command-line overrides (`hydra.overrides.task`) and
the experiment's `hydra.sweeper.params`; each point is composed and named as the CLI names its directory
(`tokentrim.cli.variant_name`). Sweepers that choose points as they go (Optuna) plan nothing in advance and are skipped.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokentrim.report.run_data import RunData

logger = logging.getLogger(__name__)

MAX_NAMED = 5  # names listed per line; the rest are counted


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def sweep_points(multirun_yaml: Path) -> list[list[str]] | None:
    """The override list of every point of a basic-sweeper sweep, or None for another sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    saved = OmegaConf.load(multirun_yaml)
    sweeper = OmegaConf.select(saved, "hydra.sweeper._target_", default="")
    if not str(sweeper).endswith("BasicSweeper"):
        return None
    params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
    texts = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(saved, "hydra.overrides.task", default=[]))
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(texts):
        key = override.get_key_element()
        if override.is_sweep_override():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(point) for point in itertools.product(*axes.values())]


def planned_runs(root: Path) -> dict[tuple[str, str], str]:
    """(backbone, variant) of every planned sweep point under `root` -> the sweep folder that planned it."""
    from tokentrim.cli import baseline_config, variant_name

    planned: dict[tuple[str, str], str] = {}
    for multirun in sorted(root.rglob("multirun.yaml")):
        points = sweep_points(multirun)
        if points is None:
            continue
        for overrides in points:
            cfg = _compose(overrides)
            name = variant_name(cfg, overrides=overrides)
            planned[(str(cfg.backbone.name), name)] = multirun.parent.name
            if cfg.baseline and name != cfg.report.baseline_variant:
                planned[(str(cfg.backbone.name), variant_name(baseline_config(cfg)))] = multirun.parent.name
    return planned


def _compose(overrides: list[str]):
    """The config of one sweep point; inside a Hydra app (a sweep job's report) through the app's own Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tokentrim.cli import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="tokentrim"):
        return compose(config_name="config", overrides=overrides)


def expected_videos(config: dict[str, Any]) -> list[str] | None:
    """Video names a run directory's config.yaml asks for (every shard), or None if they cannot be listed."""
    from tokentrim.generate import jobs_of

    try:
        return [job.name for job in jobs_of(config["prompts"], int(config.get("seed_offset", 0)))]
    except (KeyError, OSError, ValueError, TypeError):
        return None


def missing_parts(root: Path, runs: Sequence[RunData], baseline: str) -> list[str]:
    """One line per gap of the report over `runs` (loaded from `root`); [] when nothing is missing."""
    lines = []
    present = {(run.backbone, run.run_dir.name) for run in runs} | {(run.backbone, run.variant) for run in runs}
    try:
        planned = planned_runs(root)
    except Exception as err:  # noqa: BLE001  an unreadable sweep record must not stop the report: it is recorded
        lines.append(f"planned variants unknown: a sweep record under {root} could not be read ({err})")
        planned = {}
    absent = sorted(key for key in planned if key not in present)
    for backbone, variant in absent:
        lines.append(f"{backbone}/{variant}: planned by sweep {planned[(backbone, variant)]} but has no run directory")
    for run in runs:
        where = f"{run.backbone}/{run.run_dir.name}"
        ok = set(run.ok_videos["video"])
        expected = expected_videos(run.config) if run.config is not None else None
        if expected is not None:
            missing = sorted(set(expected) - ok)
            if missing:
                lines.append(f"{where}: {len(missing)} of {len(expected)} videos not generated ({_named(missing)})")
        scored = set(run.scores["video"]) if not run.scores.empty else set()
        unscored = sorted(ok - scored)
        if unscored:
            lines.append(f"{where}: {len(unscored)} of {len(ok)} videos not scored ({_named(unscored)})")
    for backbone in sorted({run.backbone for run in runs}):
        base = [run for run in runs if run.backbone == backbone and baseline in (run.label, run.variant)]
        if not base:
            lines.append(f"{backbone}: no baseline run {baseline!r}: no baseline columns, deltas or overhead")
        elif base[0].scores.empty:
            lines.append(f"{backbone}/{baseline}: no scores: the baseline's columns and every delta are missing")
    for line in lines:
        logger.warning("report incomplete: %s", line)
    return lines
