"""bench/overhead.py runs on the embedded model and writes what it claims (plumbing only: no timing assertions):
the reference is the generator without a decider, monitoring and pruning are separate rows, the execution path that
ran is recorded, and a requested lever that falls back fails the bench in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_bench(out: Path, *flags: str, frames: int = 12) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, str(ROOT / "bench/overhead.py"), *flags, "--out", str(out), "--",
                           f"num_latent_frames={frames}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def test_overhead_bench_measures_against_no_decider_and_reports_monitoring_separately(tmp_path):
    proc = run_bench(tmp_path, "--repeats", "1", "--variants", "no_decider,monitor,forced_every1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(tmp_path.glob("overhead_tiny_cpu_*.json")).read_text())
    rows = result["variants"]
    assert result["reference"] == "no_decider" and list(rows) == ["no_decider", "monitor", "forced_every1"]
    assert rows["no_decider"]["x_vs_no_decider"] == 1.0
    assert rows["no_decider"]["tested_batches"] == 0  # no decider: no events at all
    # 4 batches, warm-up 2: batch 4 is the one tested batch (one prompt, one round)
    assert rows["monitor"]["triggers"] == 0 and rows["monitor"]["tested_batches"] == 1
    assert rows["monitor"]["x_vs_monitor"] is None  # monitoring is not a pruning variant
    assert rows["forced_every1"]["triggers"] == rows["forced_every1"]["tested_batches"] == 1
    assert rows["forced_every1"]["x_vs_monitor"] == rows["forced_every1"]["median_s"] / rows["monitor"]["median_s"]
    assert result["speed"]["compile_blocks"] is False  # backbone.speed resolves to eager on CPU
    path = result["execution_path"]
    assert path["fell_back"] == [] and path["compile_blocks"]["requested"] is False
    assert path["attention_kv_splits"]["one_calls"] > 0 and path["attention_kv_splits"]["split_calls"] == 0
    assert {"torch", "device_name", "date_utc", "git_sha"} <= set(result["env"])
    md = next(tmp_path.glob("overhead_tiny_cpu_*.md")).read_text()
    assert "| forced_every1 |" in md and "x vs no_decider" in md


def test_a_requested_split_kv_that_never_splits_fails_the_bench_in_one_line(tmp_path):
    """kvsplit7 on the tiny model: no key length divides by 7, so every call runs as one call (the fallback)."""
    proc = run_bench(tmp_path, "--repeats", "1", "--variants", "no_decider", "--speed", "tokmajor+kvsplit7", frames=6)
    assert proc.returncode == 3
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("overhead.py:")]
    assert line.startswith("overhead.py: requested lever fell back: attention_kv_splits=7: no call ran split")
    result = json.loads(next(tmp_path.glob("overhead_tiny_cpu_*.json")).read_text())  # written before failing
    assert result["execution_path"]["fell_back"] and result["execution_path"]["attention_kv_splits"]["split_calls"] == 0


def test_unknown_variant_is_refused_in_one_line_before_any_model(tmp_path):
    proc = run_bench(tmp_path, "--repeats", "1", "--variants", "no_decider,trim_rate0")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("overhead.py: --variants: unknown variant 'trim_rate0'")
    assert not list(tmp_path.iterdir())


def test_forced_trim_triggers_exactly_every_period_th_tested_batch():
    """The forced-rate variants' trigger rate must not depend on the weights: the natural verdict is overridden."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from throughput import ForcedTrim
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from tokentrim.trim import TokenTrimConfig

    g = torch.Generator().manual_seed(0)
    for lam, scale in ((0.0, 1.0), (float("inf"), 1.0), (0.0, 0.0)):  # natural rule: often / never / ties
        trim = ForcedTrim(TokenTrimConfig(lam=lam), period=4)
        fired = []
        for b in range(14):
            tokens = torch.randn(3, 64, 16, generator=g) * scale * (1.0 + b)  # [F, N, c], drift grows
            decision = trim.decide(tokens)
            if decision.should_prune:
                fired.append(decision.t)
            trim.accept(trim.retest(tokens) if decision.should_prune else decision)
        assert fired == [4, 8, 12], (lam, scale, fired)  # warm-up 2: tested t = 4..14
