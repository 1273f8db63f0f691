"""Launchers (`conf/launcher/`) and the Optuna search (`conf/hparams_search/`) on the tiny random-weight backbone.

joblib and multigpu run real parallel processes (hydra-joblib-launcher); slurm runs its jobs through submitit's local
executor (`hydra/launcher=submitit_local`: the same pickling and job plumbing, no sbatch); the slurm and multigpu
configs are also composed against their plugin's schema. The Optuna search runs 2 trials. The Ray config is not
exercised here (its plugin is not installed).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from test_cli import TINY_WAN, tokentrim
from tokentrim.cli import CONF_DIR
from tokentrim.video_io import read_video

PROMPTS = ["a red ball rolls", "a blue cube spins", "a green cone sits"]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    return tmp_path


def common(workdir: Path, *extra: str) -> list[str]:
    return [*TINY_WAN, f"prompts.path={workdir / 'prompts.txt'}", f"paths.output_root={workdir / 'out'}", *extra]


def job_logs(experiment: Path) -> list[str]:
    """Text of every job log of the experiment's multiruns (Hydra writes one per job: <job num>/cli.log)."""
    return [p.read_text() for p in sorted(experiment.glob("_hydra/multirun_*/*/*.log"))]


def generated_names(log: str) -> list[str]:
    """Videos a job generated ("<video>: 1.23s generation, 0 triggers" log lines)."""
    return re.findall(r"tokentrim\.generate\]\[INFO\] - (.+?): [\d.]+s generation", log)


def assert_run_dir_complete(run: Path, names: list[str]) -> None:
    """Manifest lists each video once, every mp4 decodes, meta/events exist, no temp file is left."""
    manifest = pd.read_csv(run / "videos.csv")
    assert sorted(manifest["video"]) == sorted(names)
    assert (manifest["status"] == "ok").all()
    assert sorted(p.stem for p in (run / "videos").iterdir()) == sorted(names)
    assert sorted(p.stem for p in (run / "meta").iterdir()) == sorted(names)
    assert sorted(p.stem for p in (run / "events").iterdir()) == sorted(names)
    for name in names:
        frames, _ = read_video(run / "videos" / f"{name}.mp4")
        assert frames.shape[0] == 33
    assert not [p for p in run.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_launcher_configs_compose_against_their_plugin_schemas() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        multigpu = compose("config", overrides=["launcher=multigpu", "shard.count=4"], return_hydra_config=True)
        slurm = compose("config", overrides=["launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
        joblib = compose("config", overrides=["launcher=joblib"], return_hydra_config=True)
        local = compose("config", return_hydra_config=True)
    assert multigpu.launcher.name == "multigpu" and multigpu.hydra.launcher.n_jobs == 4
    assert multigpu.hydra.sweeper.params["shard.index"] == "range(0,4)"
    assert multigpu.hydra.launcher._target_.endswith("JoblibLauncher") and multigpu.device == "cuda:0"
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.partition == "gpu"
    assert slurm.hydra.launcher.gpus_per_node == 1 and slurm.device == "cuda"
    assert joblib.launcher.name == "joblib" and joblib.hydra.launcher.n_jobs == 2
    assert local.launcher.name == "local" and local.hydra.launcher._target_.endswith("BasicLauncher")


def test_joblib_sweep_runs_each_variant_in_its_own_process_and_the_shared_baseline_stays_valid(workdir: Path) -> None:
    # both jobs generate the shared baseline video at the same time: atomic writes keep one valid copy
    proc = tokentrim("generate", "-m", "launcher=joblib", "trim.p=0.05,0.2", *common(workdir, "prompts.limit=1"),
                     cwd=workdir)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    experiment = workdir / "out" / "default"
    runs = sorted(p.name for p in (experiment / "self_forcing").iterdir())
    assert runs == ["baseline", "tokentrim_p0.05", "tokentrim_p0.2"]
    for run in runs:
        assert_run_dir_complete(experiment / "self_forcing" / run, ["a red ball rolls-0"])
        assert not (experiment / "self_forcing" / run / "scores.csv").exists()  # `generate` ran, not `run`
    logs = job_logs(experiment)
    assert len(logs) == 2 and all(len(generated_names(log)) in (1, 2) for log in logs)


def test_multigpu_shards_generate_every_video_once_and_one_plain_run_scores_them(workdir: Path) -> None:
    # step 1: one process per "GPU" (here 2 CPU processes), each its own prompt shard
    tokentrim("generate", "-m", "launcher=multigpu", "shard.count=2", "device=cpu", *common(workdir, "baseline=false"),
              cwd=workdir)
    experiment = workdir / "out" / "default"
    run = experiment / "self_forcing" / "tokentrim"
    names = [f"{p}-0" for p in PROMPTS]
    assert_run_dir_complete(run, names)
    per_shard = [generated_names(log) for log in job_logs(experiment)]
    assert sorted(map(sorted, per_shard)) == sorted([sorted(names[0::2]), sorted(names[1::2])])  # disjoint shards
    mtimes = {p: p.stat().st_mtime_ns for p in (run / "videos").iterdir()}
    # step 2: one plain run finds every video done, rebuilds the manifest, scores and reports once
    proc = tokentrim("run", *common(workdir, "baseline=false"), cwd=workdir)
    out = proc.stdout + proc.stderr
    assert "3 videos, 3 already done" in out and not generated_names(out)
    assert {p: p.stat().st_mtime_ns for p in (run / "videos").iterdir()} == mtimes
    assert sorted(pd.read_csv(run / "scores.csv")["video"]) == sorted(names)
    assert (experiment / "table.csv").exists()


def test_slurm_launcher_runs_sweep_jobs_through_submitit(workdir: Path) -> None:
    tokentrim("generate", "-m", "launcher=slurm", "hydra/launcher=submitit_local", "device=cpu", "trim.p=0.05,0.2",
              *common(workdir, "prompts.limit=1", "baseline=false"), cwd=workdir)
    experiment = workdir / "out" / "default"
    for run in ("tokentrim_p0.05", "tokentrim_p0.2"):
        assert_run_dir_complete(experiment / "self_forcing" / run, ["a red ball rolls-0"])
    submitit = list(experiment.glob("_hydra/multirun_*/.submitit/*/*_result.pkl"))
    assert len(submitit) == 2  # each job ran as a submitit job


def test_optuna_search_maximises_the_final_score_the_report_shows(workdir: Path) -> None:
    tokentrim("run", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *common(workdir, "prompts.limit=1"),
              cwd=workdir)
    experiment = workdir / "out" / "hparams_optuna"
    trials = sorted(p.name for p in (experiment / "self_forcing").iterdir() if p.name != "baseline")
    assert len(trials) == 2 and all(re.fullmatch(r"tokentrim_p[\d.]+_lam[\d.]+_warmup[0124]", t) for t in trials)
    for trial in trials:
        p = float(re.search(r"_p([\d.]+)_", trial).group(1))
        lam = float(re.search(r"_lam([\d.]+)_", trial).group(1))
        assert 0.05 <= p <= 0.3 and 0.5 <= lam <= 3.0
    (results_file,) = experiment.glob("_hydra/multirun_*/optimization_results.yaml")
    results = yaml.safe_load(results_file.read_text())
    table = pd.read_csv(experiment / "table.csv")
    finals = table.loc[~table["is_baseline"], "final"]
    assert len(finals) == 2
    assert math.isclose(results["best_value"], finals.max(), rel_tol=1e-9)
    assert set(results["best_params"]) == {"trim.p", "trim.lam", "trim.warmup"}
