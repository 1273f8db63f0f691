"""Kill -9 in the middle of scoring and of a report, rerun the same command: it finishes the work, recomputes nothing
that was finished, leaves no temp or corrupt file, and ends with the same results as an uninterrupted run.

The runs are the real `tokentrim` entry point on the tiny random-weight causal Wan backbone of test_cli.py. To land
the kill at a known point in the middle of the stage (not before it starts, not after it ends), the killed process
runs `tokentrim.cli.main` with one stage function wrapped so that its n-th call writes a marker file and waits; the
test then kills the whole process group with SIGKILL (`os.killpg`, the process started with start_new_session=True).
The rerun is the plain, unwrapped command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from test_cli import TINY_WAN, tokentrim
from tokentrim.video_io import read_video

# TokenTrim triggers on this tiny backbone (5 batches; any rise of D above its running mean), so that variant and
# baseline videos differ and the report has triggers, heatmaps and frame strips to draw.
EAGER_TRIM = ["backbone.video.num_latent_frames=15", "trim.warmup=1", "trim.lam=0"]
NUM_VIDEOS = 4  # per variant: 2 prompts x 2 seeds

# Runs `tokentrim.cli.main` with `module:function` wrapped: its `nth` call writes `marker` and sleeps until killed.
PAUSED_MAIN = """
import importlib, os, sys, time
from pathlib import Path
marker, target, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
module_name, function_name = target.split(":")
module = importlib.import_module(module_name)
original = getattr(module, function_name)
calls = [0]
def paused(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    return original(*args, **kwargs)
setattr(module, function_name, paused)
sys.argv = ["tokentrim", *sys.argv[4:]]
from tokentrim.cli import main
main()
"""


def common(root: Path, *extra: str) -> list[str]:
    return [*TINY_WAN, f"prompts.path={root / 'prompts.txt'}", f"paths.output_root={root / 'out'}", "prompts.limit=2",
            "prompts.seeds=[0,1]", *EAGER_TRIM, "variant=tokentrim", *extra]


def kill_in_the_middle(root: Path, target: str, nth: int, *args: str, timeout: float = 120) -> None:
    """Start `tokentrim *args` with `target`'s `nth` call paused, wait for the pause, then SIGKILL its process group."""
    marker = root / "paused.marker"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    log = root / "paused.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-c", PAUSED_MAIN, str(marker), target, str(nth), *args], cwd=root,
                                env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        paused = marker.exists()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9, the whole group
        proc.wait()
    assert paused, f"the run never reached call {nth} of {target} (rc {proc.returncode}):\n{log.read_text()[-3000:]}"
    assert proc.returncode == -signal.SIGKILL


def temp_files(root: Path) -> list[Path]:
    """Temp files of the atomic writers (dot-prefixed, `.tmp` or `.shard-`), anywhere under `root`."""
    return [p for p in root.rglob("*") if p.is_file() and (p.name.startswith(".") and p.parent.name != ".hydra"
                                                          or ".tmp" in p.name or ".shard-" in p.name)]


def assert_all_files_valid(out: Path) -> None:
    """Every csv parses, every mp4 decodes, every json / jsonl line parses, every png is a complete PNG."""
    for path in out.rglob("*"):
        if not path.is_file() or ".hydra" in path.parts or "_hydra" in path.parts:
            continue
        if path.suffix == ".csv":
            assert len(pd.read_csv(path).columns) > 1, path
        elif path.suffix == ".mp4":
            frames, fps = read_video(path)
            assert frames.shape[0] > 0 and fps > 0, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            assert [json.loads(line) for line in path.read_text().splitlines()], path
        elif path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), path


