"""VBench's prompt -> dimension protocol (`scorer.prompt_protocol`, `planning.dimensions_for_prompt`).

`auto`: a video whose prompt is in VBench_full_info.json gets only the requested dimensions its prompt lists (VBench's
standard protocol), any other video every requested dimension (custom_input); `standard` refuses prompts outside the
suite; `all` scores everything. Videos: two suite prompts with disjoint dimension lists and one prompt outside the
suite. temporal_flickering runs the real vbench code; subject_consistency is a counted stand-in of
`_run_vbench_dimension` (its DINO weights are not here).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from test_cli import common, tokentrim
from test_scoring_folder import write_run
from tokentrim import video_io
from tokentrim.report.aggregate import summarize_runs
from tokentrim.report.run_data import load_runs
from tokentrim.scoring import aggregate_scores, compute_totals, preflight, read_scores, vbench_adapter
from tokentrim.scoring.planning import (
    PromptOutsideSuiteError,
    as_jobs,
    dimensions_by_prompt,
    dimensions_for_prompt,
    plan_units,
)
from tokentrim.scoring.prompts import suite_dimensions, vbench_full_info_path
from tokentrim.scoring.scorer_config import check_prompts, vbench_kwargs
from tokentrim.scoring.totals import ALL_DIMENSIONS

FLICKER = "In a still frame, a stop sign"  # the suite lists only temporal_flickering
SUBJECT = "a person swimming in ocean"  # the suite lists subject_consistency, dynamic_degree, motion_smoothness
OUTSIDE = "a red ball rolls"  # not in the suite
REQUESTED = ["temporal_flickering", "subject_consistency"]
FAKE_SUBJECT = {f"{SUBJECT}-0": 0.91, f"{OUTSIDE}-0": 0.83, f"{FLICKER}-0": 0.77}  # the counted stand-in's subject_consistency per video


def _write_videos(folder: Path) -> None:
    """Three 2-s videos (whole-video protocol) named `<prompt>-0.mp4`, each with its own noise."""
    rng = np.random.default_rng(7)
    for prompt in (FLICKER, SUBJECT, OUTSIDE):
        video_io.write_video(folder / f"{prompt}-0.mp4", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), fps=8)


def _fake_subject_weights(cache_dir: Path, torch_home: Path) -> None:
    """Empty files where vbench's DINO v1 files live, so the readiness check passes (its code is replaced below)."""
    for path in (cache_dir / "dino_model" / "facebookresearch_dino_main" / "hubconf.py",
                 cache_dir / "dino_model" / "dino_vitbase16_pretrain.pth",
                 torch_home / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture()
def counted(monkeypatch, tmp_path):
    """{dimension: [video names per vbench call]}; temporal_flickering runs vbench, subject_consistency is faked."""
    calls: dict[str, list[list[str]]] = {}
    real = vbench_adapter._run_vbench_dimension

    def run(dimension, units, **kwargs):
        calls.setdefault(dimension, []).append(sorted(unit.job.name for unit in units))
        if dimension == "subject_consistency":
            return {unit.path: FAKE_SUBJECT[unit.job.name] for unit in units}
        return real(dimension, units, **kwargs)

    monkeypatch.setattr(vbench_adapter, "_run_vbench_dimension", run)
    _fake_subject_weights(tmp_path / "weights", tmp_path / "torch")
    _write_videos(tmp_path / "videos")
    return calls


def _score(tmp_path: Path, csv: str, **kwargs):
    return vbench_adapter.score_videos(tmp_path / "videos", scores_csv=tmp_path / csv, dimensions=REQUESTED,
                                       cache_dir=tmp_path / "weights", torch_home=tmp_path / "torch",
                                       score_cache_dir=tmp_path / "cache", **kwargs)


def _pairs(rows) -> set[tuple[str, str]]:
    return {(row["video"], row["dimension"]) for row in rows}


# ------------------------------------------------------------------------------------------------------ the rule
def test_the_rule_per_protocol_and_its_one_line_errors():
    suite = suite_dimensions()
    assert dimensions_for_prompt(FLICKER, REQUESTED, suite, "auto") == ("temporal_flickering",)
    assert dimensions_for_prompt(SUBJECT, [*REQUESTED, "motion_smoothness"], suite, "auto") == (
        "subject_consistency", "motion_smoothness")  # the requested order, the prompt's subset
    assert dimensions_for_prompt(SUBJECT, ["scene"], suite, "auto") == ()
    assert dimensions_for_prompt(OUTSIDE, REQUESTED, suite, "auto") == tuple(REQUESTED)
    assert dimensions_for_prompt(SUBJECT, REQUESTED, suite, "standard") == ("subject_consistency",)
    assert dimensions_for_prompt(FLICKER, REQUESTED, suite, "all") == tuple(REQUESTED)
    with pytest.raises(PromptOutsideSuiteError, match=f"'standard' scores only prompts of the VBench suite.*{OUTSIDE!r}"):
        dimensions_for_prompt(OUTSIDE, REQUESTED, suite, "standard")
    with pytest.raises(ValueError, match=r"scorer.prompt_protocol must be one of \['auto', 'standard', 'all'\], got 'std'"):
        dimensions_for_prompt(FLICKER, REQUESTED, suite, "std")
    with pytest.raises(PromptOutsideSuiteError) as info:
        dimensions_by_prompt([FLICKER, OUTSIDE, "a blue cube spins", OUTSIDE], REQUESTED, suite, "standard")
    assert "\n" not in str(info.value) and str(info.value).endswith("(2 of 3 distinct prompts are outside the suite)")

    # the config: preflight checks the value; tinyworld's VBench dimensions keep `all`; check_prompts under standard
    scorer = {"name": "vbench", "dimensions": ["temporal_flickering"]}
    assert vbench_kwargs(scorer, "cpu").get("prompt_protocol") is None  # score_videos' default: auto
    with pytest.raises(ValueError, match=r"^scorer.prompt_protocol must be one of .* got 'sometimes'$"):
        preflight({**scorer, "prompt_protocol": "sometimes"}, "cpu")
    assert vbench_kwargs({"name": "tinyworld"}, "cpu")["prompt_protocol"] == "all"
    check_prompts({**scorer, "prompt_protocol": "auto"}, [OUTSIDE])
    check_prompts({**scorer, "prompt_protocol": "standard"}, [FLICKER, SUBJECT])
    with pytest.raises(PromptOutsideSuiteError, match="1 of 2 distinct prompts"):
        check_prompts({**scorer, "prompt_protocol": "standard"}, [FLICKER, OUTSIDE])


# ---------------------------------------------------------------------------------------------- through the scorer
def test_auto_scores_suite_prompts_on_their_dimensions_and_other_prompts_on_all(tmp_path, counted):
    summary = _score(tmp_path, "scores.csv")
    flicker_videos = sorted([f"{FLICKER}-0", f"{OUTSIDE}-0"])
    subject_videos = sorted([f"{SUBJECT}-0", f"{OUTSIDE}-0"])
    assert counted == {"temporal_flickering": [flicker_videos], "subject_consistency": [subject_videos]}
    rows = read_scores(tmp_path / "scores.csv")
    assert _pairs(rows) == ({(v, "temporal_flickering") for v in flicker_videos}
                            | {(v, "subject_consistency") for v in subject_videos})
    assert not summary.errors and all(row["error"] == "" for row in rows)
    assert summary.left_out == {"temporal_flickering": 1, "subject_consistency": 1}
    assert "prompt_protocol=auto left out" in summary.describe()

    # each dimension's mean is over the videos whose prompt it serves; neither is "unscored" in the Final
    flicker = [row["score"] for row in rows if row["dimension"] == "temporal_flickering"]
    means = aggregate_scores(rows)
    assert means == {"temporal_flickering": pytest.approx(sum(flicker) / 2, abs=0),
                     "subject_consistency": pytest.approx((0.91 + 0.83) / 2, abs=0)}
    totals = compute_totals(means, requested=REQUESTED)
    assert totals.total is not None and totals.missing == () and totals.label == (
        "2/16: subject_consistency, temporal_flickering")


def test_all_scores_everything_and_a_later_auto_call_drops_the_rows_it_leaves_out(tmp_path, counted):
    _score(tmp_path, "scores.csv", prompt_protocol="all")
    everything = {(f"{p}-0", d) for p in (FLICKER, SUBJECT, OUTSIDE) for d in REQUESTED}
    assert _pairs(read_scores(tmp_path / "scores.csv")) == everything
    assert [len(videos) for videos in counted["temporal_flickering"] + counted["subject_consistency"]] == [3, 3]
    rows = {(r["video"], r["dimension"]): r for r in read_scores(tmp_path / "scores.csv")}
    assert all(row["error"] == "" for row in rows.values())

    again = _score(tmp_path, "scores.csv")  # auto on the same scores.csv: every unit it plans is in the cache
    assert again.num_computed == 0 and again.num_cached == 4 and len(counted["temporal_flickering"]) == 1
    after = {(r["video"], r["dimension"]): r for r in read_scores(tmp_path / "scores.csv")}
    assert set(after) == everything - {(f"{FLICKER}-0", "subject_consistency"), (f"{SUBJECT}-0", "temporal_flickering")}
    assert all(after[key]["score"] == rows[key]["score"] for key in after)


def test_standard_refuses_a_prompt_outside_the_suite_in_one_line_before_any_work(tmp_path, counted):
    with pytest.raises(PromptOutsideSuiteError) as info:
        _score(tmp_path, "scores.csv", prompt_protocol="standard")
    message = str(info.value)
    assert "\n" not in message and f"{OUTSIDE!r}" in message and "(1 of 3 distinct prompts" in message
    assert counted == {} and not (tmp_path / "scores.csv").exists() and not (tmp_path / "cache").exists()

    (tmp_path / "videos" / f"{OUTSIDE}-0.mp4").unlink()
    _score(tmp_path, "scores.csv", prompt_protocol="standard")
    assert _pairs(read_scores(tmp_path / "scores.csv")) == {(f"{FLICKER}-0", "temporal_flickering"),
                                                            (f"{SUBJECT}-0", "subject_consistency")}


def test_a_dimension_no_video_gets_is_refused_by_name_and_gets_no_row_among_every_ready_one(tmp_path, counted):
    for prompt in (FLICKER, OUTSIDE):
        (tmp_path / "videos" / f"{prompt}-0.mp4").unlink()
    with pytest.raises(ValueError) as info:  # only the subject prompt's video: nothing lists temporal_flickering
        _score(tmp_path, "scores.csv")
    message = str(info.value)
    assert "\n" not in message and message.startswith("scorer.dimensions asks for ['temporal_flickering'], but under "
                                                      "scorer.prompt_protocol=auto no video of the call gets them")
    assert counted == {} and not (tmp_path / "scores.csv").exists()

    summary = vbench_adapter.score_videos(tmp_path / "videos", scores_csv=tmp_path / "scores.csv", dimensions=None,
                                          cache_dir=tmp_path / "weights", torch_home=tmp_path / "torch",
                                          hf_home=tmp_path / "hf")  # ready: temporal_flickering, subject_consistency
    assert set(summary.dimensions) == {"temporal_flickering", "subject_consistency"}  # every ready one
    assert summary.left_out == {"temporal_flickering": 1} and counted == {"subject_consistency": [[f"{SUBJECT}-0"]]}
    assert _pairs(read_scores(tmp_path / "scores.csv")) == {(f"{SUBJECT}-0", "subject_consistency")}


def test_standard_stops_tokentrim_run_before_any_video(tmp_path):
    (tmp_path / "prompts.txt").write_text(f"{FLICKER}\n{OUTSIDE}\n")
    proc = tokentrim("run", *common(tmp_path, "scorer.prompt_protocol=standard"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # a config error
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "prompt_protocol='standard'" in line]
    assert len(lines) == 1 and repr(OUTSIDE) in lines[0] and "(1 of 2 distinct prompts" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "default" / "self_forcing").exists()  # nothing generated, no results directory


# ---------------------------------------------------------------------------------------- vbench's own selection
def test_auto_planning_equals_vbench_standard_mode_selection(tmp_path, capsys):
    """`VBench.build_full_info_json(mode='vbench_standard')` + `load_dimension_info` per dimension (vbench's own
    selection) on a folder of empty files named `<prompt>-<i>.mp4`, against the (video, dimension) pairs our planner
    plans under `auto` (an empty file is unreadable: its planned pairs are error rows, which are what counts here)."""
    import vbench
    import vbench.utils

    suite = suite_dimensions()
    prompts = list(suite)[::7] + ["A beautiful coastal beach in spring, waves lapping on sand by Hokusai, in the "
                                  "style of Ukiyo", "The bund Shanghai, oil painting"]  # two prompts listed twice
    folder = tmp_path / "videos"
    folder.mkdir()
    for k, prompt in enumerate(dict.fromkeys(prompts)):
        for index in (0, 4) if k % 5 == 0 else (k % 5,):
            (folder / f"{prompt}-{index}.mp4").write_bytes(b"")
    info = vbench.VBench("cpu", str(vbench_full_info_path()), str(tmp_path / "vbench")).build_full_info_json(
        str(folder), "standard", list(ALL_DIMENSIONS), mode="vbench_standard")
    capsys.readouterr()  # vbench prints a warning per missing index
    theirs: set[tuple[str, str]] = set()
    for dim in ALL_DIMENSIONS:
        videos, _ = vbench.utils.load_dimension_info(info, dim, "en")
        assert len(videos) == len(set(videos)), dim  # each video once per dimension
        theirs |= {(Path(path).stem, dim) for path in videos}

    plan = plan_units(as_jobs(folder), ALL_DIMENSIONS, cache_root=tmp_path / "cache", clip_root=tmp_path / "clips",
                      device="cpu", version="0.1.5", kwargs={}, aux_by_prompt={}, suite=suite, prompt_protocol="auto",
                      long_protocol="auto", long_min_seconds=5.0, clip_seconds={}, scene_split=False,
                      scene_threshold=35.0, scene_min_frames=15)
    ours = set(plan.clips)
    assert plan.units == [] and {(row["video"], row["dimension"]) for row in plan.error_rows} == ours
    assert len(list(folder.iterdir())) == 165 and len(ours) == 244  # not vacuous: the sample and its pairs
    assert ours == theirs
    assert len(ours) + len(plan.left_out) == 165 * len(ALL_DIMENSIONS)
    assert {dim for _, dim in ours} == set(ALL_DIMENSIONS)


# ------------------------------------------------------------------------------------------- report and pairing
def test_report_means_are_over_each_dimensions_videos_and_pairs_stay_by_prompt_and_seed(tmp_path):
    """Rows as `auto` writes them: temporal_flickering on prompts A, B; subject_consistency on C, D (two seeds each)."""
    flicker = {"none": {"A": (0.95, 0.97), "B": (0.93, 0.91)}, "tokentrim": {"A": (0.96, 0.98), "B": (0.92, 0.94)}}
    subject = {"none": {"C": (0.90, 0.80), "D": (0.70, 0.60)}, "tokentrim": {"C": (0.85, 0.90), "D": (0.75, 0.70)}}
    for run in ("none", "tokentrim"):
        scores = [{"video": f"{p}-{s}", "dimension": dim, "score": values[run][p][s]}
                  for dim, values in (("temporal_flickering", flicker), ("subject_consistency", subject))
                  for p in values[run] for s in (0, 1)]
        write_run(tmp_path / run, videos=[{"prompt": p, "seed": s, "trim": run} for p in "ABCD" for s in (0, 1)],
                  scores=scores)
    summaries = {"none" if s.is_baseline else "tokentrim": s for s in summarize_runs(load_runs(tmp_path), n_boot=50)}
    assert len(summaries) == 2
    for run, summary in summaries.items():
        expect_tf = sum(sum(v) for v in flicker[run].values()) / 4
        expect_sc = sum(sum(v) for v in subject[run].values()) / 4
        assert summary.dimensions["temporal_flickering"].value == pytest.approx(expect_tf, abs=1e-12)
        assert summary.dimensions["subject_consistency"].value == pytest.approx(expect_sc, abs=1e-12)
        assert summary.dimensions["temporal_flickering"].n == summary.dimensions["subject_consistency"].n == 4
        expected = compute_totals({"temporal_flickering": expect_tf, "subject_consistency": expect_sc}).total
        assert summary.totals["final"].value == pytest.approx(expected, abs=1e-12)
        assert not any("no scored video" in note or "NaN" in note for note in summary.notes), summary.notes
    trim = summaries["tokentrim"]
    assert trim.n_paired == 8  # every (prompt, seed) pairs; per dimension only where both have a row
    sc_none = sum(sum(v) for v in subject["none"].values()) / 4
    sc_trim = sum(sum(v) for v in subject["tokentrim"].values()) / 4
    assert trim.dimensions["subject_consistency"].delta_pct == pytest.approx(100 * (sc_trim - sc_none) / sc_none)
    assert math.isfinite(trim.totals["final"].delta_pct) and math.isfinite(trim.totals["final"].delta_lo)
