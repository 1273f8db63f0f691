"""The adapter runs the real vbench code: exact per-video equality, error rows, cache, atomic scores.csv, clips."""

import csv
import json
import math

import numpy as np
import pytest

from tokentrim import video_io
from tokentrim.scoring import scores_store, vbench_adapter
from tokentrim.scoring.vbench_adapter import aggregate_scores, read_scores, score_videos


def _write_suite(folder, num_frames=16, fps=8):
    """Three small harness-written videos with different flicker: noise, a ramp, a static frame."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, num_frames).astype(np.uint8)[:, None, None, None]  # [T, 1, 1, 1]
    videos = {
        "random noise-0": rng.integers(0, 256, (num_frames, 64, 64, 3), dtype=np.uint8),
        "moving gradient-1": np.broadcast_to(ramp, (num_frames, 64, 64, 3)).copy(),  # [T,1,1,1] -> [T,H,W,3]
        "a static frame-0": np.repeat(rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8), num_frames, axis=0),
    }
    for name, frames in videos.items():
        video_io.write_video(folder / f"{name}.mp4", frames, fps=fps)
    return sorted(folder.glob("*.mp4"))


def _direct_vbench(folder, out, monkeypatch):
    """Per-video temporal_flickering from `VBench(...).evaluate` in custom_input mode, as a user would call it."""
    import vbench
    import vbench.utils

    monkeypatch.setattr(vbench.utils, "CACHE_DIR", str(out / "vbench_cache"))  # evaluate() makedirs it
    vbench.VBench("cpu", None, str(out)).evaluate(
        videos_path=str(folder), name="direct", dimension_list=["temporal_flickering"], local=True, mode="custom_input"
    )
    results = json.loads((out / "direct_eval_results.json").read_text())["temporal_flickering"][1]
    return {item["video_path"]: item["video_results"] for item in results}


def test_temporal_flickering_equals_direct_vbench_call_exactly(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    paths = _write_suite(folder)
    summary = score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                           cache_dir=tmp_path / "weights")
    assert summary.num_computed == 3 and not summary.errors
    ours = {row["path"]: row["raw_score"] for row in read_scores(tmp_path / "scores.csv")}
    direct = _direct_vbench(folder, tmp_path / "direct", monkeypatch)
    assert set(ours) == set(direct) == {str(p) for p in paths}
    for path, value in direct.items():
        assert ours[path] == value  # exact, not approx
    assert aggregate_scores(tmp_path / "scores.csv")["temporal_flickering"] == sum(direct.values()) / 3


def test_corrupt_mp4_gets_an_error_row_and_the_others_are_scored(tmp_path):
    folder = tmp_path / "videos"
    _write_suite(folder)
    good = (folder / "random noise-0.mp4").read_bytes()
    (folder / "truncated-0.mp4").write_bytes(good[: len(good) // 3])
    (folder / "garbage-0.mp4").write_bytes(b"not an mp4" * 50)
    summary = score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                           cache_dir=tmp_path / "weights")
    rows = {row["video"]: row for row in read_scores(tmp_path / "scores.csv")}
    assert len(rows) == 5
    assert math.isnan(rows["garbage-0"]["score"]) and rows["garbage-0"]["error"]
    assert {video for video, _, _, _ in summary.errors} >= {"garbage-0"}
    assert "garbage-0" in summary.describe()
    for name in ("random noise-0", "moving gradient-1", "a static frame-0"):
        assert rows[name]["error"] == "" and 0.0 <= rows[name]["score"] <= 1.0


def test_second_run_recomputes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    _write_suite(folder)
    calls = []
    real = vbench_adapter._run_vbench_dimension

    def counting(dimension, units, **kwargs):
        calls.append(len(units))
        return real(dimension, units, **kwargs)

    monkeypatch.setattr(vbench_adapter, "_run_vbench_dimension", counting)
    kwargs = dict(dimensions=["temporal_flickering"], cache_dir=tmp_path / "weights",
                  score_cache_dir=tmp_path / "shared_cache")
    first = score_videos(folder, scores_csv=tmp_path / "run1" / "scores.csv", **kwargs)
    assert calls == [3] and first.num_computed == 3
    second = score_videos(folder, scores_csv=tmp_path / "run2" / "scores.csv", **kwargs)
    assert calls == [3] and second.num_computed == 0 and second.num_cached == 3
    a = read_scores(tmp_path / "run1" / "scores.csv")
    b = read_scores(tmp_path / "run2" / "scores.csv")
    assert [(r["video"], r["raw_score"]) for r in a] == [(r["video"], r["raw_score"]) for r in b]


def test_scores_csv_is_replaced_atomically(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    _write_suite(folder)
    scores = tmp_path / "scores.csv"
    score_videos(folder, scores_csv=scores, dimensions=["temporal_flickering"], cache_dir=tmp_path / "weights")
    before = scores.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vbench_adapter.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        scores_store.write_scores(scores, [])
    assert scores.read_bytes() == before  # old file intact, no partial csv
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scores")] == []
    with open(scores, newline="") as handle:
        assert list(csv.DictReader(handle).fieldnames) == list(vbench_adapter.SCORES_COLUMNS)


def test_long_video_is_scored_per_clip_like_vbench_long(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (44, 32, 32, 3), dtype=np.uint8)  # 5.5 s at 8 fps -> 16-frame clips
    video_io.write_video(folder / "a long walk-0.mp4", frames, fps=8)
    score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                 cache_dir=tmp_path / "weights", clip_dir=tmp_path / "clips")
    rows = read_scores(tmp_path / "scores.csv")
    assert [(r["clip"], int(r["frame_start"]), int(r["frame_end"])) for r in rows] == [(0, 0, 16), (1, 16, 32), (2, 28, 44)]
    clip_files = sorted((tmp_path / "clips").rglob("*.mp4"))
    assert [p.name for p in clip_files] == [f"a long walk-0_{k:03d}.mp4" for k in range(3)]
    assert [video_io.probe(p).num_frames for p in clip_files] == [16, 16, 16]
    clips_only = tmp_path / "clips_only"
    clips_only.mkdir()
    for path in clip_files:
        (clips_only / path.name).write_bytes(path.read_bytes())
    direct = _direct_vbench(clips_only, tmp_path / "direct", monkeypatch)
    assert sorted(r["raw_score"] for r in rows) == sorted(direct.values())
    assert aggregate_scores(rows)["temporal_flickering"] == pytest.approx(sum(direct.values()) / 3, abs=1e-15)


def test_aggregate_is_mean_over_clips_then_over_videos():
    rows = [
        {"video": "a", "clip": 0, "dimension": "temporal_flickering", "score": 0.9},
        {"video": "a", "clip": 1, "dimension": "temporal_flickering", "score": 0.7},
        {"video": "b", "clip": -1, "dimension": "temporal_flickering", "score": 0.5},
        {"video": "c", "clip": -1, "dimension": "temporal_flickering", "score": math.nan},
    ]
    assert aggregate_scores(rows) == {"temporal_flickering": pytest.approx((0.8 + 0.5) / 2)}


def test_a_video_that_crashes_vbench_gets_an_error_row_and_the_chunk_goes_on(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    _write_suite(folder)
    real = vbench_adapter._run_vbench_dimension

    def crash_on_noise(dimension, units, **kwargs):
        if any("random noise" in unit.path for unit in units):
            raise RuntimeError("decord cannot seek")
        return real(dimension, units, **kwargs)

    monkeypatch.setattr(vbench_adapter, "_run_vbench_dimension", crash_on_noise)
    summary = score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                           cache_dir=tmp_path / "weights")
    rows = {row["video"]: row for row in read_scores(tmp_path / "scores.csv")}
    assert "decord cannot seek" in rows["random noise-0"]["error"] and math.isnan(rows["random noise-0"]["score"])
    assert rows["a static frame-0"]["error"] == "" and rows["moving gradient-1"]["error"] == ""
    assert summary.num_computed == 2 and [e[0] for e in summary.errors] == ["random noise-0"]


def test_one_aggregation_for_adapter_and_report_clip_rows_win_over_a_whole_video_row():
    import pandas as pd

    from tokentrim.report.aggregate import per_video_scores

    rows = [
        # a clipped video with a clip = -1 summary row beside its clips (TinyWorld's include_video_mean): the clip
        # mean 0.8 counts, the summary row does not (the pre-split adapter averaged all three rows to 0.7)
        {"video": "a", "clip": 0, "dimension": "temporal_flickering", "score": 0.9},
        {"video": "a", "clip": 1, "dimension": "temporal_flickering", "score": 0.7},
        {"video": "a", "clip": -1, "dimension": "temporal_flickering", "score": 0.5},
        # its clip rows failed: the whole-video row fills in
        {"video": "b", "clip": 0, "dimension": "temporal_flickering", "score": math.nan},
        {"video": "b", "clip": -1, "dimension": "temporal_flickering", "score": 0.6},
    ]
    assert aggregate_scores(rows) == {"temporal_flickering": pytest.approx((0.8 + 0.6) / 2)}
    table = per_video_scores(pd.DataFrame(rows))
    assert table["temporal_flickering"].to_dict() == {"a": pytest.approx(0.8), "b": pytest.approx(0.6)}
