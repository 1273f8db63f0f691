"""Loud scoring failures and the scorer config: preflight before any work, a dimension that fails on every video,
a Final never silently partial, `scorer.device` following `device` (through Hydra composition)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from test_cli import common, tokentrim
from test_scoring_folder import write_run
from tokentrim import video_io
from tokentrim.report.aggregate import summarize_runs
from tokentrim.report.run_data import load_runs
from tokentrim.report.tables import build_tables
from tokentrim.scoring import DimensionFailedError, WeightsMissingError, preflight, read_scores, vbench_adapter
from tokentrim.scoring.scorer_config import vbench_kwargs


def _vbench_cfg(**overrides) -> dict:
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config", overrides=["scorer=vbench", *[f"{k}={v}" for k, v in overrides.items()]])
    return cfg


# ------------------------------------------------------------------------------------------------------- preflight
def test_preflight_names_the_dimension_the_missing_file_and_the_key(tmp_path):
    scorer = {"name": "vbench", "dimensions": ["temporal_flickering", "subject_consistency"], "cache_dir": str(tmp_path)}
    with pytest.raises(WeightsMissingError) as info:
        preflight(scorer, "cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith("subject_consistency: missing file ")
    assert str(tmp_path / "dino_model") in message and "(set scorer.cache_dir / VBENCH_CACHE_DIR)" in message
    preflight({**scorer, "dimensions": ["temporal_flickering"]}, "cpu")  # needs no weights: ready
    for bad, match in [
        ({"dimensions": ["temporal flickering"]}, r"scorer.dimensions has unknown dimension\(s\) \['temporal flickering'\]"),
        ({"dimensions": "temporal_flickering"}, "scorer.dimensions must be a list"),
        ({"chunksize": 4}, r"scorer has unknown key\(s\) \['chunksize'\]"),
        ({"device": "gpu"}, "scorer.device must be cpu, cuda or cuda:N"),
        ({"num_shards": 2, "shard_index": 2}, "scorer.shard_index < num_shards, got 2/2"),
        ({"long_protocol": "sometimes"}, "scorer.long_protocol must be"),
        ({"name": "vbenchh"}, "scorer.name must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            preflight({**scorer, "dimensions": ["temporal_flickering"], **bad}, "cpu")


def test_a_dimension_that_is_not_ready_stops_generate_before_any_directory(tmp_path):
    (tmp_path / "prompts.txt").write_text("a red ball rolls\n")
    args = common(tmp_path, "scorer.dimensions=[temporal_flickering,aesthetic_quality]", f"scorer.cache_dir={tmp_path / 'w'}")
    proc = tokentrim("run", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # bad input: exit 2, one stderr line
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "aesthetic_quality: missing file" in line]
    assert len(lines) == 1 and "(set scorer.cache_dir / VBENCH_CACHE_DIR)" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "default" / "self_forcing").exists()  # nothing generated, no results directory


# --------------------------------------------------------------------------------- a dimension failing everywhere
def _two_videos(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a cat-0", "a dog-0"):
        video_io.write_video(folder / f"{name}.mp4", rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), fps=8)


def test_a_dimension_failing_on_every_video_stops_after_writing_its_error_rows(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    _two_videos(folder)

    def broken(dimension, units, **kwargs):
        raise RuntimeError("CUDA error: no kernel image\nis available")

    monkeypatch.setattr(vbench_adapter, "_run_vbench_dimension", broken)
    with pytest.raises(DimensionFailedError) as info:
        vbench_adapter.score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                                    cache_dir=tmp_path / "w", chunk_size=4,
                                    prompt_protocol="all")  # "a cat" / "a dog" are VBench object_class prompts
    message = str(info.value)
    assert "\n" not in message and "dimension temporal_flickering failed on every video (2 error row(s)" in message
    assert "first error: 'a cat-0' clip -1: vbench failed: RuntimeError: CUDA error: no kernel image is available" in message
    rows = read_scores(tmp_path / "scores.csv")  # the rows it has are written first
    assert [(r["video"], r["error"][:13]) for r in rows] == [("a cat-0", "vbench failed"), ("a dog-0", "vbench failed")]
    assert all(math.isnan(r["score"]) for r in rows)


# ------------------------------------------------------------------------------------- Final never silently partial
def _run(root: Path, name: str, aesthetic: list[float]) -> None:
    scores = []
    for video, tf, aq in zip(("A-0", "B-0"), (0.95, 0.97), aesthetic):
        scores.append({"video": video, "dimension": "temporal_flickering", "score": tf})
        scores.append({"video": video, "dimension": "aesthetic_quality", "score": aq,
                       "error": "" if math.isfinite(aq) else "vbench failed: RuntimeError: boom"})
    write_run(root / name, videos=[{"prompt": p, "seed": 0, "trim": name} for p in "AB"], scores=scores)


def test_a_requested_dimension_without_a_scored_video_makes_the_final_nan_with_a_reason(tmp_path):
    _run(tmp_path, "none", [0.5, 0.7])
    _run(tmp_path, "tokentrim", [math.nan, math.nan])  # aesthetic_quality requested, failed on every video
    summaries = {s.label: s for s in summarize_runs(load_runs(tmp_path), n_boot=20)}
    base, trim = summaries["baseline"], summaries["tokentrim"]
    assert math.isfinite(base.totals["final"].value)  # over its 2 requested dimensions, not renormalised to 1
    flicker = ((0.96 - 0.6293) / (1 - 0.6293) + 0.6) / 2
    assert base.totals["final"].value == pytest.approx(flicker)
    assert math.isnan(trim.totals["final"].value) and math.isnan(trim.totals["quality"].value)
    assert math.isnan(trim.totals["final"].delta_pct)
    assert any("no scored video for requested dimension(s) aesthetic_quality" in note for note in trim.notes)
    assert base.final_label == trim.final_label == "2/16: temporal_flickering, aesthetic_quality"
    markdown = build_tables(load_runs(tmp_path), n_boot=0).markdown
    assert "Final (2/16: temporal_flickering, aesthetic_quality)" in markdown


# -------------------------------------------------------------------------------------------- scorer.device rule
def test_scorer_device_follows_the_top_level_device_unless_set():
    assert OmegaConf.is_missing(_vbench_cfg().scorer, "device") is False and _vbench_cfg().scorer.device is None

    def device_of(cfg) -> str:
        return vbench_kwargs(OmegaConf.to_container(cfg.scorer, resolve=True), str(cfg.device))["device"]

    assert device_of(_vbench_cfg()) == "cpu"
    assert device_of(_vbench_cfg(device="cuda:1")) == "cuda:1"
    assert device_of(_vbench_cfg(device="cuda", **{"scorer.device": "cpu"})) == "cpu"
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        paper = compose("config", overrides=["experiment=paper_main"])
        tiny = compose("config", overrides=["device=cuda:0"])  # scorer=tinyworld: its VBench dimensions follow too
    assert paper.scorer.name == "vbench" and device_of(paper) == "cuda"
    assert device_of(tiny) == "cuda:0"
