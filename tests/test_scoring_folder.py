"""Scoring a plain folder of mp4s (`tokentrim score score.videos_dir=...`) and reporting it beside our runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_cli import tokentrim
from tokentrim import video_io
from tokentrim.report import make_report
from tokentrim.scoring import aggregate_scores, read_scores
from tokentrim.scoring.folder import folder_manifest


def _write(folder, *names, frames=8):
    rng = np.random.default_rng(len(names))
    for name in names:
        video_io.write_video(folder / name, rng.integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8), fps=8)


def write_run(run_dir: Path, *, videos: list[dict], scores: list[dict]) -> Path:
    """A minimal run directory (videos.csv + scores.csv) in the on-disk format `tokentrim report` reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = pd.DataFrame([{"backbone": "tiny", "trim": "none", "init": "none", "status": "ok", "error": "",
                              "video": f"{v['prompt']}-{v['seed']}", **v} for v in videos])
    manifest.to_csv(run_dir / "videos.csv", index=False)
    pd.DataFrame([{"clip": -1, "error": "", "scorer": "vbench", **row} for row in scores]).to_csv(
        run_dir / "scores.csv", index=False)
    return run_dir


def test_manifest_from_vbench_names_a_csv_or_a_json_prompt_file(tmp_path):
    folder = tmp_path / "official"
    _write(folder, "a cat sleeps-0.mp4", "a cat sleeps-1.mp4", "a dog-3.mp4")
    frame = folder_manifest(folder, variant="official_self_forcing", backbone="self_forcing")
    assert list(zip(frame["video"], frame["prompt"], frame["seed"])) == [
        ("a cat sleeps-0", "a cat sleeps", 0), ("a cat sleeps-1", "a cat sleeps", 1), ("a dog-3", "a dog", 3)]
    assert set(frame["trim"]) == {"official_self_forcing"} and set(frame["status"]) == {"ok"}
    assert list(frame["num_frames"]) == [8, 8, 8] and all(p.startswith(str(folder.resolve())) for p in frame["path"])

    other = tmp_path / "other"
    _write(other, "clip_a.mp4", "clip_b.mp4", "clip_c-7.mp4")
    with pytest.raises(ValueError, match="'clip_a.mp4' is not VBench-named") as info:
        folder_manifest(other, variant="x", backbone="tiny")
    assert "\n" not in str(info.value)
    (tmp_path / "prompts.csv").write_text("path,prompt\nclip_a.mp4,a red car\nclip_b.mp4,a red car\nclip_c-7.mp4,waves\n")
    frame = folder_manifest(other, variant="x", backbone="tiny", prompt_file=tmp_path / "prompts.csv")
    assert list(zip(frame["prompt"], frame["seed"])) == [("a red car", 0), ("a red car", 1), ("waves", 7)]
    (tmp_path / "prompts.json").write_text(json.dumps({"clip_b.mp4": "a red car"}))
    frame = folder_manifest(other, variant="x", backbone="tiny", prompt_file=tmp_path / "prompts.json")
    assert list(frame["video"]) == ["clip_b"]  # exactly the listed files
    (tmp_path / "bad.json").write_text(json.dumps({"missing.mp4": "a red car"}))
    with pytest.raises(FileNotFoundError, match="lists 'missing.mp4'"):
        folder_manifest(other, variant="x", backbone="tiny", prompt_file=tmp_path / "bad.json")
    with pytest.raises(ValueError, match="score.variant must be a label"):
        folder_manifest(folder, variant="a/b", backbone="tiny")


def test_tokentrim_score_on_a_folder_is_reported_beside_our_baseline(tmp_path):
    out = tmp_path / "out"
    # our (synthetic) baseline of the default `tiny` backbone, prompts "a cat" / "a dog", seed 0
    write_run(out / "default" / "tiny" / "baseline", videos=[{"prompt": p, "seed": 0} for p in ("a cat", "a dog")],
              scores=[{"video": f"{p}-0", "dimension": "temporal_flickering", "score": s}
                      for p, s in (("a cat", 0.95), ("a dog", 0.97))])
    folder = tmp_path / "official"
    _write(folder, "a cat-0.mp4", "a dog-0.mp4", "a cow-0.mp4")
    # "a cat" / "a dog" / "a cow" are VBench object_class prompts: `all` scores them on temporal_flickering too
    tokentrim("score", "scorer=vbench", "scorer.dimensions=[temporal_flickering]", "scorer.prompt_protocol=all",
              f"paths.output_root={out}",
              f"score.videos_dir={folder}", "score.variant=official_self_forcing", cwd=tmp_path)
    run = out / "default" / "tiny" / "official_self_forcing"
    manifest = pd.read_csv(run / "videos.csv")
    assert sorted(manifest["video"]) == ["a cat-0", "a cow-0", "a dog-0"]
    rows = read_scores(run / "scores.csv")
    assert sorted(r["path"] for r in rows) == sorted(str((folder / f"{v}.mp4").resolve()) for v in manifest["video"])
    assert all(r["error"] == "" and math.isfinite(r["score"]) for r in rows)

    make_report(out / "default", n_boot=0, plots=False)
    table = pd.read_csv(out / "default" / "table.csv").set_index("variant")
    official = table.loc["official_self_forcing"]
    assert official["backbone"] == "tiny" and official["baseline"] == "baseline" and official["n_paired"] == 2
    assert official["temporal_flickering"] == pytest.approx(aggregate_scores(rows)["temporal_flickering"])
    assert "official_self_forcing" in (out / "default" / "table.md").read_text()
