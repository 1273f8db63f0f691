"""The one aggregation of `scores.csv` rows: per video, then per dimension (used by `aggregate_scores` and the report).

    1. per (video, dimension): mean over its clip rows (`clip >= 0`, VBench-Long `reorganize_clips_results`); a video
       with no scored clip row uses its whole-video rows (`clip == -1`). So a clip = -1 summary row written beside
       clips (TinyWorld's `include_video_mean`) never counts twice. Rows with a NaN score (errors) are left out.
    2. per dimension: unweighted mean over videos (a long video weighs as much as a short one).

vbench's own aggregate pools frames for subject/background consistency and GRiT/scene (longer videos weigh more); for
equal-length videos, as the harness generates, the two agree.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["aggregate_scores", "per_video_scores"]


def per_video_scores(rows: Iterable[Mapping], *, videos: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Step 1: {dimension: {video: score}} (a video with no finite score for a dimension is absent).

    Args:
        rows: scores.csv rows (keys video, clip, dimension, score).
        videos: keep only these video names; default all.
    """
    wanted = set(videos) if videos is not None else None
    clips: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    whole: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        score = float(row["score"])
        video = str(row["video"])
        if math.isnan(score) or (wanted is not None and video not in wanted):
            continue
        target = clips if int(row["clip"]) >= 0 else whole
        target[str(row["dimension"])][video].append(score)
    out: dict[str, dict[str, float]] = {}
    for dim in list(dict.fromkeys([*clips, *whole])):
        by_video = {video: sum(values) / len(values) for video, values in whole.get(dim, {}).items()}
        by_video |= {video: sum(values) / len(values) for video, values in clips.get(dim, {}).items()}  # clips win
        out[dim] = by_video
    return out


def aggregate_scores(rows: Sequence[Mapping] | str | os.PathLike, *, videos: Sequence[str] | None = None) -> dict[str, float]:
    """Per dimension: step 1, then the mean over videos (step 2). A dimension with no scored video is absent.

    `rows` may be a scores.csv path. The result feeds `totals.compute_totals`.
    """
    if isinstance(rows, (str, os.PathLike)):
        from tokentrim.scoring.scores_store import read_scores

        rows = read_scores(rows)
    return {dim: sum(by_video.values()) / len(by_video)
            for dim, by_video in per_video_scores(rows, videos=videos).items() if by_video}
