"""scripts/tinyworld_shift_sweep.py: the shipped model's in-window scores per sampler shift (tiny.yaml's evidence)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tokentrim.tinyworld.metrics import DIMENSIONS

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("shift_sweep", ROOT / "scripts" / "tinyworld_shift_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_writes_scores_per_shift_and_differs_between_shifts(tmp_path):
    out = tmp_path / "sweep.json"
    _script().main(["--out", str(out), "--shifts", "1,5", "--prompts", "2"])
    record = json.loads(out.read_text())
    assert record["prompt_seed"] == 1 and record["latent_frames"] == 12 and set(record["scores"]) == {"1.0", "5.0"}
    for scores in record["scores"].values():
        assert set(scores) == set(DIMENSIONS) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert record["scores"]["1.0"] != record["scores"]["5.0"]  # the shift reaches the sampler
    assert record["denoising_steps"] == [1000, 750, 500, 250]
    for errors in record["count_errors"].values():  # frames by (detected - prompted objects), keys like "+1"
        assert all(key[0] in "+-" and int(key) >= -3 for key in errors) and all(n > 0 for n in errors.values())


def test_steps_option_changes_the_sampler(tmp_path):
    script = _script()
    assert script.evenly_spaced_steps(8) == [1000, 875, 750, 625, 500, 375, 250, 125]
    out = tmp_path / "s2.json"
    script.main(["--out", str(out), "--shifts", "5", "--prompts", "1", "--steps", "2"])
    record = json.loads(out.read_text())
    assert record["denoising_steps"] == [1000, 500] and set(record["scores"]) == {"5.0"}
    guided = tmp_path / "g.json"
    script.main(["--out", str(guided), "--shifts", "5", "--prompts", "1", "--steps", "2", "--guidance-scale", "3"])
    assert json.loads(guided.read_text())["scores"] != record["scores"]  # the guidance reaches the sampler


def test_bad_shifts_exit_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--out", str(tmp_path / "x.json"), "--shifts", "3,abc"])
    assert "--shifts must be comma-separated numbers, got '3,abc'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
