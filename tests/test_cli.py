"""The `tokentrim` command line: composition-time validation, resumable generation, sweeps, one-line errors.

Runs the real entry point in subprocesses on a tiny random-weight causal Wan backbone (same code path as the 1.3B
backbones) so the whole generate -> score -> report chain is exercised on CPU in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

TINY_WAN = [
    "backbone=self_forcing",
    "backbone.random_weights=true",
    "backbone.model.dim=32",
    "backbone.model.ffn_dim=64",
    "backbone.model.num_heads=2",
    "backbone.model.num_layers=2",
    "backbone.model.text_dim=16",
    "backbone.model.text_len=8",
    "backbone.model.freq_dim=32",
    "backbone.video.height=32",
    "backbone.video.width=32",
    "backbone.video.num_latent_frames=9",
    "backbone.sampler.max_frames=6",
    "backbone.vae_config={base_dim: 8, dim_mult: [1, 2, 2, 2]}",
    "scorer=vbench",
    "scorer.dimensions=[temporal_flickering]",
    "prompts=file",
    "report.n_boot=20",
]


def tokentrim(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tokentrim.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"tokentrim {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "prompts.txt").write_text("a red ball rolls\na blue cube spins\na green cone sits\n")
    return tmp_path


def common(workdir: Path, *extra: str) -> list[str]:
    return [*TINY_WAN, f"prompts.path={workdir / 'prompts.txt'}", f"paths.output_root={workdir / 'out'}", *extra]


def test_bad_config_values_fail_with_one_line_naming_the_key(workdir: Path) -> None:
    for override, message in [
        ("trim.p=1.5", "trim.p must be in (0, 1], got 1.5"),
        ("trim.lam=-1", "trim.lam must be >= 0, got -1"),
        ("trim.warmup=-2", "trim.warmup must be >= 0, got -2"),
        ("trim.max_retries=-1", "trim.max_retries must be >= 0, got -1"),
        ("trim.scope=everything", "trim.scope must be one of ['all_but_sink', 'last_batch', 'all'], got 'everything'"),
        ("+trim.foo=1", "trim has unknown keys ['foo']"),
    ]:
        proc = tokentrim("generate", *common(workdir, override), cwd=workdir, check=False)
        assert proc.returncode == 2, override
        assert proc.stderr.splitlines() == [f"tokentrim generate: {proc.stderr.split(': ', 1)[1].strip()}"], override
        assert message in proc.stderr, (override, proc.stderr[-2000:])
    assert not (workdir / "out" / "default" / "self_forcing").exists()  # nothing was generated


def test_bad_tinyworld_sampler_override_fails_before_any_output(tmp_path: Path) -> None:
    """TinyWorld sampler overrides are checked against the shipped sampler at composition time: one line, and no
    results directory is created (which would block the corrected run)."""
    for override, message in [
        ("backbone.sampler.guidance_scale=-1", "sampler.guidance_scale must be >= 0 (1 = no guidance), got -1"),
        ("+backbone.sampler.sink_frames=12", "sampler.sink_frames must be in [0, max_frames - block_frames] = [0, 9]"),
    ]:
        proc = tokentrim("run", f"paths.output_root={tmp_path / 'out'}", override, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (override, proc.stderr[-2000:])
        assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # not even Hydra's own log folder


def test_unknown_group_option_lists_the_allowed_ones(workdir: Path) -> None:
    proc = tokentrim("generate", *common(workdir, "trim=aggressive"), cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "Could not find 'trim/aggressive'" in proc.stderr and "tokentrim" in proc.stderr and "none" in proc.stderr


def test_missing_prompt_file_is_one_clear_line(workdir: Path) -> None:
    proc = tokentrim("generate", *common(workdir), "prompts.path=/nonexistent/prompts.txt", cwd=workdir, check=False)
    assert proc.returncode == 2
    assert "prompts.path" in proc.stderr and "/nonexistent/prompts.txt" in proc.stderr


def test_run_writes_the_results_layout_and_a_rerun_recomputes_nothing(workdir: Path) -> None:
    tokentrim("run", *common(workdir, "prompts.limit=2"), cwd=workdir)
    exp = workdir / "out" / "default"
    for variant in ("baseline", "tokentrim"):
        run = exp / "self_forcing" / variant
        assert (run / "config.yaml").exists() and (run / "env.json").exists() and (run / "scores.csv").exists()
        videos = pd.read_csv(run / "videos.csv")
        assert list(videos["video"]) == ["a blue cube spins-0", "a red ball rolls-0"]
        assert {p.name for p in (run / "videos").iterdir()} == {"a blue cube spins-0.mp4", "a red ball rolls-0.mp4"}
        events = [json.loads(line) for line in (run / "events" / "a red ball rolls-0.jsonl").read_text().splitlines()]
        assert [e["t"] for e in events] == [1, 2, 3]
        assert set(pd.read_csv(run / "scores.csv")["dimension"]) == {"temporal_flickering"}
    assert (exp / "table.md").exists() and (exp / "table.csv").exists() and (exp / "table.tex").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in exp.rglob("*.mp4")}
    proc = tokentrim("run", *common(workdir, "prompts.limit=2"), cwd=workdir)
    assert proc.stdout.rstrip().endswith((exp / "table.md").read_text().rstrip())  # the table is the run's last output
    assert not [p for p in exp.rglob(".*") if ".tmp" in p.name]  # no temp file survives
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~_umask() for p in (exp / "self_forcing" / "baseline").rglob("*.json"))
    assert "2 videos, 2 already done" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*.mp4")} == mtimes


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_changed_generation_config_in_an_existing_results_directory_is_refused(workdir: Path) -> None:
    tokentrim("generate", *common(workdir, "prompts.limit=1", "baseline=false"), cwd=workdir)
    proc = tokentrim("generate", *common(workdir, "prompts.limit=1", "baseline=false", "backbone.video.num_latent_frames=6",
                                         "variant=tokentrim"), cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "was made with a different config (backbone differ)" in proc.stdout + proc.stderr


def test_multirun_sweep_shares_one_baseline(workdir: Path) -> None:
    tokentrim("generate", "-m", "trim.p=0.05,0.2", *common(workdir, "prompts.limit=1"), cwd=workdir)
    runs = sorted(p.name for p in (workdir / "out" / "default" / "self_forcing").iterdir())
    assert runs == ["baseline", "tokentrim_p0.05", "tokentrim_p0.2"]
    cfg = (workdir / "out" / "default" / "self_forcing" / "tokentrim_p0.2" / "config.yaml").read_text()
    assert "p: 0.2" in cfg


def test_killed_generation_resumes_without_recomputing_finished_videos(workdir: Path) -> None:
    args = [sys.executable, "-m", "tokentrim.cli", "generate", *common(workdir, "baseline=false", "backbone.video.num_latent_frames=30")]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    meta = workdir / "out" / "default" / "self_forcing" / "tokentrim" / "meta"
    deadline = time.time() + 240
    while time.time() < deadline and not (meta.exists() and any(meta.glob("*.json"))):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 in the middle of the next video
    proc.wait()
    done = sorted(meta.glob("*.json"))
    assert 1 <= len(done) < 3, "the kill should land between the first and the last video"
    run = meta.parent
    # no half-written file under a final name: every finished video decodes (a kill inside a write can only leave a
    # dot-prefixed temp file, which every reader skips)
    from tokentrim.video_io import read_video

    for video in (run / "videos").glob("*.mp4"):
        if not video.name.startswith("."):
            assert read_video(video)[0].shape[0] > 0
    first = run / "videos" / f"{done[0].stem}.mp4"
    mtime = first.stat().st_mtime_ns
    out = tokentrim("generate", *common(workdir, "baseline=false", "backbone.video.num_latent_frames=30"), cwd=workdir)
    assert f"3 videos, {len(done)} already done" in out.stdout + out.stderr
    assert first.stat().st_mtime_ns == mtime
    assert len(list(meta.glob("*.json"))) == 3 and len(pd.read_csv(run / "videos.csv")) == 3


def test_each_missing_real_backbone_file_is_named_with_its_config_key(workdir: Path) -> None:
    weights = workdir / "weights"
    expected = [
        ("Self-Forcing/checkpoints/self_forcing_dmd.pt", "backbone.checkpoint"),
        ("Wan2.1-T2V-1.3B/Wan2.1_VAE.pth", "backbone.vae_path"),
        ("Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth", "backbone.text_encoder_path"),
        ("Wan2.1-T2V-1.3B/google/umt5-xxl", "backbone.tokenizer_path"),
    ]
    for relative, key in expected:  # each run finds the previous files present and names the next missing one
        proc = tokentrim("generate", "backbone=self_forcing", "scorer=vbench", "prompts=file", f"prompts.path={workdir / 'prompts.txt'}",
                         f"paths.weights_dir={weights}", f"paths.output_root={workdir / 'out'}", cwd=workdir, check=False)
        assert proc.returncode == 2
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "not found" in line]
        assert len(lines) == 1 and str(weights / relative) in lines[0] and key in lines[0], (relative, proc.stderr[-1500:])
        target = weights / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir() if relative.endswith("umt5-xxl") else target.write_bytes(b"")
    # checked at composition time: no results directory (whose config.yaml would refuse a corrected path) was made
    assert not (workdir / "out" / "default" / "self_forcing").exists()


def test_default_embedded_tinyworld_job_scores_ground_truth_and_flicker(tmp_path: Path) -> None:
    prompt = "a small blue diamond bounces up and down over a dark purple gradient background"
    tokentrim("run", f"paths.output_root={tmp_path / 'out'}", f"prompts.prompts=[{prompt!r}]".replace("'", '"'),
              "backbone.video.num_latent_frames=12", "report.n_boot=20", cwd=tmp_path)
    exp = tmp_path / "out" / "default"
    for variant in ("baseline", "tokentrim"):
        scores = pd.read_csv(exp / "tiny" / variant / "scores.csv")
        assert set(scores["scorer"]) == {"tinyworld", "vbench"}
        assert {"object_count", "colour_fidelity", "shape_persistence", "trajectory", "background_stability",
                "temporal_flickering"} <= set(scores["dimension"])
        assert scores["score"].between(0, 1).all()
    table = (exp / "table.md").read_text()
    assert "object_count (extra)" in table and "Final (1/16: temporal_flickering)" in table
