"""Report tables: aggregation, paired deltas, bootstrap CIs, overhead, trigger rate, partial label, files."""

import math

import numpy as np
import pandas as pd
import pytest

from tokentrim.report import make_report
from tokentrim.report.aggregate import per_video_scores, summarize_runs
from tokentrim.report.run_data import load_runs
from tokentrim.report.tables import summaries_to_frame
from synthetic_runs import synthetic_run_dir, write_run_dir

SC_MIN = 0.1462  # VBench scripts/constant.py NORMALIZE_DIC["subject consistency"] min (max is 1.0), for hand maths


def _hand_sweep(root, *, variant_device="H100", baseline_device="H100"):
    """Baseline and TokenTrim on prompts A, B (seed 0); the variant also has an unpaired prompt C and an errored video.

    subject_consistency per video: baseline A = mean(0.90, 0.80) = 0.85, B = 0.70 (whole-video row; its clip row
    failed with NaN); variant A = mean(0.95, 0.85) = 0.90, B = 0.80, C = 0.10.
    """
    write_run_dir(
        root / "baseline",
        videos=[
            {"prompt": "A", "seed": 0, "wall_s": 10.0, "num_batches": 3},
            {"prompt": "B", "seed": 0, "wall_s": 20.0, "num_batches": 3},
        ],
        scores=[
            {"video": "A-0", "clip": 0, "dimension": "subject_consistency", "score": 0.90},
            {"video": "A-0", "clip": 1, "dimension": "subject_consistency", "score": 0.80},
            {"video": "B-0", "clip": -1, "dimension": "subject_consistency", "score": 0.70},
            {"video": "B-0", "clip": 0, "dimension": "subject_consistency", "score": float("nan"), "error": "boom"},
            {"video": "A-0", "clip": -1, "dimension": "tw_psnr", "score": 20.0, "scorer": "tinyworld"},
            {"video": "B-0", "clip": -1, "dimension": "tw_psnr", "score": 30.0, "scorer": "tinyworld"},
        ],
        config={"trim": {"name": "none"}},
        env={"device_name": baseline_device},
    )
    event = {"D": 1.0, "mu": 1.0, "sigma": 0.1, "threshold": 1.2, "is_warmup": False, "triggered": False}
    write_run_dir(
        root / "tokentrim",
        videos=[
            {"prompt": "A", "seed": 0, "trim": "tokentrim", "wall_s": 12.0, "num_regenerations": 1,
             "num_pruned_tokens": 156, "num_triggers": 1},
            {"prompt": "B", "seed": 0, "trim": "tokentrim", "wall_s": 21.0, "num_regenerations": 1,
             "num_pruned_tokens": 156, "num_triggers": 1},
            {"prompt": "C", "seed": 0, "trim": "tokentrim", "wall_s": 100.0},
            {"prompt": "D", "seed": 0, "trim": "tokentrim", "wall_s": 5.0, "status": "error", "error": "OOM"},
        ],
        scores=[
            {"video": "A-0", "clip": 0, "dimension": "subject_consistency", "score": 0.95},
            {"video": "A-0", "clip": 1, "dimension": "subject_consistency", "score": 0.85},
            {"video": "B-0", "clip": 0, "dimension": "subject_consistency", "score": 0.80},
            {"video": "C-0", "clip": 0, "dimension": "subject_consistency", "score": 0.10},
            {"video": "A-0", "clip": -1, "dimension": "tw_psnr", "score": 22.0, "scorer": "tinyworld"},
            {"video": "B-0", "clip": -1, "dimension": "tw_psnr", "score": 33.0, "scorer": "tinyworld"},
        ],
        events={
            # A: t0 undefined, t1 warm-up, t2 tested, t3 tested + triggered; B: t0 undefined, t1 tested + triggered
            "A-0": [{"t": 0, "D": None, "threshold": None, "is_warmup": True, "triggered": False},
                    {**event, "t": 1, "is_warmup": True}, {**event, "t": 2},
                    {**event, "t": 3, "D": 2.0, "triggered": True}],
            "B-0": [{"t": 0, "D": None, "threshold": None, "is_warmup": True, "triggered": False},
                    {**event, "t": 1, "D": 2.0, "triggered": True}],
            # errored video: its events must not count
            "D-0": [{**event, "t": 1, "D": 2.0, "triggered": True}],
        },
        config={"trim": {"name": "tokentrim", "top_p": 0.1}},
        env={"device_name": variant_device},
    )
    return root


def _by_label(summaries):
    return {s.label: s for s in summaries}


def test_per_video_score_is_mean_over_clips_and_nan_scores_are_dropped(tmp_path):
    runs = load_runs(_hand_sweep(tmp_path))
    base = next(r for r in runs if r.label == "baseline")
    table = per_video_scores(base.scores)
    assert table.loc["A-0", "subject_consistency"] == pytest.approx(0.85)
    assert table.loc["B-0", "subject_consistency"] == pytest.approx(0.70)  # NaN clip row ignored, whole row used


