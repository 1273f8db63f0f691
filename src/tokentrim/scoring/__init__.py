"""VBench scoring: the real `vbench` 0.1.5 dimension code behind one adapter, VBench-Long clips, official totals.

Public API (the CLI's `tokentrim score` / `tokentrim vbench-check` call these):

- `score_videos(videos, *, scores_csv, dimensions=None, cache_dir=None, torch_home=None, hf_home=None, device="cpu",
  ...) -> ScoreRunSummary`: one row per (video, clip, dimension) in `scores.csv`, cached by content hash; which
  dimensions a video gets follows `prompt_protocol` (`planning.dimensions_for_prompt`: VBench's standard protocol for
  suite prompts by default).
- `check_dimensions(dimensions=None, *, cache_dir=None, torch_home=None, hf_home=None) -> {dim: DimensionStatus}` and
  `format_check(status) -> str`: ready / missing file(s) with exact paths; imports nothing, downloads nothing.
- `preflight(scorer_cfg, device)`: the scorer config checked before any work (one line: dimension, missing file, key).
- `aggregate_scores(rows_or_csv) -> {dim: float}` (`aggregation`, the one rule the report uses too) and
  `compute_totals(raw) -> Totals` (Quality / Semantic / Total over the requested dimensions; `label` for tables).
- Modules: `vbench_adapter` (score_videos), `planning`, `scores_store`, `vbench_env`, `scheduling` (tasks for
  `num_workers > 1`), `worker_pool`, `slow_fast`,
  `aggregation`, `totals`, `weights`, `scorer_config`, `folder` (score a plain folder of mp4s), `long_video`.
- Prompt suites: `load_vbench_suite`, `load_prompt_file`, `video_name`, `prompt_from_video_name`.

Importing this package does not import vbench or torch.
"""

from tokentrim.scoring.prompts import (
    PromptEntry,
    auxiliary_info_for,
    load_prompt_file,
    load_vbench_suite,
    prompt_from_video_name,
    vbench_full_info_path,
    video_name,
)
from tokentrim.scoring.totals import (
    ALL_DIMENSIONS,
    QUALITY_DIMENSIONS,
    SEMANTIC_DIMENSIONS,
    Totals,
    compute_totals,
)
from tokentrim.scoring.aggregation import aggregate_scores, per_video_scores
from tokentrim.scoring.planning import DEFAULT_CLIP_SECONDS, VideoJob, content_hash
from tokentrim.scoring.scorer_config import preflight
from tokentrim.scoring.scores_store import SCORES_COLUMNS, read_scores
from tokentrim.scoring.vbench_adapter import DimensionFailedError, ScoreRunSummary, score_videos
from tokentrim.scoring.weights import (
    DimensionStatus,
    DownloadBlockedError,
    WeightsMissingError,
    check_dimensions,
    format_check,
)

__all__ = [
    "ALL_DIMENSIONS",
    "QUALITY_DIMENSIONS",
    "SEMANTIC_DIMENSIONS",
    "DEFAULT_CLIP_SECONDS",
    "SCORES_COLUMNS",
    "DimensionFailedError",
    "DimensionStatus",
    "DownloadBlockedError",
    "PromptEntry",
    "ScoreRunSummary",
    "Totals",
    "VideoJob",
    "WeightsMissingError",
    "aggregate_scores",
    "auxiliary_info_for",
    "check_dimensions",
    "compute_totals",
    "content_hash",
    "format_check",
    "load_prompt_file",
    "load_vbench_suite",
    "per_video_scores",
    "preflight",
    "prompt_from_video_name",
    "read_scores",
    "score_videos",
    "vbench_full_info_path",
    "video_name",
]
