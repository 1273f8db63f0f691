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

from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.scoring import VideoJob, content_hash, score_videos

logger = logging.getLogger(__name__)

VBENCH_ARGS = (
    "cache_dir", "torch_home", "hf_home", "device", "clip_dir", "long_protocol", "long_min_seconds", "clip_seconds",
    "clip_crf", "slow_fast", "chunk_size", "num_shards", "shard_index", "num_workers", "devices", "full_info_path",
    "imaging_quality_preprocessing_mode", "scene_split", "scene_threshold", "scene_min_frames",
    "slow_fast_dimensions", "slow_fast_mapping_dir", "dinov2_path", "slow_fast_w_inclip", "slow_fast_w_clip2clip",
)


def score(scorer: Mapping[str, Any], run_dir: Path, *, score_cache_dir: str | None = None) -> Path:
    """Score every ok video of `run_dir`. Returns the scores.csv path."""
    manifest = run_dir / "videos.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found: generate first (tokentrim generate) or point at a run directory")
    videos = pd.read_csv(manifest, keep_default_na=False)
    videos = videos[videos["status"] == "ok"]
    jobs = [VideoJob(run_dir / "videos" / f"{v}.mp4", video=v, prompt=p) for v, p in zip(videos["video"], videos["prompt"])]
    scores_csv = run_dir / "scores.csv"
    name = scorer.get("name")
    vbench_dims = scorer.get("dimensions") if name == "vbench" else scorer.get("vbench_dimensions", ["temporal_flickering"])
    if name == "vbench" or vbench_dims:
        if name == "vbench":
            kwargs = {k: scorer[k] for k in VBENCH_ARGS if k in scorer and scorer[k] is not None}
        else:  # tinyworld: its clip length applies to the VBench dimensions scored beside it
            kwargs = {"clip_seconds": {d: float(scorer.get("clip_seconds", 2.0)) for d in vbench_dims}}
        summary = score_videos(jobs, scores_csv=scores_csv, dimensions=vbench_dims, score_cache_dir=scorer.get("score_cache_dir") or score_cache_dir, **kwargs)
        logger.info("vbench: %s", summary.describe())
    if name == "tinyworld":
        _score_tinyworld(scorer, jobs, scores_csv)
    elif name != "vbench":
        raise ValueError(f"scorer.name must be one of ['vbench', 'tinyworld'], got {name!r}")
    return scores_csv


def _score_tinyworld(scorer: Mapping[str, Any], jobs: list[VideoJob], scores_csv: Path) -> None:
    """Ground-truth metric rows (scorer=tinyworld), recomputed only for videos whose content changed."""
    from tokentrim.tinyworld.metrics import score_video_file

    scorer_kwargs = {k: v for k, v in scorer.items() if k not in ("name", "vbench_dimensions")}  # TinyWorldScorer args
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
    new = pd.DataFrame(rows)
    if not existing.empty:
        stale = existing["video"].isin(new["video"]) & (existing["scorer"] == "tinyworld")
        new = pd.concat([existing[~stale], new], ignore_index=True)
    write_text_atomic(scores_csv, new.to_csv(index=False))