def test_delta_percent_is_relative_to_paired_baseline_by_hand(tmp_path):
    summaries = _by_label(summarize_runs(load_runs(_hand_sweep(tmp_path)), n_boot=0))
    trim, base = summaries["tokentrim"], summaries["baseline"]
    assert base.is_baseline and not trim.is_baseline
    # unpaired video C counts in the variant's own mean but not in the delta
    assert trim.dimensions["subject_consistency"].value == pytest.approx((0.90 + 0.80 + 0.10) / 3)
    assert trim.n_paired == 2
    # paired means: variant (0.90 + 0.80) / 2 = 0.85, baseline (0.85 + 0.70) / 2 = 0.775
    assert trim.dimensions["subject_consistency"].delta_pct == pytest.approx(100 * (0.85 - 0.775) / 0.775)
    # Final with one quality dimension = its normalised score; normalisation shift cancels in the difference
    assert trim.totals["final"].delta_pct == pytest.approx(100 * 0.075 / (0.775 - SC_MIN))
    # non-VBench dimensions are extra columns with their own delta and never enter Final
    assert "tw_psnr" in trim.extras and "tw_psnr" not in trim.dimensions
    assert trim.extras["tw_psnr"].delta_pct == pytest.approx(100 * (27.5 - 25.0) / 25.0)
    assert base.totals["final"].value == pytest.approx((0.775 - SC_MIN) / (1 - SC_MIN))


def test_overhead_is_ratio_of_paired_median_wall_times(tmp_path):
    trim = _by_label(summarize_runs(load_runs(_hand_sweep(tmp_path)), n_boot=0))["tokentrim"]
    assert trim.overhead_x == pytest.approx(np.median([12.0, 21.0]) / np.median([10.0, 20.0]))


def test_overhead_is_blank_when_devices_differ(tmp_path):
    trim = _by_label(summarize_runs(load_runs(_hand_sweep(tmp_path, variant_device="H200")), n_boot=0))["tokentrim"]
    assert math.isnan(trim.overhead_x)
    assert any("devices differ" in note for note in trim.notes)


def test_trigger_rate_counts_tested_batches_of_ok_videos_only(tmp_path):
    trim = _by_label(summarize_runs(load_runs(_hand_sweep(tmp_path)), n_boot=0))["tokentrim"]
    assert trim.tested_batches == 3  # A: t2, t3; B: t1 (warm-up and undefined thresholds excluded, D-0 errored)
    assert trim.trigger_rate == pytest.approx(2 / 3)
    assert trim.regenerations_per_video == pytest.approx(2 / 3)  # (1 + 1 + 0) over the three ok videos
    assert trim.pruned_tokens_per_video == pytest.approx(312 / 3)
    assert trim.n_errors == 1 and trim.n_videos == 3


def _synthetic_pair(root):
    prompts = [f"prompt {i}" for i in range(6)]
    synthetic_run_dir(root / "base", prompts=prompts, seeds=(0, 1), seed=1)
    synthetic_run_dir(root / "trim", trim="tokentrim", prompts=prompts, seeds=(0, 1), score_shift=0.01, seed=1)
    return load_runs(root)


def test_paired_bootstrap_is_deterministic_given_seed_and_ci_contains_estimate(tmp_path):
    runs = _synthetic_pair(tmp_path)
    first_all = summarize_runs(runs, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(summaries_to_frame(first_all), summaries_to_frame(summarize_runs(runs, n_boot=300, seed=0)))
    first = _by_label(first_all)["tokentrim"]
    other = _by_label(summarize_runs(runs, n_boot=300, seed=1))["tokentrim"]
    assert first.totals["final"].delta_lo != other.totals["final"].delta_lo
    assert math.isnan(first.totals["semantic"].value)  # no semantic dimension scored
    for stat in [*first.dimensions.values(), first.totals["quality"], first.totals["final"]]:
        assert stat.ci_lo <= stat.value <= stat.ci_hi
        assert stat.delta_lo <= stat.delta_pct <= stat.delta_hi
    # pairing removes the prompt-to-prompt spread: a +0.01 shift on every video gives a tight positive delta
    assert first.totals["final"].delta_lo > 0


def test_partial_label_and_caption_in_table_md(tmp_path):
    _hand_sweep(tmp_path)
    make_report(tmp_path, n_boot=50, plots=False)
    text = (tmp_path / "table.md").read_text()
    assert "Final (1/16: subject_consistency)" in text
    assert "per video, mean over its clips" in text and "then unweighted mean over videos" in text
    assert "percentile bootstrap over prompts" in text and "n_boot=50" in text
    assert "tw_psnr (extra)" in text
    frame = pd.read_csv(tmp_path / "table.csv")
    row = frame.set_index("variant").loc["tokentrim"]
    assert bool(row["partial"]) and row["dimensions_scored"] == 1
    assert row["subject_consistency_delta_pct"] == pytest.approx(100 * 0.075 / 0.775)
    tex = (tmp_path / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"subject\_consistency" in tex and r"$\Delta$\%" in tex


def test_report_is_idempotent_and_leaves_no_temp_files(tmp_path):
    _hand_sweep(tmp_path)
    first = make_report(tmp_path, n_boot=40, plots=False)
    contents = {p: p.read_bytes() for p in first.all()}
    second = make_report(tmp_path, n_boot=40, plots=False)
    assert {p: p.read_bytes() for p in second.all()} == contents
    assert not list(tmp_path.rglob("*.tmp*"))


def test_dir_without_videos_csv_raises_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run dir") as info:
        make_report(tmp_path / "empty")
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_report(tmp_path / "missing")


def test_sweep_runs_sharing_a_variant_are_labelled_by_their_parameter(tmp_path):
    synthetic_run_dir(tmp_path / "base", seed=1)
    for p in (0.05, 0.2):
        synthetic_run_dir(tmp_path / f"job_{p}", trim="tokentrim", config={"trim": {"top_p": p}}, seed=2)
    labels = sorted(r.label for r in load_runs(tmp_path))
    assert labels == ["baseline", "tokentrim (top_p=0.05)", "tokentrim (top_p=0.2)"]
