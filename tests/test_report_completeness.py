"""A partial report says what it lacks: planned sweep variants without a run directory, videos not generated or not
scored, and a baseline without scores (a killed sweep's table must not look complete)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from synthetic_runs import synthetic_run_dir

from tokentrim.report import make_report

PROMPTS = ("a red car", "a cat", "waves at dusk")


def _prompts_section(prompts) -> dict:
    return {"name": "test", "source": "list", "prompts": list(prompts), "seeds": [0], "limit": None}


def _killed_sweep(root: Path) -> Path:
    """Experiment dir of `tokentrim run -m trim.p=0.05,0.2` killed during the second variant's generation."""
    exp = root / "exp"
    sweep = exp / "_hydra" / "multirun_2026-01-01_00-00-00"
    sweep.mkdir(parents=True)
    saved = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                   "params": None},
                       "overrides": {"task": ["trim.p=0.05,0.2", "backbone=self_forcing"]}}}
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    config = {"prompts": _prompts_section(PROMPTS), "seed_offset": 0}
    synthetic_run_dir(exp / "self_forcing" / "baseline", prompts=PROMPTS, seeds=(0,), seed=1, config=config)
    # the p=0.05 variant finished 2 of its 3 videos
    synthetic_run_dir(exp / "self_forcing" / "tokentrim_p0.05", trim="tokentrim", prompts=PROMPTS[:2], seeds=(0,),
                      seed=2, config=config)
    return exp


def test_a_killed_sweeps_report_names_the_missing_variant_and_videos(tmp_path: Path) -> None:
    exp = _killed_sweep(tmp_path)
    paths = make_report(exp, n_boot=0, plots=False)
    table = Path(paths.tables["table_md"]).read_text()
    head = table.split("\n\n")[0]
    assert head.startswith("**INCOMPLETE**")
    assert "self_forcing/tokentrim_p0.2: planned by sweep multirun_2026-01-01_00-00-00 but has no run directory" in table
    assert "self_forcing/tokentrim_p0.05: 1 of 3 videos not generated (waves at dusk-0)" in table
    assert "baseline: planned" not in table  # the baseline of the sweep exists


def test_a_sweep_jobs_own_report_inside_hydra_plans_the_same(tmp_path: Path) -> None:
    """`tokentrim run -m` reports from inside the Hydra app (GlobalHydra already initialised)."""
    from hydra import initialize_config_dir

    from tokentrim.cli import CONF_DIR

    exp = _killed_sweep(tmp_path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        table = Path(make_report(exp, n_boot=0, plots=False).tables["table_md"]).read_text()
    assert "self_forcing/tokentrim_p0.2: planned by sweep" in table and "planned variants unknown" not in table


def test_a_report_after_a_scoring_kill_warns_that_the_baseline_columns_are_missing(tmp_path: Path) -> None:
    exp = _killed_sweep(tmp_path)
    (exp / "self_forcing" / "baseline" / "scores.csv").unlink()
    table = Path(make_report(exp, n_boot=0, plots=False).tables["table_md"]).read_text()
    assert "self_forcing/baseline: 3 of 3 videos not scored" in table
    assert "self_forcing/baseline: no scores: the baseline's columns and every delta are missing" in table


def test_a_complete_report_has_no_incomplete_header(tmp_path: Path) -> None:
    config = {"prompts": _prompts_section(PROMPTS[:2]), "seed_offset": 0}
    synthetic_run_dir(tmp_path / "self_forcing" / "baseline", prompts=PROMPTS[:2], seeds=(0,), seed=1, config=config)
    synthetic_run_dir(tmp_path / "self_forcing" / "tokentrim", trim="tokentrim", prompts=PROMPTS[:2], seeds=(0,),
                      seed=2, config=config)
    table = Path(make_report(tmp_path, n_boot=0, plots=False).tables["table_md"]).read_text()
    assert "INCOMPLETE" not in table
