"""Sweep helpers: the objective an Optuna search (`hparams_search=optuna`) maximises.

`tokentrim run` returns `final_score(run_dir)` of the variant it ran, so Hydra sweepers that read the task's return
value (hydra-optuna-sweeper) optimise the number the report's table shows in its "Final" column.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["final_score"]


def final_score(run_dir: str | os.PathLike) -> float:
    """Final Score of one run directory: the point estimate of the report (`report.aggregate.summarize_runs`).

    Official VBench normalisation over the VBench dimensions the run scored (weights renormalised when fewer than 16),
    mean over its status-ok videos. NaN (with a warning) when the run has no VBench score, so that a sweeper records
    the trial as failed instead of stopping the sweep.
    """
    from tokentrim.report.aggregate import summarize_runs
    from tokentrim.report.run_data import load_run

    run_dir = Path(run_dir)
    (summary,) = summarize_runs([load_run(run_dir)], n_boot=0)
    value = float(summary.totals["final"].value)
    if not math.isfinite(value):
        logger.warning("%s: no Final Score (no VBench dimension scored); objective = nan", run_dir)
    else:
        logger.info("%s: Final Score %.6f (%d/16 dimensions)", run_dir, value, summary.dimensions_scored)
    return value
