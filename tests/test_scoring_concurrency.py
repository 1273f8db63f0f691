"""Concurrent and sharded scoring lose nothing: two real processes write one scores.csv at the same moment.

Each process runs the real vbench temporal_flickering (no weights) with `chunk_size=1`, so it flushes scores.csv after
every video and the two processes' read-merge-writes interleave. The processes import everything first, then wait on
a start file, so scoring starts at the same moment in both.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tokentrim import video_io
from tokentrim.scoring import read_scores

CHILD = """
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
import vbench, vbench.utils  # heavy imports before the start line
from tokentrim.scoring import score_videos
Path(args["ready"]).touch()
for phase in args["phases"]:  # every phase starts when the parent creates its `go` file (all children at once)
    while not Path(phase["go"]).exists():
        time.sleep(0.002)
    summary = score_videos(phase["videos"], scores_csv=phase["scores_csv"], dimensions=["temporal_flickering"],
                           cache_dir=args["weights"], chunk_size=1, num_shards=phase["num_shards"],
                           shard_index=phase["shard_index"])
    Path(phase["done"]).write_text(str(summary.num_rows))
"""


def _videos(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(7)
    paths = []
    for k in range(count):
        frames = rng.integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)  # [T, H, W, 3]
        path = folder / f"clip number {k}-0.mp4"
        video_io.write_video(path, frames, fps=8)
        paths.append(str(path))
    return paths


def _run_together(root: Path, phases_per_child: list[list[dict]]) -> list[list[int]]:
    """One child per list of phases; phase k of every child starts at the same moment (after all imported and all
    finished phase k - 1). Returns the rows each child wrote per phase."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs, done = [], []
    for c, phases in enumerate(phases_per_child):
        phases = [{**phase, "go": str(root / f"go{k}"), "done": str(root / f"done{c}_{k}")} for k, phase in enumerate(phases)]
        done.append([Path(phase["done"]) for phase in phases])
        args = {"phases": phases, "ready": str(root / f"ready{c}"), "weights": str(root / "weights")}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))

    def wait_for(paths: list[Path]) -> None:
        deadline = time.time() + 240
        while not all(path.exists() for path in paths):
            if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise AssertionError([p.communicate()[1][-3000:] for p in procs])
            time.sleep(0.02)

    wait_for([root / f"ready{c}" for c in range(len(procs))])
    for k in range(len(phases_per_child[0])):
        (root / f"go{k}").touch()
        wait_for([paths[k] for paths in done])
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
    return [[int(path.read_text()) for path in paths] for paths in done]


def _assert_complete(scores_csv: Path, videos: list[str]) -> None:
    rows = read_scores(scores_csv)
    assert sorted(row["path"] for row in rows) == sorted(videos)  # every video exactly once
    assert all(row["error"] == "" and math.isfinite(row["score"]) for row in rows)
    assert not [p.name for p in scores_csv.parent.iterdir() if p.name.startswith(".")]  # no lock / temp file left


@pytest.fixture(scope="module")
def two_phases(tmp_path_factory) -> dict:
    """Two processes, two phases: (1) different videos into one run dir's scores.csv, sharing its score cache;
    (2) `num_shards=2`, `shard_index` 0 and 1, on one folder."""
    root = tmp_path_factory.mktemp("concurrent")
    together = _videos(root / "together", 8)
    sharded = _videos(root / "sharded", 7)
    run1, run2 = root / "run1" / "scores.csv", root / "run2" / "scores.csv"
    rows = _run_together(root, [
        [{"videos": together[:4], "scores_csv": str(run1), "num_shards": 1, "shard_index": 0},
         {"videos": str(root / "sharded"), "scores_csv": str(run2), "num_shards": 2, "shard_index": 0}],
        [{"videos": together[4:], "scores_csv": str(run1), "num_shards": 1, "shard_index": 0},
         {"videos": str(root / "sharded"), "scores_csv": str(run2), "num_shards": 2, "shard_index": 1}],
    ])
    return {"rows": rows, "together": (run1, together), "sharded": (run2, sharded)}


def test_two_processes_scoring_one_run_directory_at_once_keep_every_row(two_phases):
    scores_csv, videos = two_phases["together"]
    assert [rows[0] for rows in two_phases["rows"]] == [4, 4]
    _assert_complete(scores_csv, videos)


def test_num_shards_2_in_two_processes_keep_every_row(two_phases):
    scores_csv, videos = two_phases["sharded"]
    assert [rows[1] for rows in two_phases["rows"]] == [4, 3]  # sorted(videos)[k::2]
    _assert_complete(scores_csv, videos)


