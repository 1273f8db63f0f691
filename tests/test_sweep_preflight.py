"""The sweep preflight (hydra callback `tokentrim.sweep_preflight.SweepPreflight`): before any job of `-m` runs, two
points that are provably the same experiment are refused in one line naming both; every shipped experiment passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from test_cli import TINY_WAN, tokentrim
from tokentrim.sweep_preflight import SweepRefused, check_points, sweep_points

CONF = Path(__file__).resolve().parents[1] / "src" / "tokentrim" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SWEEPS = [e for e in EXPERIMENTS if "sweeper:" in (CONF / "experiment" / f"{e}.yaml").read_text()]  # `-m` experiments


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "prompts.txt").write_text("a red ball rolls\n")
    return tmp_path


def tiny(workdir: Path, *extra: str) -> list[str]:
    return [*TINY_WAN, f"prompts.path={workdir / 'prompts.txt'}", f"paths.output_root={workdir / 'out'}", *extra]


def test_run_refuses_two_equivalent_points_in_one_line_before_any_job(workdir: Path) -> None:
    proc = tokentrim("run", "-m", "trim.enabled=false", "trim.lam=1.0,2.0", *tiny(workdir), cwd=workdir, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "tokentrim run: sweep points [trim.lam=1.0] and [trim.lam=2.0] are the same experiment (same backbone, prompts, "
        "seeds, init and trim experiment_key; trim.lam: never triggers (enabled=false)); drop one of them"]
    assert "Launching" not in proc.stdout and not (workdir / "out").exists()


def test_run_accepts_ablation_warmup_and_launches_every_point(workdir: Path) -> None:
    """The preflight lets all 4 points through; each job generates its tiny video under its own variant directory."""
    proc = tokentrim("generate", "-m", "experiment=ablation_warmup", "baseline=false",
                     *tiny(workdir, "backbone.video.num_latent_frames=18"), cwd=workdir, check=False)
    assert "sweep preflight: 4 points, each a different experiment" in proc.stdout, proc.stderr[-2000:]
    assert "Launching 4 jobs" in proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.parent.name for p in (workdir / "out").rglob("videos.csv"))
    assert len(runs) == 4 and len(set(runs)) == 4, runs


def points_of(*overrides: str) -> tuple[list[list[str]], list[str]]:
    return sweep_points(compose("config", overrides=list(overrides), return_hydra_config=True))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes_the_preflight(experiment: str, tmp_path: Path) -> None:
    """A sweep experiment expands to several points that all differ; a single-run one (e.g. detectors) to one."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a prompt\n")
    fixed = [f"experiment={experiment}", "prompts=file", f"prompts.path={prompts}"]
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        points, swept = points_of(*fixed)
        if experiment not in SWEEPS:
            assert points == [fixed] and not swept
            return
        assert len(points) > 1 and swept
        check_points(points, swept, lambda point: compose("config", overrides=point))


def test_a_warmup_longer_than_the_video_is_the_monitor_and_is_refused(tmp_path: Path) -> None:
    """3 batches: W = 2 and W = 4 both leave no tested batch (the first tested is W + 2)."""
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        points, swept = points_of("experiment=ablation_warmup", "num_latent_frames=9")
        assert [p[0] for p in points] == ["trim.warmup=0", "trim.warmup=1", "trim.warmup=2", "trim.warmup=4"]
        with pytest.raises(SweepRefused, match=r"\[trim\.warmup=2\] and \[trim\.warmup=4\] are the same experiment"):
            check_points(points, swept, lambda point: compose("config", overrides=point))
        points = [[f"trim.warmup={w}", f"trim.p={p}", "num_latent_frames=9"] for w in (0, 1) for p in (0.1, 0.2)]
        check_points(points, ["trim.warmup", "trim.p"], lambda point: compose("config", overrides=point))  # all differ
        points = [[f"trim.dynamic_p_max={m}", f"seed_offset={s}"] for s in (0, 1) for m in (0.3, 0.4)]
        with pytest.raises(SweepRefused, match=r"\[trim\.dynamic_p_max=0\.3 seed_offset=0\] and \[trim\.dynamic_p_max="
                                               r"0\.4 seed_offset=0\] .*trim\.dynamic_p_max: dynamic_p=false"):
            check_points(points, ["trim.dynamic_p_max", "seed_offset"], lambda point: compose("config", overrides=point))