def mtimes(root: Path, pattern: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob(pattern) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline + TokenTrim videos (4 each) of the tiny backbone, generated once for the module; tests copy it."""
    root = tmp_path_factory.mktemp("generated")
    (root / "prompts.txt").write_text("a red ball rolls\na blue cube spins\n")
    tokentrim("generate", *common(root), cwd=root)
    videos = pd.read_csv(variant_dir(root) / "videos.csv")
    assert len(videos) == NUM_VIDEOS and videos["num_triggers"].sum() > 0  # the variant differs from the baseline
    return root


@pytest.fixture()
def workdir(generated: Path, tmp_path: Path) -> Path:
    root = tmp_path / "work"
    shutil.copytree(generated, root)
    return root


def variant_dir(root: Path) -> Path:
    return root / "out" / "default" / "self_forcing" / "tokentrim"


def test_scoring_killed_mid_way_resumes_from_the_score_cache_and_matches_an_uninterrupted_run(workdir: Path) -> None:
    # chunk_size=1: one vbench call per video, so the cache and scores.csv advance video by video.
    args = ["score", *common(workdir, "baseline=false", "scorer.chunk_size=1")]
    reference = workdir.parent / "reference"
    shutil.copytree(workdir, reference)
    ref = tokentrim(*[a.replace(str(workdir), str(reference)) for a in args], cwd=reference)
    assert f"{NUM_VIDEOS} computed, 0 from cache" in ref.stdout + ref.stderr

    # kill -9 inside the 3rd video's vbench call: 2 videos scored and cached, 2 not.
    kill_in_the_middle(workdir, "tokentrim.scoring.vbench_adapter:_run_vbench_dimension", 3, *args)
    run = variant_dir(workdir)
    cache = workdir / "out" / ".score_cache"
    cached = mtimes(cache, "*.json")
    assert len(cached) == 2
    partial = pd.read_csv(run / "scores.csv")
    assert partial["score"].notna().sum() == 2  # flushed after each finished chunk, never half a file
    assert not temp_files(workdir)
    assert_all_files_valid(workdir / "out")

    rerun = tokentrim(*args, cwd=workdir)
    assert f"{NUM_VIDEOS - 2} computed, 2 from cache" in rerun.stdout + rerun.stderr
    assert {p: t for p, t in mtimes(cache, "*.json").items() if p in cached} == cached  # cached units untouched
    assert len(mtimes(cache, "*.json")) == NUM_VIDEOS
    assert not temp_files(workdir)
    assert_all_files_valid(workdir / "out")
    columns = ["video", "clip", "dimension", "score", "error", "content_hash"]
    got = pd.read_csv(run / "scores.csv", keep_default_na=False)[columns]
    want = pd.read_csv(variant_dir(reference) / "scores.csv", keep_default_na=False)[columns]
    assert len(got) == NUM_VIDEOS
    pd.testing.assert_frame_equal(got, want)


def test_report_killed_mid_way_is_completed_by_the_rerun_without_touching_videos_or_scores(workdir: Path) -> None:
    tokentrim("score", *common(workdir), cwd=workdir)
    experiment = workdir / "out" / "default"
    reference = workdir.parent / "reference"
    shutil.copytree(workdir, reference)
    tokentrim("report", str(reference / "out" / "default"), *common(workdir), cwd=reference)
    ref_plots = sorted(p.name for p in (reference / "out" / "default" / "plots").glob("*.png"))
    assert len(ref_plots) >= 4

    inputs = {**mtimes(experiment, "*.mp4"), **mtimes(experiment, "scores.csv"), **mtimes(experiment, "*.jsonl"),
              **mtimes(workdir / "out" / ".score_cache", "*.json")}
    args = ["report", str(experiment), *common(workdir)]
    # kill -9 between plots: the tables and the first 2 figures are written, the rest are not.
    kill_in_the_middle(workdir, "tokentrim.report.plots:_save", 3, *args)
    assert len(list((experiment / "plots").glob("*.png"))) == 2
    assert (experiment / "table.csv").exists()
    assert not temp_files(workdir)
    assert_all_files_valid(workdir / "out")

    tokentrim(*args, cwd=workdir)
    assert not temp_files(workdir)
    assert_all_files_valid(workdir / "out")
    assert sorted(p.name for p in (experiment / "plots").glob("*.png")) == ref_plots
    for name in ("table.csv", "table.md", "table.tex"):
        got = (experiment / name).read_text()
        want = (reference / "out" / "default" / name).read_text()
        assert got.replace(str(workdir), "<root>") == want.replace(str(reference), "<root>"), name
    # the report only reads: videos, events, scores and the score cache are exactly the files of before
    current = {**mtimes(experiment, "*.mp4"), **mtimes(experiment, "scores.csv"), **mtimes(experiment, "*.jsonl"),
               **mtimes(workdir / "out" / ".score_cache", "*.json")}
    assert current == inputs