def test_num_workers_2_write_every_row_once_equal_to_one_worker(tmp_path):
    """Two workers pull (dimension, chunk) tasks; the rows equal the in-process run bit for bit. One video is >= 5 s,
    so the VBench-Long clip path (clips cut in threads, `clip_path` rows) runs too."""
    from tokentrim.scoring import score_videos

    videos = _videos(tmp_path / "videos", 1)
    rng = np.random.default_rng(8)
    long_path = tmp_path / "videos" / "a long one-0.mp4"
    video_io.write_video(long_path, rng.integers(0, 256, (48, 24, 24, 3), dtype=np.uint8), fps=8)  # 6 s: 2-s clips
    videos.append(str(long_path))
    runs = {}
    for workers in (2, 1):  # 2 first: it cuts the clips, 1 then reads the same clip files
        scores_csv = tmp_path / f"run{workers}" / "scores.csv"
        summary = score_videos(tmp_path / "videos", scores_csv=scores_csv, dimensions=["temporal_flickering"],
                               cache_dir=tmp_path / "weights", clip_dir=tmp_path / "clips", chunk_size=1,
                               num_workers=workers, devices=["cpu", "cpu:0"] if workers == 2 else None)
        rows = read_scores(scores_csv)
        assert len(rows) == summary.num_rows == summary.num_computed == summary.vbench_calls  # one unit per task
        runs[workers] = {(row["video"], row["clip"], row["dimension"]): row for row in rows}
        assert sorted(p.name for p in scores_csv.parent.iterdir()) == ["score_cache", "scores.csv"]
    assert runs[2].keys() == runs[1].keys() and len(runs[1]) >= 4
    for key, row in runs[1].items():
        assert row["raw_score"] == runs[2][key]["raw_score"] and not math.isnan(row["raw_score"])  # bit for bit
        assert {k: v for k, v in row.items() if k != "device"} == {k: v for k, v in runs[2][key].items() if k != "device"}
        assert runs[2][key]["device"] in ("cpu", "cpu:0") and row["device"] == "cpu"
        clip = key[1]
        assert (row["clip_path"] != "") == (clip >= 0)
        if clip >= 0:  # the clip file vbench read
            assert Path(row["clip_path"]).is_file() and Path(row["clip_path"]).parent.parent.parent == tmp_path / "clips"
    assert all(row["error"] == "" and math.isfinite(row["score"]) for row in runs[2].values())
    assert not [p.name for p in (tmp_path / "run2").iterdir() if p.name.startswith(".")]  # no lock / temp file left


def test_store_flush_merges_with_the_file_and_drops_only_stale_rows_of_claimed_pairs(tmp_path):
    from tokentrim.scoring.scores_store import ScoresStore, write_scores

    def row(video, clip, dim, score):
        return {"video": video, "clip": clip, "dimension": dim, "score": score, "error": "", "scorer": "vbench"}

    path = tmp_path / "scores.csv"
    # on disk: an earlier clip protocol of (a, tf) with 3 clips, and another process's rows of b and of (a, aq)
    write_scores(path, [row("a", 0, "tf", 0.1), row("a", 1, "tf", 0.2), row("a", 2, "tf", 0.3),
                        row("b", -1, "tf", 0.4), row("a", -1, "aq", 0.5)])
    store = ScoresStore(path)
    store.claim("a", "tf", [0, 1])  # this call scores (a, tf) as 2 clips
    store.put(row("a", 0, "tf", 0.9))
    store.flush()
    got = {(r["video"], r["clip"], r["dimension"]): r["score"] for r in read_scores(path)}
    # clip 2 is stale (dropped); clip 1 not produced yet here: kept; other pairs untouched; clip 0 is ours
    assert got == {("a", 0, "tf"): 0.9, ("a", 1, "tf"): 0.2, ("b", -1, "tf"): 0.4, ("a", -1, "aq"): 0.5}
    write_scores(path, [*read_scores(path), row("c", -1, "tf", 0.6)])  # another process writes meanwhile
    store.put(row("a", 1, "tf", 0.8))
    store.flush()
    got = {(r["video"], r["clip"], r["dimension"]): r["score"] for r in read_scores(path)}
    assert got == {("a", 0, "tf"): 0.9, ("a", 1, "tf"): 0.8, ("b", -1, "tf"): 0.4, ("a", -1, "aq"): 0.5,
                   ("c", -1, "tf"): 0.6}
