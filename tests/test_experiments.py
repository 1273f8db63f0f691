"""Every config group composes, and every experiment's sweep points compose and validate (smoke mode: no model is
built; `tests/test_cli.py` runs a real multirun)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tokentrim.cli import validate, variant_name

CONF = Path(__file__).resolve().parents[1] / "src" / "tokentrim" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def sweep_points(experiment: str) -> list[list[str]]:
    """The points of the experiment's `hydra.sweeper.params`; [[]] (its one run) for a single-run one (detectors)."""
    params = OmegaConf.select(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"), "hydra.sweeper.params",
                              default={})
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(point) for point in itertools.product(*axes)]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_of_every_experiment_composes_and_validates(experiment: str, tmp_path: Path) -> None:
    names = set()
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        for point in sweep_points(experiment):
            # as shipped, on this CPU-only machine: no CUDA device and no user-supplied 1.3B files
            cfg = compose("config", overrides=[f"experiment={experiment}", *point, "device=cpu"])
            validate(cfg, command="score")
            names.add((cfg.backbone.name, _name(cfg, point)))
    assert len(names) == len(sweep_points(experiment)), "two sweep points would share a results directory"


def _name(cfg, point: list[str]) -> str:
    from unittest import mock

    with mock.patch("tokentrim.cli._task_overrides", return_value=point):
        return variant_name(cfg)


@pytest.mark.parametrize("group", ["backbone", "trim", "init", "prompts", "scorer", "logger", "launcher", "paths"])
def test_every_option_of_every_group_composes(group: str, tmp_path: Path) -> None:
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        for option in options:
            extra = [f"prompts.path={tmp_path / 'p.txt'}"] if (group, option) == ("prompts", "file") else []
            cfg = compose("config", overrides=[f"{group}={option}", *extra])
            assert cfg[group] is not None


def test_default_config_is_the_embedded_tinyworld_job() -> None:
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config")
    assert (cfg.backbone.kind, cfg.trim.name, cfg.scorer.name, cfg.prompts.name, cfg.device) == ("tinyworld", "tokentrim", "tinyworld", "tinyworld", "cpu")
    assert (cfg.trim.p, cfg.trim.lam, cfg.trim.warmup, cfg.trim.max_retries) == (0.1, 2.0, 2, 1)  # the paper's defaults
    assert cfg.baseline is True
