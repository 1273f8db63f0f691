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

    Official VBench normalisation over the VBench dimensions the run requested (`scoring.totals`: weights renormalised
    when fewer than 16, labelled), mean over its status-ok videos. NaN (with a warning naming the reason) when the run
    has no VBench score or a requested dimension has no scored video, so that a sweeper records the trial as failed
    instead of stopping the sweep.
    """
    from tokentrim.report.aggregate import summarize_runs
    from tokentrim.report.run_data import load_run

    run_dir = Path(run_dir)
    (summary,) = summarize_runs([load_run(run_dir)], n_boot=0)
    value = float(summary.totals["final"].value)
    if not math.isfinite(value):
        reason = "; ".join(summary.notes) or "no VBench dimension scored"
        logger.warning("%s: no Final Score (%s); objective = nan", run_dir, reason)
    else:
        logger.info("%s: Final Score %.6f (%s)", run_dir, value, summary.final_label or "16/16")
    return value
