"""Scoring stage of a run directory: videos.csv -> scores.csv (one row per video x clip x dimension).

`scorer=vbench`: the real vbench dimensions (`tokentrim.scoring.score_videos`), cached by content hash.
`scorer=tinyworld`: TinyWorld's ground-truth metrics per 2-second clip, plus the VBench dimensions listed in
`scorer.vbench_dimensions` (temporal_flickering by default: it needs no weights).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tokentrim.scoring import VideoJob, content_hash, score_videos
from tokentrim.scoring.scorer_config import SCORER_NAMES, vbench_kwargs
from tokentrim.scoring.scores_store import merge_rows

logger = logging.getLogger(__name__)

def score(scorer: Mapping[str, Any], run_dir: Path, *, score_cache_dir: str | None = None, device: str = "cpu") -> Path:
    """Score every ok video of `run_dir`. Returns the scores.csv path.

    `device` is the top-level device: `scorer.device: null` follows it (`scoring.scorer_config.scorer_device`).
    A manifest with a `path` column (a scored folder, `tokentrim.scoring.folder`) points at the files; otherwise they
    are `run_dir/videos/<video>.mp4`.
    """
    manifest = run_dir / "videos.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found: generate first (tokentrim generate) or point at a run directory")
    videos = pd.read_csv(manifest, keep_default_na=False, dtype={"video": str, "prompt": str})
    videos = videos[videos["status"] == "ok"]
    paths = (videos["path"] if "path" in videos.columns
             else [run_dir / "videos" / f"{v}.mp4" for v in videos["video"]])
    jobs = [VideoJob(Path(path), video=v, prompt=p) for path, v, p in zip(paths, videos["video"], videos["prompt"])]
    scores_csv = run_dir / "scores.csv"
    name = scorer.get("name")
    if name not in SCORER_NAMES:
        raise ValueError(f"scorer.name must be one of {list(SCORER_NAMES)}, got {name!r}")
    kwargs = vbench_kwargs(scorer, device)
    if kwargs["dimensions"] != []:
        summary = score_videos(jobs, scores_csv=scores_csv, score_cache_dir=scorer.get("score_cache_dir") or score_cache_dir,
                               **kwargs)
        logger.info("vbench: %s", summary.describe())
    if name == "tinyworld":
        _score_tinyworld(scorer, jobs, scores_csv)
    return scores_csv


def _score_tinyworld(scorer: Mapping[str, Any], jobs: list[VideoJob], scores_csv: Path) -> None:
    """Ground-truth metric rows (scorer=tinyworld), recomputed only for videos whose content changed."""
    from tokentrim.tinyworld.metrics import score_video_file

    scorer_kwargs = {k: v for k, v in scorer.items() if k not in ("name", "vbench_dimensions", "device")}  # TinyWorldScorer args
    existing = pd.read_csv(scores_csv, dtype={"content_hash": str}) if scores_csv.exists() else pd.DataFrame()
    rows: list[dict] = []
    for job in jobs:
        digest = content_hash(job.path)
        if not existing.empty:
            done = existing[(existing["video"] == job.name) & (existing["scorer"] == "tinyworld") & (existing["content_hash"] == digest)]
            if len(done):
                continue
        try:
            metric_rows = score_video_file(job.path, job.prompt, **scorer_kwargs)
            rows += [{"video": job.name, "clip": r["clip"], "dimension": r["dimension"], "score": r["score"], "error": "",
                      "scorer": "tinyworld", "content_hash": digest} for r in metric_rows]
        except (OSError, ValueError, RuntimeError) as err:  # a corrupt video is recorded, the run goes on
            logger.error("tinyworld metrics failed for %s: %s", job.path, err)
            rows.append({"video": job.name, "clip": -1, "dimension": "tinyworld", "score": float("nan"), "error": str(err).splitlines()[0],
                         "scorer": "tinyworld", "content_hash": digest})
    if not rows:
        return
    renewed = {row["video"] for row in rows}
    merge_rows(scores_csv, rows, drop=lambda row: row.get("scorer") == "tinyworld" and row["video"] in renewed)
