"""scripts/tinyworld_drift.py: first-vs-last clip drift per dimension from a scores.csv."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tinyworld_drift", ROOT / "scripts" / "tinyworld_drift.py")
drift = importlib.util.module_from_spec(spec)
spec.loader.exec_module(drift)


def write_scores(path: Path, rows: list[tuple[str, int, str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "clip", "dimension", "score", "error"])
        writer.writerows(rows)
    return path


def test_first_vs_last_clips(tmp_path):
    rows = []
    for video, scores in (("a-0", [1.0, 1.0, 0.9, 0.8, 0.5, 0.5]), ("b-0", [0.8, 0.6, 0.6, 0.6, 0.4, 0.4])):
        rows += [(video, c, "object_count", str(s), "") for c, s in enumerate(scores)]
        rows.append((video, -1, "object_count", "0.7", ""))  # whole-video row: ignored
    rows.append(("c-0", 0, "object_count", "1.0", ""))  # too few clips: left out
    rows.append(("a-0", 6, "object_count", "", "decode failed"))  # failed row: skipped
    pairs = drift.first_last_means(write_scores(tmp_path / "scores.csv", rows), first=2, last=2)
    assert pairs == {"object_count": [(1.0, 0.5), (0.7, 0.4)]}
    assert drift.relative_change(pairs["object_count"]) == pytest.approx(100 * (0.45 - 0.85) / 0.85)
    low, high = drift.bootstrap_ci(pairs["object_count"], n_boot=200)
    assert -57.2 < low <= high < -42.8  # each video alone: -50 % and -42.9 %
    table = drift.drift_table(tmp_path / "scores.csv", 2, 2, 200)
    assert "| object_count | 2 | 0.8500 | 0.4500 | -47.1 |" in table


def test_cli_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "tinyworld_drift.py"), str(tmp_path / "nope.csv")],
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [
        f"scores file {tmp_path / 'nope.csv'} does not exist (run `tokentrim score` first)"]
    few = write_scores(tmp_path / "few.csv", [("a-0", 0, "trajectory", "1.0", "")])
    with pytest.raises(ValueError, match="no video has 2 \\+ 3 scored clips"):
        drift.drift_table(few, 2, 3, 10)
