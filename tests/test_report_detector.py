"""The detector report (`tokentrim.report.detector`): layout mapping, ground-truth labels, AUCs, permutation tests and
the paired effect, each checked on synthetic per-clip metrics with planted events."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tokentrim.report import make_report
from tokentrim.report.detector import (
    DetectorConfig,
    batch_labels,
    bootstrap_mean_ci,
    clip_events,
    latent_pixel_span,
    permutation_test,
    precision_recall,
    roc_auc,
    temporal_layout,
    vae_temporal_stride,
    within_group_auc,
)

DIMS = ["object_count", "background_stability"]


# ---------------------------------------------------------------------------------------------- mapping
def test_wan_layout_maps_batch_t_to_pixels_12t_minus_15_to_12t_minus_4_and_its_clips():
    layout = temporal_layout([3 * t for t in range(20)], 60, 237, 8.0, 2.0)
    assert layout.stride == 4 and len(layout.clip_spans) == 15  # 14 clips of 16 frames + the tail clip [221, 237)
    assert layout.pixel_span(0) == (0, 9)
    for t in range(2, 21):
        assert layout.pixel_span(t - 1) == (12 * t - 15, 12 * t - 3)  # [start, end): last frame 12 t - 4
    clips = layout.batch_clips()
    assert clips[0] == [0] and clips[1] == [0, 1]  # batch 2: pixels 9..20 span clips [0, 16) and [16, 32)
    assert clips[18] == [13, 14] and clips[19] == [14]  # batch 19: pixels 213..224; batch 20: 225..236
    assert layout.clip_spans[13] == (208, 224) and layout.clip_spans[14] == (221, 237)


def test_another_layout_stride_1_blocks_of_4_at_4_fps_maps_one_batch_to_one_clip():
    layout = temporal_layout([0, 4, 8, 12], 16, 16, 4.0, 1.0)  # a per-frame VAE, 1-s clips of 4 frames
    assert layout.stride == 1
    assert [layout.pixel_span(b) for b in range(4)] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert layout.batch_clips() == [[0], [1], [2], [3]]
    assert latent_pixel_span(2, 4, 8) == (9, 25)  # stride 8: latent 2 -> pixels 9..16, latent 3 -> 17..24


def test_layout_errors_name_the_problem():
    with pytest.raises(ValueError, match="causal VAE"):
        vae_temporal_stride(236, 60)
    with pytest.raises(ValueError, match="do not tile"):
        temporal_layout([0, 3, 3], 9, 33, 8.0, 2.0)


# ---------------------------------------------------------------------------------------------- labels
def test_sustained_and_step_events_and_their_rises():
    s = np.array([0.9, 0.9, 0.88, 0.6, 0.6, 0.6, 0.9, 0.65, 0.9, 0.9])
    kw = dict(threshold=0.2, reference_clips=2, sustain_clips=2)
    assert np.flatnonzero(clip_events(s, "sustained", "drop", **kw)).tolist() == [3]  # clip 7 alone is not sustained
    assert np.flatnonzero(clip_events(s, "step", "drop", **kw)).tolist() == [3, 7]
    assert np.flatnonzero(clip_events(s, "step", "rise", **kw)).tolist() == [6, 8]
    assert not clip_events(s, "sustained", "rise", **kw).any()
    rising = np.array([0.5, 0.5, 0.8, 0.8, np.nan, 0.8])
    assert np.flatnonzero(clip_events(rising, "sustained", "rise", **kw)).tolist() == [2]
    assert not clip_events(rising, "step", "drop", **kw).any()  # NaN never makes an event


def test_batch_labels_cover_the_batch_and_the_next_lead_batches():
    events = np.array([False, False, True, False])
    clips = [[0], [0, 1], [1], [2], [3]]
    assert batch_labels(events, clips, 0).tolist() == [False, False, False, True, False]
    assert batch_labels(events, clips, 1).tolist() == [False, False, True, True, False]


def test_config_refuses_bad_values_in_one_line():
    for kwargs, key in (({"threshold": 0.0}, "threshold"), ({"definitions": ["sudden"]}, "definitions"),
                        ({"sustain_clips": 0}, "sustain_clips"), ({"dimensions": []}, "dimensions")):
        with pytest.raises(ValueError, match=f"report.detector.{key}"):
            DetectorConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- statistics
def test_auc_of_perfect_inverted_tied_and_random_detectors():
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 0], dtype=bool)
    scores = labels.astype(float) + np.linspace(0, 0.5, 8)
    assert roc_auc(scores, labels) == 1.0
    assert roc_auc(-scores, labels) == 0.0
    assert roc_auc(np.ones(8), labels) == 0.5
    assert math.isnan(roc_auc(scores, np.zeros(8, dtype=bool)))
    rng = np.random.default_rng(0)
    y, s = rng.random(4000) < 0.3, rng.random(4000)
    assert abs(roc_auc(s, y) - 0.5) < 0.03
    few_s, few_y = rng.random(40), rng.random(40) < 0.4  # equals the (pos, neg) pair count, ties 1/2
    pairs = [(a > b) + 0.5 * (a == b) for a in few_s[few_y] for b in few_s[~few_y]]
    assert roc_auc(few_s, few_y) == pytest.approx(np.mean(pairs))


def test_within_video_auc_ignores_a_signal_that_only_separates_videos():
    groups = np.repeat(["a", "b"], 10)
    labels = np.r_[np.arange(10) < 8, np.arange(10) < 2]  # video a: 8 positives of 10, video b: 2
    scores = np.where(groups == "a", 10.0, 0.0)  # video a: high D throughout, flat within each video
    assert roc_auc(scores, labels) == pytest.approx(0.8)  # (8 * 8 + 0.5 * 32) / 100 pairs
    assert within_group_auc(scores, labels, groups) == 0.5
    assert within_group_auc(labels.astype(float), labels, groups) == 1.0


def test_precision_of_planted_triggers_and_permutation_p_values():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 15)
    labels = rng.random(300) < 0.2
    fired = labels.copy()
    fired[np.flatnonzero(~labels)[:labels.sum()]] = True  # as many misses as hits: precision 1/2
    precision, recall = precision_recall(fired, labels)
    assert precision == pytest.approx(0.5) and recall == 1.0
    planted = permutation_test(labels, labels, groups, 500, np.random.default_rng(1))
    per_video = np.bincount(groups, weights=labels)  # positives per video; random placement within each video
    expected = (per_video ** 2 / 15).sum() / per_video.sum()  # hits a video's k = pos firings expect: pos * pos / 15
    assert planted["p_value"] < 0.01 and planted["perm_precision"] == pytest.approx(expected, abs=0.01)
    p_values = [permutation_test(rng.random(300) < 0.1, labels, groups, 200, np.random.default_rng(k))["p_value"]
                for k in range(200)]  # random detectors: p ~ uniform
    assert 0.4 < np.mean(p_values) < 0.65
    assert 0.02 < np.mean(np.array(p_values) <= 0.1) < 0.2
    again = permutation_test(labels, labels, groups, 500, np.random.default_rng(1))
    assert again == planted  # seeded


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.1, 0.05, 40)
    mean, lo, hi = bootstrap_mean_ci(values, 1000, np.random.default_rng(3))
    assert lo < mean < hi and mean == pytest.approx(values.mean()) and 0.08 < lo and hi < 0.12
    assert bootstrap_mean_ci(values, 1000, np.random.default_rng(3)) == (mean, lo, hi)


# ---------------------------------------------------------------------------------------------- end to end
NUM_LATENT, NUM_FRAMES, FPS, BATCHES = 60, 237, 8.0, 20


def _write_run(root, name, *, trim, planted, rng, triggers=(), lift=0.0, latents=False, drift_source="final"):
    """A run dir like `tokentrim run backbone=tiny`: 8 videos, 20 batches, 15 clips. Video v drops by 0.4 from clip
    `planted[v]` on (None: no drop); D_t is large exactly at the batches whose clips hold the drop onset, so D_t is a
    perfect detector of the sustained drops. `triggers`: batches that fired (the run's pruning); `lift` is added to the
    clips from each trigger's first clip on (the paired effect)."""
    from tokentrim.video_io import clip_spans

    run = root / name
    (run / "events").mkdir(parents=True)
    layout = temporal_layout([3 * t for t in range(BATCHES)], NUM_LATENT, NUM_FRAMES, FPS, 2.0)
    videos, scores = [], []
    for v, onset in enumerate(planted):
        video = f"prompt {v}-0"
        videos.append({"video": video, "prompt": f"prompt {v}", "seed": 0, "backbone": "tiny", "trim": trim,
                       "init": "none", "num_frames": NUM_FRAMES, "num_latent_frames": NUM_LATENT, "fps": FPS,
                       "wall_s": 1.0, "num_batches": BATCHES, "num_triggers": len(triggers), "status": "ok"})
        base = 0.85 + 0.02 * rng.standard_normal((len(DIMS), len(clip_spans(NUM_FRAMES, FPS, 2.0))))
        if onset is not None:
            base[0, onset:] -= 0.4
        first_trigger_clip = min((layout.batch_clips()[t - 1][0] for t in triggers), default=None)
        if first_trigger_clip is not None:
            base[:, first_trigger_clip:] += lift
        scores += [{"video": video, "clip": c, "dimension": d, "score": float(base[i, c]), "scorer": "tinyworld"}
                   for i, d in enumerate(DIMS) for c in range(base.shape[1])]
        lines = []
        for t in range(1, BATCHES + 1):
            hit = onset is not None and onset in layout.batch_clips()[t - 1]
            D = None if t == 1 else (5.0 if hit else 1.0 + 0.1 * rng.random())
            tested = t >= 4
            lines.append({"video": video, "t": t, "start_frame": 3 * (t - 1), "D": D,
                          "mu": 1.05 if tested else None, "sigma": 0.05 if tested else None,
                          "threshold": (1.15 if t not in triggers else 0.5) if tested else None,
                          "is_warmup": not tested, "is_tested": tested, "triggered": t in triggers and tested,
                          "grid": [4, 4]})
        if latents:  # [F, C, H, W] on a 4 x 4 token grid: replayed signals that do not match the logged D
            from safetensors.torch import save_file

            (run / "latents").mkdir(exist_ok=True)
            save_file({"latents": torch.from_numpy(rng.standard_normal((NUM_LATENT, 4, 8, 8)).astype(np.float32))},
                      str(run / "latents" / f"{video}.safetensors"))
        (run / "events" / f"{video}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    pd.DataFrame(videos).to_csv(run / "videos.csv", index=False)
    pd.DataFrame(scores).assign(error="", content_hash="").to_csv(run / "scores.csv", index=False)
    (run / "config.yaml").write_text(f"variant: {name}\nscorer:\n  name: tinyworld\n  clip_seconds: 2.0\n"
                                     f"trim:\n  name: {trim}\n  enabled: {str(trim != 'none').lower()}\n"
                                     f"  drift_source: {drift_source}\n")
    return run


def test_report_scores_a_planted_detector_and_the_paired_effect(tmp_path):
    planted = [5, 8, None, 11, 3, None, 9, 6]
    _write_run(tmp_path, "baseline", trim="none", planted=planted, rng=np.random.default_rng(0), latents=True)
    _write_run(tmp_path, "tokentrim", trim="tokentrim", planted=planted, rng=np.random.default_rng(0),
               triggers=(10, 15), lift=0.1)
    cfg = {"dimensions": None, "permutations": 300}
    paths = make_report(tmp_path, n_boot=200, plots=True, detector=cfg)
    assert paths.tables["detector_md"].is_file() and any("detector_roc_tiny_baseline" in p.name for p in paths.plots)
    table = pd.read_csv(paths.tables["detector_csv"])
    auc = table[(table["table"] == "auc") & (table["run"] == "baseline") & (table["definition"] == "sustained")]
    raw = auc[(auc["signal"] == "D_t (raw)") & (auc["direction"] == "drop")].iloc[0]
    # D_t is high on the onset batches; with lead_batches = 1 the batch before is positive too (and low): AUC < 1,
    # but every high batch is positive
    assert raw["positives"] > 0 and raw["auc_pooled"] > 0.7 and raw["auc_within_video"] > 0.7
    labels = table[(table["table"] == "labels") & (table["run"] == "baseline") & (table["definition"] == "sustained")]
    assert labels.iloc[0]["drop_clips"] == 6 and labels.iloc[0]["videos_with_drop"] == 6
    assert labels.iloc[0]["rise_clips"] == 0
    trig = table[(table["table"] == "triggers") & (table["run"] == "baseline") & (table["definition"] == "sustained")
                 & (table["direction"] == "drop")].iloc[0]
    # the baseline would fire exactly where D = 5 > 1.15 on tested batches: all hits, p small
    assert trig["precision"] == 1.0 and trig["p_value"] < 0.02 and trig["perm_precision"] < 0.5
    effect = table[table["table"] == "effect"].iloc[0]
    assert effect["run"] == "tokentrim" and effect["triggered_videos"] == 8
    assert effect["delta"] == pytest.approx(0.1, abs=0.02) and effect["ci_lo"] < effect["delta"] < effect["ci_hi"]
    text = paths.tables["detector_md"].read_text()
    assert "Table D3" in text and "Table D4" in text and "Table D5" in text
    signals = table[(table["table"] == "signals") & (table["definition"] == "sustained")]
    assert set(signals["run"]) == {"baseline"}  # replayed only where the rule never pruned
    assert set(signals["signal"]) == {"run D_t (logged)", "l2", "cosine", "l2_max", "l2_all_tokens", "l2_from_first"}
    logged = signals[signals["signal"] == "run D_t (logged)"].iloc[0]
    assert logged["auc_within_video"] == raw["auc_within_video"] and logged["precision"] == 1.0
    noise = signals[signals["signal"] == "l2"].iloc[0]  # random latents: the replay knows nothing of the drops
    assert abs(noise["auc_within_video"] - 0.5) < 0.2
    assert "differs from the logged D_t" in text  # and the report says the latents are not what the rule saw
    again = make_report(tmp_path, n_boot=200, plots=False, detector=cfg)  # seeded: the same numbers
    assert again.tables["detector_csv"].read_text() == paths.tables["detector_csv"].read_text()


def test_a_first_step_monitor_gets_its_own_d_rows_but_no_final_latent_replay(tmp_path):
    planted = [5, 8, None, 11, 3, None, 9, 6]
    _write_run(tmp_path, "baseline", trim="none", planted=planted, rng=np.random.default_rng(0), latents=True)
    _write_run(tmp_path, "monitor_first_step", trim="none", planted=planted, rng=np.random.default_rng(1),
               latents=True, drift_source="first_step")
    paths = make_report(tmp_path, n_boot=0, plots=False, detector={"dimensions": None, "permutations": 50})
    table = pd.read_csv(paths.tables["detector_csv"])
    auc = table[(table["table"] == "auc") & (table["run"] == "monitor_first_step")]
    assert set(auc["signal"]) == {"D_t (raw)", "(D-mu)/sigma (rule)", "batch index t (reference)"}
    assert set(table[table["table"] == "signals"]["run"]) == {"baseline"}
    text = paths.tables["detector_md"].read_text()
    assert "monitor_first_step: trim.drift_source=first_step, so report.detector.signals" in text
    assert "monitor_first_step: the replayed signal" not in text  # no false "latents are not what the rule saw"
    assert "baseline: the replayed signal 'l2' (no overrides) differs" in text  # the check still runs where it applies


def test_runs_without_tinyworld_scores_get_no_detector_report(tmp_path):
    run = _write_run(tmp_path, "baseline", trim="none", planted=[None] * 8, rng=np.random.default_rng(0))
    scores = pd.read_csv(run / "scores.csv")
    scores.assign(scorer="vbench").to_csv(run / "scores.csv", index=False)
    paths = make_report(tmp_path, n_boot=0, plots=False)
    assert "detector_md" not in paths.tables and not (tmp_path / "detector.md").exists()
