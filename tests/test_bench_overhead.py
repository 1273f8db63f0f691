"""bench/overhead.py runs on the embedded model and writes what it claims (plumbing only: no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_overhead_bench_interleaves_variants_and_counts_forced_triggers(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run(
        [sys.executable, str(ROOT / "bench/overhead.py"), "--repeats", "2", "--variants",
         "baseline,trim_rate0,trim_rate100", "--out", str(tmp_path), "--", "num_latent_frames=15"],
        check=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    result = json.loads(next(tmp_path.glob("overhead_tiny_cpu_*.json")).read_text())
    rows = result["variants"]
    assert list(rows) == ["baseline", "trim_rate0", "trim_rate100"]
    assert rows["baseline"]["overhead_x"] == 1.0
    # 5 batches; warm-up 2 + the first batch has no predecessor -> batches 3 and 4 tested, per prompt and round
    assert rows["trim_rate0"]["triggers"] == 0 and rows["trim_rate0"]["tested_batches"] > 0
    assert rows["trim_rate100"]["triggers"] == rows["trim_rate100"]["tested_batches"] > 0
    assert result["speed"]["compile_blocks"] is False  # backbone.speed resolves to eager on CPU
    assert "| trim_rate100 |" in next(tmp_path.glob("overhead_tiny_cpu_*.md")).read_text()


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
        assert fired == [4, 8, 12], (lam, scale, fired)  # warm-up 2: tested t = 3..14
