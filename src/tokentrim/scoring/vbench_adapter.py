"""Score mp4 files with the real vbench 0.1.5 dimension code; write `scores.csv`; cache by content hash.

How a dimension is scored (the numbers equal a direct `VBench(...).evaluate` call on the same files):
1. `weights.check_dimensions` confirms every file and package first (nothing is downloaded, vbench is not imported).
2. `planning.plan_units` picks each video's dimensions by the prompt protocol (`scorer.prompt_protocol`, default
   `auto`: a VBench suite prompt gets only the requested dimensions it lists, as VBench's standard protocol; any other
   prompt gets every requested dimension, as `custom_input`; `planning.dimensions_for_prompt`), hashes and probes each
   video once and derives its (video, clip, dimension) units (VBench-Long clip protocol, scene splitting, cache keys);
   units found in the score cache (`scores_store.ScoreCache`) are done. A pair the protocol leaves out has no row.
3. Inside `vbench_env.vbench_session`, vbench's own `init_submodules([dim], local=True)` builds the submodule spec,
   exactly as `evaluate(..., local=True)` does; we write a `<dim>_full_info.json` of `{prompt_en, dimension,
   video_list[, auxiliary_info]}` entries (the format `evaluate` writes) and call `vbench.<dim>.compute_<dim>(json,
   device, submodules, **kwargs)`, the function `evaluate` calls (`_run_vbench_dimension`, the only place vbench
   dimension code runs). Per-video rows (`video_results`) are kept verbatim in `raw_score`.
4. Optional slow-fast fusion of the clip rows (`slow_fast`).
Rows go to `scores.csv` through `scores_store.ScoresStore` (locked read-merge-write: concurrent processes lose
nothing). `num_workers > 1` runs step 3 dimension-major: `scheduling.build_tasks` splits the pending units into
(dimension, chunk) tasks, longest first, and `worker_pool` processes pull them (one model load per task); this process
writes the rows and the cache as tasks finish. Steps 2 and 4 run in this process.

`score` is on the scale of VBench's dimension aggregate: `raw_score / 100` for imaging_quality (MUSIQ), booleans
(human_action, dynamic_degree) as 0.0/1.0, otherwise `raw_score`. Aggregation: `aggregation.aggregate_scores`.

Failures: a corrupt or unreadable mp4, or a file vbench raises on, becomes an error row (score NaN) and the run goes
on; errors are not cached. Missing weights stop the call before any work. A dimension with an error on EVERY video of
the call stops it with `DimensionFailedError` (one line: dimension, count, first error) after all rows are written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.scoring import long_video
from tokentrim.scoring.aggregation import aggregate_scores
from tokentrim.scoring.planning import (
    AUXILIARY_DIMENSIONS,
    DEFAULT_CLIP_SECONDS,
    LONG_PROTOCOLS,
    Unit,
    VideoJob,
    as_jobs,
    check_prompt_protocol,
    content_hash,
    dimensions_by_prompt,
    ensure_clips,
    one_line,
    plan_units,
    unit_row,
)
from tokentrim.scoring.prompts import load_vbench_suite, suite_dimensions
from tokentrim.scoring.scheduling import build_tasks
from tokentrim.scoring.scores_store import SCORES_COLUMNS, ScoreCache, ScoresStore, read_scores
from tokentrim.scoring.slow_fast import fuse_slow_fast
from tokentrim.scoring.vbench_env import import_vbench, restore_root_logging, vbench_session, vbench_version
from tokentrim.scoring.weights import (
    DownloadBlockedError,
    WeightRoots,
    WeightsMissingError,
    check_dimensions,
    raise_if_missing,
)
from tokentrim.scoring.worker_pool import run_tasks, worker_device

logger = logging.getLogger(__name__)

# Dimensions whose vbench code runs its network with autograd on (vbench 0.1.5 `scene.py` calls Tag2Text's
# `generate` outside `torch.no_grad`, so every activation of the 16-frame Swin-B forward is kept: > 15 GB on a CPU).
# We call them under `torch.no_grad()`; values are unchanged (no op on that path picks its kernel by grad mode;
# tests/test_vbench_dims_tag2text.py compares Tag2Text's outputs both ways).
NO_GRAD_DIMENSIONS: tuple[str, ...] = ("scene",)
# Threads cutting VBench-Long clips, one video each (a 30-s 480x832 video decodes to ~0.6 GB of frames).
CUT_THREADS = 8

__all__ = [
    "SCORES_COLUMNS",
    "DEFAULT_CLIP_SECONDS",
    "AUXILIARY_DIMENSIONS",
    "DimensionFailedError",
    "NO_GRAD_DIMENSIONS",
    "VideoJob",
    "ScoreRunSummary",
    "check_score_options",
    "score_videos",
    "read_scores",
    "aggregate_scores",
    "content_hash",
]

class DimensionFailedError(RuntimeError):
    """A dimension got an error row for every video of a scoring call; the message is one line."""


@dataclass
class ScoreRunSummary:
    """What one `score_videos` call did. `errors` lists (video, clip, dimension, message) of every error row;
    `scored[dim]` counts the dimension's rows with a score (computed or cached) at the end of the call;
    `left_out[dim]` counts the videos the prompt protocol leaves out of the dimension (no row, not an error);
    `vbench_calls` counts the `_run_vbench_dimension` calls that succeeded or failed as a whole (one model load each;
    per-video retries after a failed chunk not counted)."""

    scores_csv: Path
    dimensions: tuple[str, ...]
    prompt_protocol: str = "auto"
    num_rows: int = 0
    num_computed: int = 0
    num_cached: int = 0
    errors: list[tuple[str, int, str, str]] = field(default_factory=list)
    scored: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
    vbench_calls: int = 0

    def describe(self) -> str:
        head = (f"{self.num_rows} rows for {len(self.dimensions)} dimension(s) in {self.scores_csv}: "
                f"{self.num_computed} computed, {self.num_cached} from cache, {len(self.errors)} error(s)")
        if any(self.left_out.values()):
            head += (f"; prompt_protocol={self.prompt_protocol} left out (video, dimension) pairs whose prompt does not "
                     f"list the dimension: " + ", ".join(f"{dim} {n}" for dim, n in self.left_out.items() if n))
        lines = [head] + [f"  error: {video} clip {clip} {dim}: {msg}" for video, clip, dim, msg in self.errors]
        return "\n".join(lines)

    def merge(self, other: "ScoreRunSummary") -> None:
        self.num_rows += other.num_rows
        self.num_computed += other.num_computed
        self.num_cached += other.num_cached
        self.vbench_calls += other.vbench_calls
        self.errors += other.errors
        for dim, count in other.scored.items():
            self.scored[dim] = self.scored.get(dim, 0) + count
        for dim, count in other.left_out.items():
            self.left_out[dim] = self.left_out.get(dim, 0) + count

    def raise_if_a_dimension_failed(self) -> None:
        """DimensionFailedError for the first dimension with error rows and no scored row."""
        for dim in self.dimensions:
            errors = [error for error in self.errors if error[2] == dim]
            if errors and not self.scored.get(dim, 0):
                video, clip, _, message = errors[0]
                raise DimensionFailedError(
                    f"scorer: dimension {dim} failed on every video ({len(errors)} error row(s), none scored; rows "
                    f"written to {self.scores_csv}); first error: {video!r} clip {clip}: {message}")


# --------------------------------------------------------------------------------------------------------------------
# one vbench call
# --------------------------------------------------------------------------------------------------------------------
def _run_vbench_dimension(dimension: str, units: Sequence[Unit], *, roots: WeightRoots, device: str,
                          work_dir: Path, aux_by_prompt: Mapping[str, dict], kwargs: Mapping) -> dict[str, float]:
    """Call `vbench.<dimension>.compute_<dimension>` on the units' files; return {video_path: raw per-video result}.

    This is the only place vbench dimension code runs (tests count calls here).
    """
    entries = []
    for unit in units:
        entry = {"prompt_en": unit.job.resolved_prompt, "dimension": [dimension], "video_list": [unit.path]}
        aux = aux_by_prompt.get(unit.job.resolved_prompt, {})
        if dimension in aux:
            entry["auxiliary_info"] = {dimension: aux[dimension]}
        entries.append(entry)
    info_path = work_dir / f"{dimension}_full_info.json"
    write_text_atomic(info_path, json.dumps(entries, indent=1))
    with vbench_session(roots, dimension):
        utils = sys.modules["vbench.utils"]
        submodules = utils.init_submodules([dimension], local=True, read_frame=False)[dimension]
        module = import_vbench(f"vbench.{dimension}")
        compute = getattr(module, f"compute_{dimension}")
        import torch  # noqa: PLC0415  (vbench is imported by now, and torch with it)

        grad = contextlib.nullcontext() if dimension not in NO_GRAD_DIMENSIONS else torch.no_grad()
        # vbench's launcher (`vbench/launch/evaluate.py`) passes a torch.device: GRiT's `get_parser` reads `device.type`
        # and motion_smoothness compares `device == 'cuda'` (False for a torch.device: no VRAM-based resize)
        with restore_root_logging(), grad:
            _, video_results = compute(str(info_path), torch.device(device), submodules, **dict(kwargs))
    return {item["video_path"]: float(item["video_results"]) for item in video_results if "video_path" in item}


def _score_chunk(dimension: str, chunk: Sequence[Unit], **run_kwargs) -> list[tuple[Unit, float, str]]:
    """Score a chunk; if vbench raises, score its units one by one so only the bad file gets an error row.

    Missing weights / blocked downloads are not per-video problems: they stop the run.
    """
    try:
        results = _run_vbench_dimension(dimension, chunk, **run_kwargs)
    except (WeightsMissingError, DownloadBlockedError):
        raise
    except Exception as err:  # vbench raises anything (AssertionError, decord errors, RuntimeError) on a bad file
        if len(chunk) == 1:
            return [(chunk[0], math.nan, f"vbench failed: {one_line(err)}")]
        logger.warning("vbench %s failed on a chunk of %d (%s); retrying one video at a time", dimension, len(chunk),
                       one_line(err))
        return [item for unit in chunk for item in _score_chunk(dimension, [unit], **run_kwargs)]
    out = []
    for unit in chunk:
        if unit.path in results:
            out.append((unit, results[unit.path], ""))
        else:  # e.g. temporal_flickering skips a file cv2 cannot read instead of raising
            out.append((unit, math.nan, "vbench returned no result for this file (unreadable video?)"))
    return out


def _score_task(task, *, roots: WeightRoots, aux_by_prompt: Mapping[str, dict],
                kwargs: Mapping) -> tuple[str, list[tuple[float, str]]]:
    """A `worker_pool` worker's job: `_score_chunk` of one `scheduling.Task` on the worker's device.

    Returns (device, [(raw, error) per task unit, in order]); the parent writes the rows."""
    device = worker_device()
    with tempfile.TemporaryDirectory(prefix="tokentrim_vbench_") as work:
        results = _score_chunk(task.dimension, list(task.units), roots=roots, device=device, work_dir=Path(work),
                               aux_by_prompt=aux_by_prompt, kwargs=kwargs)
    return device, [(raw, error) for _, raw, error in results]


# --------------------------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------------------------
def score_videos(
    videos: Sequence[VideoJob | str | os.PathLike] | str | os.PathLike,
    *,
    scores_csv: str | os.PathLike,
    dimensions: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    torch_home: str | os.PathLike | None = None,
    hf_home: str | os.PathLike | None = None,
    device: str = "cpu",
    score_cache_dir: str | os.PathLike | None = None,
    clip_dir: str | os.PathLike | None = None,
    long_protocol: str = "auto",
    long_min_seconds: float = 5.0,
    clip_seconds: Mapping[str, float] | None = None,
    clip_crf: int = 0,
    scene_split: bool = False,
    scene_threshold: float = long_video.SCENE_THRESHOLD,
    scene_min_frames: int = long_video.SCENE_MIN_FRAMES,
    slow_fast: bool = False,
    slow_fast_dimensions: Sequence[str] = long_video.SLOW_FAST_DIMENSIONS,
    slow_fast_mapping_dir: str | os.PathLike | None = None,
    dinov2_path: str | os.PathLike | None = None,
    slow_fast_w_inclip: float = 0.5,
    slow_fast_w_clip2clip: float = 0.5,
    chunk_size: int = 16,
    num_shards: int = 1,
    shard_index: int = 0,
    num_workers: int = 1,
    devices: Sequence[str] | None = None,
    full_info_path: str | os.PathLike | None = None,
    imaging_quality_preprocessing_mode: str = "longer",
    prompt_protocol: str = "auto",
) -> ScoreRunSummary:
    """Score `videos` for `dimensions` with vbench; write one row per (video, clip, dimension) to `scores_csv`.

    Args:
        videos: mp4 paths, `VideoJob`s (row name / prompt from the manifest), or a folder of `*.mp4`.
        scores_csv: output csv (columns `SCORES_COLUMNS`), merged atomically under a lock after every chunk
            (`scores_store`): rows of other (video, dimension) pairs and of other processes are kept.
        dimensions: VBench dimension names; None = every dimension `check_dimensions` finds ready. A requested
            dimension that is not ready stops the call with WeightsMissingError naming the file and config key.
        cache_dir / torch_home / hf_home: weight roots (`scorer.cache_dir` etc.; env var, then tool default).
        device: torch device string for vbench ("cpu", "cuda", "cuda:1").
        score_cache_dir: per-unit result cache (default `<scores_csv dir>/score_cache`); share it across runs.
        clip_dir: where VBench-Long clips are written (default `<score_cache_dir>/clips`).
        long_protocol: "auto" (clip videos of >= `long_min_seconds`), "always" or "never".
        long_min_seconds: duration from which "auto" applies the clip protocol (VBench FAQ: 5.0 s).
        clip_seconds: clip length per dimension (default `DEFAULT_CLIP_SECONDS`).
        clip_crf: libx264 CRF of re-encoded clips (0 = lossless luma; upstream re-encodes with ffmpeg defaults).
        scene_split: VBench-Long scene splitting (PySceneDetect ContentDetector) before clipping; clip protocol only.
        scene_threshold: ContentDetector threshold (upstream 35.0).
        scene_min_frames: minimum scene length in frames (PySceneDetect default 15, as upstream).
        slow_fast: VBench-Long slow-fast fusion (upstream `--dev_flag`) for `slow_fast_dimensions` on clipped videos.
        slow_fast_dimensions: dimensions to fuse; only subject_consistency is supported (background needs DreamSim).
        slow_fast_mapping_dir: folder with `subject_mapping_table.yaml` (a VBench checkout's
            `vbench2_beta_long/configs`); default `<cache_dir>/vbench2_beta_long/configs`.
        dinov2_path: official `dinov2_vitb14_pretrain.pth`; default `<cache_dir>/dinov2_model/dinov2_vitb14_pretrain.pth`.
        slow_fast_w_inclip / slow_fast_w_clip2clip: fusion weights (upstream `slow_fast_params.yaml`: 0.5 / 0.5).
        chunk_size: videos per vbench call (each call reloads the dimension's model; smaller = finer resume).
        num_shards / shard_index: score only `sorted(videos)[shard_index::num_shards]` (one process per shard).
        num_workers: > 1 spawns that many local processes (worker k on `devices[k % len(devices)]`, the cores
            shared evenly among them) pulling (dimension, chunk) tasks longest first (`scheduling`); this process
            plans, writes every row and the cache, and runs slow-fast fusion on `device`.
        full_info_path: prompt suite JSON for `auxiliary_info` and the prompt protocol (default: the installed
            vbench's `VBench_full_info.json`).
        imaging_quality_preprocessing_mode: vbench kwarg ("longer" default, "shorter", "shorter_centercrop", "None").
        prompt_protocol: which requested dimensions each video gets (`planning.dimensions_for_prompt`): "auto" (a
            suite prompt: the dimensions it lists, VBench's standard protocol; another prompt: all, as custom_input),
            "standard" (as auto; a prompt outside the suite stops the call before any decode) or "all".

    Raises:
        WeightsMissingError: a requested dimension is not ready (before any decode).
        PromptOutsideSuiteError: prompt_protocol "standard" and a video's prompt is not in the suite (before any decode).
        ValueError: a dimension requested by name that the prompt protocol gives to no video of the call (before any
            decode; with `dimensions=None` such a dimension gets no row and is logged).
        DimensionFailedError: a dimension got an error on every video of the call; raised after its rows (error rows
            included) are written, naming the dimension and the first error.
    """
    # 1. Check inputs. Raise before any decode or model load.
    check_score_options(long_protocol=long_protocol, scene_split=scene_split, scene_threshold=scene_threshold,
                        scene_min_frames=scene_min_frames, slow_fast=slow_fast,
                        slow_fast_dimensions=slow_fast_dimensions, slow_fast_w_inclip=slow_fast_w_inclip,
                        slow_fast_w_clip2clip=slow_fast_w_clip2clip, chunk_size=chunk_size, num_shards=num_shards,
                        shard_index=shard_index, num_workers=num_workers, prompt_protocol=prompt_protocol)
    clip_map = dict(DEFAULT_CLIP_SECONDS) | dict(clip_seconds or {})
    scores_path = Path(scores_csv)
    roots = WeightRoots.resolve(cache_dir=cache_dir, torch_home=torch_home, hf_home=hf_home)
    status = check_dimensions(dimensions, cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home,
                              slow_fast=slow_fast, slow_fast_dimensions=slow_fast_dimensions,
                              slow_fast_mapping_dir=slow_fast_mapping_dir, dinov2_path=dinov2_path,
                              scene_split=scene_split)
    if dimensions is None:
        dims = tuple(name for name, item in status.items() if item.is_ready)
        skipped = [name for name, item in status.items() if not item.is_ready]
        if skipped:
            logger.info("scoring the %d ready dimension(s); not ready: %s", len(dims), ", ".join(skipped))
    else:
        raise_if_missing(status)
        dims = tuple(dict.fromkeys(dimensions))
    all_jobs = as_jobs(videos)
    _check_dimensions_have_videos(all_jobs, dims, prompt_protocol=prompt_protocol, explicit=dimensions is not None,
                                  full_info_path=full_info_path)
    jobs = all_jobs[shard_index::num_shards]
    options = dict(
        scores_path=scores_path, roots=roots, dims=dims, score_cache_dir=score_cache_dir, clip_dir=clip_dir,
        long_protocol=long_protocol, long_min_seconds=long_min_seconds, clip_seconds=clip_map, clip_crf=clip_crf,
        chunk_size=chunk_size, full_info_path=full_info_path, prompt_protocol=prompt_protocol,
        imaging_quality_preprocessing_mode=imaging_quality_preprocessing_mode, scene_split=scene_split,
        scene_threshold=scene_threshold, scene_min_frames=scene_min_frames, slow_fast=slow_fast,
        slow_fast_dimensions=tuple(slow_fast_dimensions), slow_fast_mapping_dir=slow_fast_mapping_dir,
        dinov2_path=dinov2_path, slow_fast_w_inclip=slow_fast_w_inclip, slow_fast_w_clip2clip=slow_fast_w_clip2clip,
    )
    summary = _score_jobs(jobs, device=device, num_workers=num_workers, devices=list(devices or [device]), **options)
    logger.info("%s", summary.describe())
    summary.raise_if_a_dimension_failed()
    return summary


def _check_dimensions_have_videos(jobs: Sequence[VideoJob], dims: tuple[str, ...], *, prompt_protocol: str,
                                  explicit: bool, full_info_path) -> None:
    """The prompt protocol over every video of the call (all shards alike), before any decode: "standard" refuses a
    prompt outside the suite; a dimension no video is assigned is refused when requested by name (one line) and logged
    when it came from `dimensions=None` (every ready dimension; it stays in the call, so the planner still drops its
    rows left by an earlier call under another protocol)."""
    if prompt_protocol == "all" or not jobs:
        return
    by_prompt = dimensions_by_prompt([job.resolved_prompt for job in jobs], dims,
                                     suite_dimensions(full_info_path=full_info_path), prompt_protocol)
    assigned = {dim for listed in by_prompt.values() for dim in listed}
    idle = [dim for dim in dims if dim not in assigned]
    if idle and explicit:
        raise ValueError(f"scorer.dimensions asks for {idle}, but under scorer.prompt_protocol={prompt_protocol} no "
                         f"video of the call gets them (its {len(jobs)} video(s) have VBench suite prompts that do not "
                         f"list them); set scorer.prompt_protocol=all to score every video on them")
    if idle:
        logger.info("prompt_protocol=%s: no video's prompt lists %s; not scored", prompt_protocol, ", ".join(idle))


def check_score_options(*, long_protocol: str = "auto", scene_split: bool = False,
                        scene_threshold: float = long_video.SCENE_THRESHOLD,
                        scene_min_frames: int = long_video.SCENE_MIN_FRAMES, slow_fast: bool = False,
                        slow_fast_dimensions: Sequence[str] = long_video.SLOW_FAST_DIMENSIONS,
                        slow_fast_w_inclip: float = 0.5, slow_fast_w_clip2clip: float = 0.5, chunk_size: int = 16,
                        num_shards: int = 1, shard_index: int = 0, num_workers: int = 1,
                        prompt_protocol: str = "auto") -> None:
    """One-line ValueErrors for the scoring options (`score_videos` keywords), before any decode or model load."""
    check_prompt_protocol(prompt_protocol)
    if long_protocol not in LONG_PROTOCOLS:
        raise ValueError(f"scorer.long_protocol must be one of {list(LONG_PROTOCOLS)}, got {long_protocol!r}")
    if (scene_split or slow_fast) and long_protocol == "never":
        raise ValueError("scorer.scene_split / scorer.slow_fast act on the VBench-Long clip protocol, which "
                         "long_protocol='never' turns off; set long_protocol to 'auto' or 'always'")
    if scene_split and not (scene_threshold > 0 and scene_min_frames >= 1):
        raise ValueError(f"need scorer.scene_threshold > 0 and scorer.scene_min_frames >= 1, got "
                         f"{scene_threshold} and {scene_min_frames}")
    if slow_fast:
        if isinstance(slow_fast_dimensions, str):
            raise TypeError(f"scorer.slow_fast_dimensions must be a list of names, got the string {slow_fast_dimensions!r}")
        unsupported = [dim for dim in slow_fast_dimensions if dim not in long_video.SLOW_FAST_DIMENSIONS]
        if unsupported:
            raise ValueError(f"scorer.slow_fast_dimensions supports only {list(long_video.SLOW_FAST_DIMENSIONS)} "
                             f"(background_consistency's fast branch needs DreamSim, not supported), got {unsupported}")
        if not (math.isfinite(slow_fast_w_inclip) and math.isfinite(slow_fast_w_clip2clip)):
            raise ValueError(f"slow-fast weights must be finite, got w_inclip={slow_fast_w_inclip}, "
                             f"w_clip2clip={slow_fast_w_clip2clip}")
    if chunk_size < 1:
        raise ValueError(f"scorer.chunk_size must be >= 1, got {chunk_size}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ValueError(f"need scorer.num_shards >= 1 and 0 <= scorer.shard_index < num_shards, got "
                         f"{shard_index}/{num_shards}")
    if num_workers < 1:
        raise ValueError(f"scorer.num_workers must be >= 1, got {num_workers}")


def _score_jobs(jobs: list[VideoJob], *, scores_path: Path, roots: WeightRoots, device: str, dims: tuple[str, ...],
                score_cache_dir, clip_dir, long_protocol: str, long_min_seconds: float, clip_seconds: Mapping[str, float],
                clip_crf: int, chunk_size: int, full_info_path, prompt_protocol: str,
                imaging_quality_preprocessing_mode: str, scene_split: bool, scene_threshold: float, scene_min_frames: int, slow_fast: bool,
                slow_fast_dimensions: Sequence[str], slow_fast_mapping_dir, dinov2_path, slow_fast_w_inclip: float,
                slow_fast_w_clip2clip: float, num_workers: int = 1, devices: Sequence[str] = ()) -> ScoreRunSummary:
    """Steps 2-4 of the module docstring for `jobs`; step 3 in `num_workers` processes on `devices` when > 1."""
    cache_root = Path(score_cache_dir) if score_cache_dir is not None else scores_path.parent / "score_cache"
    clip_root = Path(clip_dir) if clip_dir is not None else cache_root / "clips"
    cache = ScoreCache(cache_root)
    version = vbench_version()
    kwargs = {"imaging_quality_preprocessing_mode": imaging_quality_preprocessing_mode}
    summary = ScoreRunSummary(scores_csv=scores_path, dimensions=dims, prompt_protocol=prompt_protocol)
    scores = ScoresStore(scores_path)
    needs_aux = any(dim in AUXILIARY_DIMENSIONS for dim in dims)
    aux_by_prompt = ({entry.prompt: entry.auxiliary_info for entry in load_vbench_suite(full_info_path=full_info_path)}
                     if needs_aux else {})
    suite = suite_dimensions(full_info_path=full_info_path) if prompt_protocol != "all" else {}

    def record(row: dict) -> None:
        scores.put(row)
        summary.num_rows += 1

    # 2. Plan: units per (video, dimension); cached units are done; cut the clips the others read.
    plan = plan_units(jobs, dims, cache_root=cache_root, clip_root=clip_root, device=device, version=version,
                      kwargs=kwargs, aux_by_prompt=aux_by_prompt, suite=suite, prompt_protocol=prompt_protocol,
                      long_protocol=long_protocol,
                      long_min_seconds=long_min_seconds, clip_seconds=clip_seconds, scene_split=scene_split,
                      scene_threshold=scene_threshold, scene_min_frames=scene_min_frames)
    for (video, dim), clips in plan.clips.items():
        scores.claim(video, dim, clips)
    for video, dim in plan.left_out:  # no row: an earlier call's row of the pair (another protocol) is stale
        scores.claim(video, dim, [])
        summary.left_out[dim] = summary.left_out.get(dim, 0) + 1
    for row in plan.error_rows:
        record(row)
    pending: dict[str, list[Unit]] = defaultdict(list)
    to_cut: dict[str, list[Unit]] = defaultdict(list)  # content hash -> clip units not in the cache
    for unit in plan.units:
        cached = cache.get(unit.key)
        if cached is not None:
            record(unit_row(unit, cached["raw_score"], device=device, version=version))
            summary.num_cached += 1
        else:
            pending[unit.dimension].append(unit)
            if unit.clip >= 0:
                to_cut[unit.content_hash].append(unit)  # one thread per content: clip paths are per content hash

    def cut(units: list[Unit]) -> Exception | None:
        try:
            ensure_clips(units, units[0].job, crf=clip_crf)
        except (OSError, ValueError) as err:
            return err
        return None

    # decode / encode release the GIL; each thread holds one whole decoded video, hence the cap
    with ThreadPoolExecutor(max_workers=max(1, min(len(to_cut), os.cpu_count() or 1, CUT_THREADS))) as threads:
        cut_errors = list(threads.map(cut, to_cut.values()))
    for units, err in zip(to_cut.values(), cut_errors):
        if err is not None:
            for unit in units:
                pending[unit.dimension].remove(unit)
                record(unit_row(unit, math.nan, device=device, version=version)
                       | {"error": f"clip cut failed: {one_line(err)}"})
    scores.flush()

    # 3. Score pending units (each vbench call loads the dimension's model once), in chunks.
    def record_results(dim: str, units: Sequence[Unit], results: Sequence[tuple[float, str]], used: str) -> None:
        for unit, (raw, error) in zip(units, results, strict=True):
            row = unit_row(unit, raw, device=used, version=version)
            if error:
                row["error"] = error
            else:
                cache.put(unit.key, {"raw_score": raw, "dimension": dim, "video": unit.job.name,
                                     "clip": unit.clip, "content_hash": unit.content_hash})
                summary.num_computed += 1
            record(row)
        summary.vbench_calls += 1
        scores.flush()

    if num_workers > 1:  # dimension-major tasks, longest first, pulled by the workers
        tasks = build_tasks({dim: pending[dim] for dim in dims if pending.get(dim)}, num_workers=num_workers,
                            chunk_size=chunk_size)
        for task, (used, results) in run_tasks(_score_task, tasks, num_workers=num_workers, devices=devices,
                                               roots=roots, aux_by_prompt=aux_by_prompt, kwargs=kwargs):
            record_results(task.dimension, task.units, results, used)
    else:  # in this process, one dimension at a time
        with tempfile.TemporaryDirectory(prefix="tokentrim_vbench_") as work:
            for dim in dims:
                units = pending.get(dim, [])
                for start in range(0, len(units), chunk_size):
                    chunk = units[start:start + chunk_size]
                    results = _score_chunk(dim, chunk, roots=roots, device=device, work_dir=Path(work),
                                           aux_by_prompt=aux_by_prompt, kwargs=kwargs)
                    record_results(dim, chunk, [(raw, error) for _, raw, error in results], device)

    # 4. Slow-fast fusion of the clip rows (VBench-Long --dev_flag), after every in-clip score exists.
    fused_dims = [dim for dim in dims if slow_fast and dim in slow_fast_dimensions]
    if fused_dims:
        fuse_slow_fast(scores, jobs, fused_dims, roots=roots, device=device, cache=cache, clip_root=clip_root,
                       clip_crf=clip_crf, mapping_dir=slow_fast_mapping_dir, dinov2_path=dinov2_path,
                       w_inclip=slow_fast_w_inclip, w_clip2clip=slow_fast_w_clip2clip)
    scores.flush()
    for row in scores.rows.values():
        if row["error"]:
            summary.errors.append((row["video"], int(row["clip"]), row["dimension"], row["error"]))
        else:
            summary.scored[row["dimension"]] = summary.scored.get(row["dimension"], 0) + 1
    return summary
