"""bench/cli_throughput.py's arithmetic on known inputs (the bench itself runs `tokentrim generate` and is smoke-tested
by hand on CPU; see its docstring): steady vs process figures, the ratio to the reference, the first-video cliff."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cli_throughput  # noqa: E402


def _meta(trim: str, start: float, gpu_s: float, finished: float) -> dict:
    return {"trim": trim, "num_frames": 81, "started_unix": start, "finished_unix": finished, "wall_s": gpu_s - 1.0,
            "decode_s": 1.0, "encode_s": 0.5, "encoding": "official"}


def test_summary_separates_start_up_from_the_steady_window_and_compares_to_the_reference() -> None:
    reference = {"variants": {"baseline": {"video_s_median": 3.0}, "tokentrim": {"video_s_median": 4.0}}}
    # spawned at 100; warm-up until 130; four videos back to back, the first one slower (a cliff of 2x)
    videos = [_meta("none", 130.0, 6.0, 137.0), _meta("tokentrim", 136.0, 4.0, 141.0),
              _meta("none", 140.0, 3.0, 144.0), _meta("tokentrim", 143.0, 4.0, 148.0)]
    cli = {"spawned_unix": 100.0, "process_s": 50.0, "videos": videos}
    s = cli_throughput.summarise(reference, cli)
    assert s["videos"] == 4 and s["pixel_frames"] == 324
    assert s["startup_and_warm_up_s"] == 30.0 and s["steady_s"] == 18.0
    assert s["fps_steady"] == pytest.approx(324 / 18) and s["fps_process"] == pytest.approx(324 / 50)
    assert s["videos_per_hour_steady"] == pytest.approx(800.0) and s["videos_per_hour_process"] == pytest.approx(288.0)
    assert s["reference_s_for_these_videos"] == 14.0  # 2 x 3 s + 2 x 4 s
    assert s["ratio_steady"] == pytest.approx(14 / 18) and s["ratio_process"] == pytest.approx(14 / 50)
    assert s["first_video_cliff_x"] == pytest.approx(6.0 / 4.0)  # over the median of the rest (4, 3, 4)
    # the GPU is busy until the last video's rollout + decode end (143 + 4 = 147); its encode and writes drain 1 s
    assert s["gpu_busy_s"] == pytest.approx(17.0) and s["drain_s"] == pytest.approx(1.0)
    assert s["ratio_gpu_busy"] == pytest.approx(14 / 17)
    assert s["cli_median_s"] == {"wall_s": 3.0, "decode_s": 1.0, "encode_s": 0.5}
    record = {"device_name": "cpu", "date": "d", "env": {}, "args": {"dtype": "float32", "prompts": 2,
              "reference_repeats": 1}, "cells": [{"backbone": "self_forcing", "latent_frames": 21, "summary": s,
                                                  "reference": {"variants": {}}}]}
    row = next(line for line in cli_throughput.render_markdown(record).splitlines() if line.startswith("| self_forcing"))
    assert "| 18.00 | 6.48 |" in row and "| 0.78 | 0.28 | 0.82 (1.0) |" in row and "| 1.50 |" in row


def test_flags_and_conf_bench_yaml_name_the_same_knobs() -> None:
    args = cli_throughput.build_parser().parse_args(["--prompts", "2", "--", "backbone.model.dim=32"])
    assert args.prompts == 2 and args.overrides == ["backbone.model.dim=32"]
    assert args.backbones == "self_forcing,rolling_forcing" and args.latent_frames == "21,120"
