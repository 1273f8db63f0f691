"""Score mp4 files with the real vbench 0.1.5 dimension code; write `scores.csv`; cache by content hash.

How a dimension is scored (the numbers equal a direct `VBench(...).evaluate` call on the same files):
1. `weights.check_dimensions` confirms every file and package first (nothing is downloaded, vbench is not imported).
2. Inside `_vbench_session` (env vars `VBENCH_CACHE_DIR`, `TORCH_HOME`, `HF_HOME`, `HF_HUB_OFFLINE=1`,
   `TRANSFORMERS_OFFLINE=1` set and the module-level `CACHE_DIR` copies in vbench patched, all restored on exit; root
   logging restored after vbench's import-time `basicConfig`; `weights.block_downloads` held), vbench's own
   `init_submodules([dim], local=True)` builds the submodule spec, exactly as `evaluate(..., local=True)` does.
3. We write a `<name>_full_info.json` of `{prompt_en, dimension, video_list[, auxiliary_info]}` entries (the format
   `evaluate` writes) and call `vbench.<dim>.compute_<dim>(json, device, submodules, **kwargs)`, the function `evaluate`
   calls. Per-video rows (`video_results`) are kept verbatim in `raw_score`.
   motion_smoothness alone runs with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`: vbench 0.1.5 `torch.load`s the AMT pickle
   without `weights_only=False` (fixed upstream in 24f9d2a), which torch >= 2.6 refuses. The flag lets that pickle run
   code, so it is confined to that dimension's call.

Clip protocol (VBench-Long, `vbench2_beta_long`): a video of at least `long_min_seconds` (FAQ: 5.0 s) is cut into
fixed-length clips (`video_io.clip_spans`: 2 s; 10 s for human_action, temporal_style, overall_consistency), one
row per clip (`clip` = 0, 1, ...); shorter videos get one row with `clip = -1` (whole file). Clips are named
`<video>_<NNN>.mp4` as upstream, so human_action still parses its label from the name. `aggregate_scores` averages
clips per video, then videos per dimension (VBench-Long `reorganize_clips_results`); no clip = -1 summary rows are
written for clipped videos, the report aggregates.

Scene splitting (`scene_split`, VBench-Long `--use_semantic_splitting`; `long_video.detect_scenes`, PySceneDetect
ContentDetector, threshold 35): applies with the clip protocol only. Each scene is clipped on its own; clips are named
`<video>-Scene-<s>_<NNN>.mp4` as upstream, `clip` keeps numbering 0, 1, ... over the whole video (so (video, clip,
dimension) stays unique) and the `scene` column holds the scene index (empty when splitting is off). The video stays
the unit of aggregation: the per-video score is the mean over all its clips, all scenes pooled (upstream treats each
scene file as a long video of its own in the final mean). Scene lists are cached per (content hash, threshold, min
length) under `score_cache_dir/scenes`.

Slow-fast fusion (`slow_fast`, VBench-Long `--dev_flag`; `long_video`): for subject_consistency on clipped videos, the
fast branch (first frame of every clip of a scene, joined into `<clip dir>/.../<video>[-Scene-<s>]_firstframes.mp4`,
DINOv2 ViT-B/14) gives `clip2clip_score`, mapped through `subject_mapping_table.yaml` to `mapped_clip2clip_score`.
Each clip row keeps vbench's in-clip value in `raw_score` / `inclip_score` and gets
`score = w_inclip * inclip_k + w_clip2clip * mapped` (protocol `...+slowfast`); fusion is linear, so the mean over a
scene's clip rows is exactly upstream's fused score `w_inclip * mean_k(inclip_k) + w_clip2clip * mapped`. A scene of one
clip has no fast branch and keeps `score = inclip` (as upstream). Fast scores are cached by (content hash, clip
starts, checkpoint path/size/mtime). background_consistency fusion needs DreamSim, which is not supported.

`score` is on the scale of VBench's dimension aggregate: `raw_score / 100` for imaging_quality (MUSIQ), booleans
(human_action, dynamic_degree) as 0.0/1.0, otherwise `raw_score`. Aggregation here is the mean over videos of the
per-video score. vbench's own aggregate pools frames for subject/background consistency and GRiT/scene (longer videos
weigh more); for equal-length videos, as the harness generates, the two agree.

Cache: one JSON file per (content sha256, dimension, clip protocol, clip index, prompt, label name for human_action,
kwargs, vbench version) under `score_cache_dir`, written atomically; a rerun or a new report recomputes nothing.
Errors are not cached. A corrupt or unreadable mp4 becomes an error row (score NaN) and the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib
import importlib.metadata
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tokentrim import video_io
from tokentrim.scoring import long_video
from tokentrim.scoring.prompts import load_vbench_suite, prompt_from_video_name
from tokentrim.scoring.totals import ALL_DIMENSIONS
from tokentrim.scoring.weights import (
    DownloadBlockedError,
    WeightRoots,
    WeightsMissingError,
    block_downloads,
    check_dimensions,
    raise_if_missing,
    slow_fast_paths,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SCORES_COLUMNS",
    "DEFAULT_CLIP_SECONDS",
    "AUXILIARY_DIMENSIONS",
    "VideoJob",
    "ScoreRunSummary",
    "score_videos",
    "read_scores",
    "aggregate_scores",
    "content_hash",
]

SCORES_COLUMNS: tuple[str, ...] = (
    "video", "clip", "dimension", "score", "error", "scorer", "content_hash",
    "raw_score", "protocol", "frame_start", "frame_end", "device", "vbench_version", "path",
    # VBench-Long options (empty when off): scene index; slow-fast branches of a fused row.
    "scene", "inclip_score", "clip2clip_score", "mapped_clip2clip_score",
)
# VBench-Long configs/clip_length_mix.yaml: 2 s clips except these three dimensions at 10 s.
DEFAULT_CLIP_SECONDS: dict[str, float] = {name: 2.0 for name in ALL_DIMENSIONS} | {
    "human_action": 10.0, "temporal_style": 10.0, "overall_consistency": 10.0,
}
# Dimensions whose vbench code reads `auxiliary_info` (custom_input mode refuses them; we pass the suite's info).
AUXILIARY_DIMENSIONS: tuple[str, ...] = (
    "object_class", "multiple_objects", "color", "spatial_relationship", "scene", "appearance_style",
)
_CACHE_FORMAT = 1
_SCORER = "vbench"


@dataclass(frozen=True)
class VideoJob:
    """One file to score. `video` is the row id (default: file stem); `prompt` defaults to the VBench name's prompt."""

    path: Path
    video: str | None = None
    prompt: str | None = None

    @property
    def name(self) -> str:
        return self.video if self.video is not None else Path(self.path).stem

    @property
    def resolved_prompt(self) -> str:
        return self.prompt if self.prompt is not None else prompt_from_video_name(Path(self.path).name)


@dataclass
class ScoreRunSummary:
    """What one `score_videos` call did. `errors` lists (video, clip, dimension, message) of every error row."""

    scores_csv: Path
    dimensions: tuple[str, ...]
    num_rows: int = 0
    num_computed: int = 0
    num_cached: int = 0
    errors: list[tuple[str, int, str, str]] = field(default_factory=list)

    def describe(self) -> str:
        head = (f"{self.num_rows} rows for {len(self.dimensions)} dimension(s) in {self.scores_csv}: "
                f"{self.num_computed} computed, {self.num_cached} from cache, {len(self.errors)} error(s)")
        lines = [head] + [f"  error: {video} clip {clip} {dim}: {msg}" for video, clip, dim, msg in self.errors]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Unit:
    """One (video, clip, dimension) to score: the file vbench reads and the cache key."""

    job: VideoJob
    dimension: str
    clip: int
    path: str
    content_hash: str
    protocol: str
    frame_start: int
    frame_end: int
    key: str
    scene: int = -1  # scene index under scene splitting, -1 = not split


# --------------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------------
def content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _vbench_version() -> str:
    try:
        return importlib.metadata.version("vbench")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _score_from_raw(dimension: str, raw: float) -> float:
    """Per-video score on the scale of VBench's aggregate (imaging_quality: MUSIQ / 100, as `technical_quality`)."""
    return raw / 100.0 if dimension == "imaging_quality" else raw


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ").replace("\r", " ")
    return text[:300]


# --------------------------------------------------------------------------------------------------------------------
# scores.csv
# --------------------------------------------------------------------------------------------------------------------
def read_scores(path: str | os.PathLike) -> list[dict]:
    """Rows of a scores.csv with `clip` as int and `score`/`raw_score` as float (NaN when empty)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            row["clip"] = int(row["clip"])
            for key in ("score", "raw_score"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            rows.append(row)
    return rows


def _write_scores(path: Path, rows: Sequence[Mapping]) -> None:
    """Rewrite scores.csv atomically, rows sorted by (video, dimension, clip)."""
    ordered = sorted(rows, key=lambda row: (row["video"], row["dimension"], int(row["clip"])))
    with tempfile.SpooledTemporaryFile(mode="w+", newline="", encoding="utf-8") as buffer:
        writer = csv.DictWriter(buffer, fieldnames=list(SCORES_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in ordered:
            writer.writerow({key: ("" if isinstance(row.get(key), float) and math.isnan(row[key]) else row.get(key, ""))
                             for key in SCORES_COLUMNS})
        buffer.seek(0)
        _atomic_write_text(path, buffer.read())


class _ScoresFile:
    """In-memory rows keyed by (video, clip, dimension), flushed atomically; keeps rows of earlier calls."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[str, int, str], dict] = {}
        if path.is_file():
            for row in read_scores(path):
                self.rows[(row["video"], row["clip"], row["dimension"])] = row

    def drop(self, video: str, dimension: str) -> None:
        for key in [key for key in self.rows if key[0] == video and key[2] == dimension]:
            del self.rows[key]

    def put(self, row: dict) -> None:
        self.rows[(row["video"], int(row["clip"]), row["dimension"])] = row

    def flush(self) -> None:
        _write_scores(self.path, list(self.rows.values()))


# --------------------------------------------------------------------------------------------------------------------
# score cache
# --------------------------------------------------------------------------------------------------------------------
def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def _cache_get(cache_dir: Path, key: str) -> dict | None:
    path = _cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        logger.warning("ignoring unreadable score cache entry %s", path)
        return None


def _cache_put(cache_dir: Path, key: str, value: Mapping) -> None:
    _atomic_write_text(_cache_path(cache_dir, key), json.dumps(value, sort_keys=True))


def _unit_key(*, content_sha: str, dimension: str, protocol: str, clip: int, prompt: str, label_name: str,
              kwargs: Mapping, version: str) -> str:
    material = {
        "format": _CACHE_FORMAT, "content_hash": content_sha, "dimension": dimension, "protocol": protocol,
        "clip": clip, "prompt": prompt, "kwargs": dict(sorted(kwargs.items())), "vbench": version,
        # human_action parses its Kinetics label from the file name (`...person is <label>-N.mp4`), so the name counts.
        "label_name": label_name if dimension == "human_action" else "",
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# the vbench session: env, patches, logging, download guard
# --------------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _restore_root_logging() -> Iterator[None]:
    """vbench modules call `logging.basicConfig(level=INFO)` at import; undo that on the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _import_vbench(module: str):
    with _restore_root_logging():
        return importlib.import_module(module)


@contextlib.contextmanager
def _vbench_session(roots: WeightRoots, dimension: str) -> Iterator[None]:
    """Env vars and vbench's import-time `CACHE_DIR` copies pointed at `roots` for one dimension; all restored after."""
    env = {
        "VBENCH_CACHE_DIR": str(roots.cache_dir),
        "TORCH_HOME": str(roots.torch_home),
        "HF_HOME": str(roots.hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if dimension == "motion_smoothness":
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    saved_env = {name: os.environ.get(name) for name in env}
    patched: list[tuple[object, str, object]] = []

    def patch(module_name: str, attr: str, value: object) -> None:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)

    try:
        os.environ.update(env)
        utils = _import_vbench("vbench.utils")
        patch("vbench.utils", "CACHE_DIR", str(roots.cache_dir))
        # Modules that did `from vbench.utils import CACHE_DIR` hold their own copy (read at call time).
        for name in ("vbench.temporal_style", "vbench.overall_consistency", "vbench.third_party.ViCLIP.simple_tokenizer"):
            patch(name, "CACHE_DIR", str(roots.cache_dir))
        # transformers / huggingface_hub fix their cache dirs and offline flag at import time.
        hub_cache = str(roots.hf_home / "hub")
        patch("transformers.utils.hub", "TRANSFORMERS_CACHE", hub_cache)
        patch("transformers.utils.hub", "HUGGINGFACE_HUB_CACHE", hub_cache)
        patch("transformers.utils.hub", "_is_offline_mode", True)
        patch("huggingface_hub.constants", "HF_HUB_CACHE", hub_cache)
        patch("huggingface_hub.constants", "HF_HUB_OFFLINE", True)
        assert utils.CACHE_DIR == str(roots.cache_dir)
        with block_downloads(f"scoring {dimension}"):
            yield
    finally:
        for module, attr, value in reversed(patched):
            setattr(module, attr, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_vbench_dimension(dimension: str, units: Sequence[_Unit], *, roots: WeightRoots, device: str,
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
    _atomic_write_text(info_path, json.dumps(entries, indent=1))
    with _vbench_session(roots, dimension):
        utils = sys.modules["vbench.utils"]
        submodules = utils.init_submodules([dimension], local=True, read_frame=False)[dimension]
        module = _import_vbench(f"vbench.{dimension}")
        compute = getattr(module, f"compute_{dimension}")
        import torch  # noqa: PLC0415  (vbench is imported by now, and torch with it)

        # vbench's launcher (`vbench/launch/evaluate.py`) passes a torch.device; GRiT's `get_parser` reads
        # `device.type` and fails on a plain string.
        with _restore_root_logging():
            _, video_results = compute(str(info_path), torch.device(device), submodules, **dict(kwargs))
    return {item["video_path"]: float(item["video_results"]) for item in video_results if "video_path" in item}


# --------------------------------------------------------------------------------------------------------------------
# planning: hash, probe, clip protocol, cache keys
# --------------------------------------------------------------------------------------------------------------------
def _as_jobs(videos: Sequence[VideoJob | str | os.PathLike] | str | os.PathLike) -> list[VideoJob]:
    if isinstance(videos, (str, os.PathLike)):
        folder = Path(videos)
        if not folder.is_dir():
            raise FileNotFoundError(f"videos folder {folder} does not exist")
        videos = sorted(p for p in folder.glob("*.mp4") if not p.name.startswith("."))  # skip temp files
    jobs = [item if isinstance(item, VideoJob) else VideoJob(path=Path(item)) for item in videos]
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"videos must have unique names (the `video` column), got duplicates {duplicates[:5]}")
    return sorted(jobs, key=lambda job: job.name)


def _base_row(job: VideoJob, dimension: str, *, clip: int, sha: str, device: str, version: str) -> dict:
    return {
        "video": job.name, "clip": clip, "dimension": dimension, "score": math.nan, "error": "", "scorer": _SCORER,
        "content_hash": sha, "raw_score": math.nan, "protocol": "", "frame_start": "", "frame_end": "",
        "device": device, "vbench_version": version, "path": str(job.path),
    }


def _scene_clip_dir(clip_root: Path, sha: str, length: int, scene_tag: str) -> Path:
    """Folder of a video's clips: `<clip_root>/<sha16>/<L>f` (`<L>f-<scene tag>` under scene splitting)."""
    return clip_root / sha[:16] / (f"{length}f-{scene_tag}" if scene_tag else f"{length}f")


def _scenes_of(job: VideoJob, sha: str, cache_root: Path, *, threshold: float, min_frames: int) -> list[tuple[int, int]]:
    """Scene spans of a video (PySceneDetect), cached per (content hash, threshold, min length)."""
    key = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, "content_hash": sha, "threshold": threshold,
                                     "min_frames": min_frames, "scenes": True}, sort_keys=True).encode()).hexdigest()
    path = cache_root / "scenes" / f"{key}.json"
    if path.is_file():
        return [tuple(span) for span in json.loads(path.read_text(encoding="utf-8"))["scenes"]]
    scenes = long_video.detect_scenes(job.path, threshold=threshold, min_scene_len=min_frames)
    _atomic_write_text(path, json.dumps({"scenes": scenes, "video": job.name, "content_hash": sha}))
    logger.info("%s: %d scene(s) at threshold %g", job.name, max(len(scenes), 1), threshold)
    return scenes


def _ensure_clips(units: Sequence[_Unit], job: VideoJob, *, crf: int) -> None:
    """Write the clip files these units read (decoding the long video once), skipping clips already on disk."""
    todo = [unit for unit in units if not Path(unit.path).is_file()]
    if not todo:
        return
    frames, fps = video_io.read_video(job.path)  # [T, H, W, 3]
    for unit in todo:
        video_io.write_video(unit.path, frames[unit.frame_start:unit.frame_end], fps, crf=crf)  # [L, H, W, 3]


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
) -> ScoreRunSummary:
    """Score `videos` for `dimensions` with vbench; write one row per (video, clip, dimension) to `scores_csv`.

    Args:
        videos: mp4 paths, `VideoJob`s (row name / prompt from the manifest), or a folder of `*.mp4`.
        scores_csv: output csv (columns `SCORES_COLUMNS`), rewritten atomically after every chunk; rows already there
            for other (video, dimension) pairs are kept.
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
        num_workers: > 1 spawns that many local processes, shard k on `devices[k % len(devices)]`, and merges their
            shard csvs into `scores_csv`.
        full_info_path: prompt suite JSON for `auxiliary_info` (default: the installed vbench's).
        imaging_quality_preprocessing_mode: vbench kwarg ("longer" default, "shorter", "shorter_centercrop", "None").
    """
    # 1. Check inputs. Raise before any decode or model load.
    if long_protocol not in ("auto", "always", "never"):
        raise ValueError(f"long_protocol must be 'auto', 'always' or 'never', got {long_protocol!r}")
    _check_long_video_options(long_protocol=long_protocol, scene_split=scene_split, scene_threshold=scene_threshold,
                              scene_min_frames=scene_min_frames, slow_fast=slow_fast,
                              slow_fast_dimensions=slow_fast_dimensions, w_inclip=slow_fast_w_inclip,
                              w_clip2clip=slow_fast_w_clip2clip)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ValueError(f"need num_shards >= 1 and 0 <= shard_index < num_shards, got {shard_index}/{num_shards}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
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
    jobs = _as_jobs(videos)[shard_index::num_shards]
    worker_kwargs = dict(
        dimensions=list(dims), cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home,
        score_cache_dir=score_cache_dir, clip_dir=clip_dir, long_protocol=long_protocol,
        long_min_seconds=long_min_seconds, clip_seconds=clip_map, clip_crf=clip_crf, chunk_size=chunk_size,
        full_info_path=full_info_path, imaging_quality_preprocessing_mode=imaging_quality_preprocessing_mode,
        scene_split=scene_split, scene_threshold=scene_threshold, scene_min_frames=scene_min_frames,
        slow_fast=slow_fast, slow_fast_dimensions=tuple(slow_fast_dimensions),
        slow_fast_mapping_dir=slow_fast_mapping_dir, dinov2_path=dinov2_path, slow_fast_w_inclip=slow_fast_w_inclip,
        slow_fast_w_clip2clip=slow_fast_w_clip2clip,
    )
    if num_workers > 1:
        return _score_with_workers(jobs, scores_path, num_workers=num_workers, devices=list(devices or [device]),
                                   worker_kwargs=worker_kwargs)
    return _score_jobs(jobs, scores_path=scores_path, roots=roots, device=device, dims=dims, **{
        key: value for key, value in worker_kwargs.items()
        if key not in ("dimensions", "cache_dir", "torch_home", "hf_home")})


def _check_long_video_options(*, long_protocol: str, scene_split: bool, scene_threshold: float, scene_min_frames: int,
                              slow_fast: bool, slow_fast_dimensions: Sequence[str], w_inclip: float,
                              w_clip2clip: float) -> None:
    """One-line ValueErrors for the VBench-Long options, before any decode or model load."""
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
        if not (math.isfinite(w_inclip) and math.isfinite(w_clip2clip)):
            raise ValueError(f"slow-fast weights must be finite, got w_inclip={w_inclip}, w_clip2clip={w_clip2clip}")


def _score_with_workers(jobs: list[VideoJob], scores_path: Path, *, num_workers: int, devices: list[str],
                        worker_kwargs: dict) -> ScoreRunSummary:
    """Spawn `num_workers` processes, one shard each, then merge their csvs (shard files are removed)."""
    shard_paths = [scores_path.with_name(f"{scores_path.stem}.shard-{k}-of-{num_workers}.csv") for k in range(num_workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        futures = [
            pool.submit(score_videos, jobs[k::num_workers], scores_csv=shard_paths[k], device=devices[k % len(devices)],
                        **worker_kwargs)
            for k in range(num_workers)
        ]
        parts = [future.result() for future in futures]
    merged = _ScoresFile(scores_path)
    for shard in shard_paths:
        if shard.is_file():
            for row in read_scores(shard):
                merged.put(row)
    merged.flush()
    for shard in shard_paths:
        shard.unlink(missing_ok=True)
    summary = ScoreRunSummary(scores_csv=scores_path, dimensions=parts[0].dimensions if parts else ())
    for part in parts:
        summary.num_rows += part.num_rows
        summary.num_computed += part.num_computed
        summary.num_cached += part.num_cached
        summary.errors += part.errors
    return summary


def _score_jobs(jobs: list[VideoJob], *, scores_path: Path, roots: WeightRoots, device: str, dims: tuple[str, ...],
                score_cache_dir, clip_dir, long_protocol: str, long_min_seconds: float, clip_seconds: Mapping[str, float],
                clip_crf: int, chunk_size: int, full_info_path, imaging_quality_preprocessing_mode: str,
                scene_split: bool = False, scene_threshold: float = long_video.SCENE_THRESHOLD,
                scene_min_frames: int = long_video.SCENE_MIN_FRAMES, slow_fast: bool = False,
                slow_fast_dimensions: Sequence[str] = long_video.SLOW_FAST_DIMENSIONS, slow_fast_mapping_dir=None,
                dinov2_path=None, slow_fast_w_inclip: float = 0.5, slow_fast_w_clip2clip: float = 0.5) -> ScoreRunSummary:
    cache_root = Path(score_cache_dir) if score_cache_dir is not None else scores_path.parent / "score_cache"
    clip_root = Path(clip_dir) if clip_dir is not None else cache_root / "clips"
    version = _vbench_version()
    kwargs = {"imaging_quality_preprocessing_mode": imaging_quality_preprocessing_mode}
    summary = ScoreRunSummary(scores_csv=scores_path, dimensions=dims)
    scores = _ScoresFile(scores_path)
    needs_aux = any(dim in AUXILIARY_DIMENSIONS for dim in dims)
    aux_by_prompt = ({entry.prompt: entry.auxiliary_info for entry in load_vbench_suite(full_info_path=full_info_path)}
                     if needs_aux else {})

    def record(row: dict) -> None:
        scores.put(row)
        summary.num_rows += 1
        if row["error"]:
            summary.errors.append((row["video"], int(row["clip"]), row["dimension"], row["error"]))

    # 2. Plan: hash + probe each video once, derive its units per dimension, resolve cached ones.
    pending: dict[str, list[_Unit]] = defaultdict(list)
    for job in jobs:
        for dim in dims:
            scores.drop(job.name, dim)
        try:
            sha = content_hash(job.path)
            info = video_io.probe(job.path)
            use_clips = long_protocol == "always" or (long_protocol == "auto" and info.duration_s >= long_min_seconds)
            scenes = (_scenes_of(job, sha, cache_root, threshold=scene_threshold, min_frames=scene_min_frames)
                      if scene_split and use_clips else None)
        except (OSError, ValueError) as err:
            for dim in dims:
                row = _base_row(job, dim, clip=-1, sha="", device=device, version=version)
                record(row | {"error": f"unreadable video: {_one_line(err)}"})
            logger.warning("unreadable video %s: %s", job.path, _one_line(err))
            continue
        scene_tag = f"scene{scene_threshold:g}-{scene_min_frames}" if scenes is not None else ""
        units_by_length: dict[int, list[_Unit]] = defaultdict(list)
        for dim in dims:
            aux_missing = dim in AUXILIARY_DIMENSIONS and dim not in aux_by_prompt.get(job.resolved_prompt, {})
            if aux_missing:
                row = _base_row(job, dim, clip=-1, sha=sha, device=device, version=version)
                record(row | {"error": f"prompt {job.resolved_prompt[:80]!r} has no auxiliary_info for {dim} in the VBench suite"})
                continue
            if use_clips:
                length = video_io.clip_num_frames(info.fps, clip_seconds[dim])
                protocol = f"clip:{length}f" + (f"+{scene_tag}" if scene_tag else "")
                clip_dir_of = _scene_clip_dir(clip_root, sha, length, scene_tag)
                targets = [(t.clip, str(clip_dir_of / f"{Path(job.path).stem}{t.stem_suffix}.mp4"), t.start, t.end,
                            t.scene)
                           for t in long_video.scene_clip_targets(info.num_frames, info.fps, clip_seconds[dim], scenes)]
            else:
                length, protocol = 0, "whole"
                targets = [(-1, str(job.path), 0, info.num_frames, -1)]
            for clip, path, start, end, scene in targets:
                # scene-split clips: the frame span joins the key (it depends on the detector, not only on the index)
                key_protocol = f"{protocol}:{start}-{end}" if scene >= 0 else protocol
                key = _unit_key(content_sha=sha, dimension=dim, protocol=key_protocol, clip=clip,
                                prompt=job.resolved_prompt, label_name=Path(path).name, kwargs=kwargs, version=version)
                unit = _Unit(job=job, dimension=dim, clip=clip, path=path, content_hash=sha, protocol=protocol,
                             frame_start=start, frame_end=end, key=key, scene=scene)
                cached = _cache_get(cache_root, key)
                if cached is not None:
                    record(_unit_row(unit, cached["raw_score"], device=device, version=version))
                    summary.num_cached += 1
                else:
                    pending[dim].append(unit)
                    if use_clips:
                        units_by_length[length].append(unit)
        for units in units_by_length.values():
            try:
                _ensure_clips(units, job, crf=clip_crf)
            except (OSError, ValueError) as err:
                for unit in units:
                    pending[unit.dimension].remove(unit)
                    record(_unit_row(unit, math.nan, device=device, version=version)
                           | {"error": f"clip cut failed: {_one_line(err)}"})
    scores.flush()

    # 3. Score pending units, one dimension at a time (each vbench call loads the model once), in chunks.
    with tempfile.TemporaryDirectory(prefix="tokentrim_vbench_") as work:
        for dim in dims:
            units = pending.get(dim, [])
            for start in range(0, len(units), chunk_size):
                chunk = units[start:start + chunk_size]
                for unit, raw, error in _score_chunk(dim, chunk, roots=roots, device=device, work_dir=Path(work),
                                                     aux_by_prompt=aux_by_prompt, kwargs=kwargs):
                    row = _unit_row(unit, raw, device=device, version=version)
                    if error:
                        row["error"] = error
                    else:
                        _cache_put(cache_root, unit.key, {"raw_score": raw, "dimension": dim, "video": unit.job.name,
                                                          "clip": unit.clip, "content_hash": unit.content_hash})
                        summary.num_computed += 1
                    record(row)
                scores.flush()

    # 4. Slow-fast fusion of the clip rows (VBench-Long --dev_flag), after every in-clip score exists.
    fused_dims = [dim for dim in dims if slow_fast and dim in slow_fast_dimensions]
    if fused_dims:
        _fuse_slow_fast(scores, jobs, fused_dims, roots=roots, device=device, cache_root=cache_root,
                        clip_root=clip_root, clip_crf=clip_crf, mapping_dir=slow_fast_mapping_dir,
                        dinov2_path=dinov2_path, w_inclip=slow_fast_w_inclip, w_clip2clip=slow_fast_w_clip2clip,
                        summary=summary)
    scores.flush()
    logger.info("%s", summary.describe())
    return summary


def _fast_branch_key(*, sha: str, dimension: str, starts: Sequence[int], crf: int, checkpoint: Path) -> str:
    stat = checkpoint.stat()
    material = {"format": _CACHE_FORMAT, "fast_branch": "dinov2_vitb14", "content_hash": sha, "dimension": dimension,
                "starts": list(starts), "crf": crf, "checkpoint": [str(checkpoint), stat.st_size, stat.st_mtime_ns]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def _fuse_slow_fast(scores: "_ScoresFile", jobs: Sequence[VideoJob], dims: Sequence[str], *, roots: WeightRoots,
                    device: str, cache_root: Path, clip_root: Path, clip_crf: int, mapping_dir, dinov2_path,
                    w_inclip: float, w_clip2clip: float, summary: ScoreRunSummary) -> None:
    """Rewrite the clip rows of `dims` with the fused score (module docstring, "Slow-fast fusion").

    Groups = (video, scene) of clipped rows; the fast branch runs on groups of >= 2 clips whose in-clip rows all
    scored. A fast-branch failure on one video turns its rows into error rows (score NaN) and the run goes on.
    """
    mapping_root, checkpoint = slow_fast_paths(roots.cache_dir, slow_fast_mapping_dir=mapping_dir, dinov2_path=dinov2_path)
    model = None
    for dim in dims:
        table = long_video.load_mapping_table(mapping_root / long_video.MAPPING_TABLE_FILES[dim])
        for job in jobs:
            rows = sorted((row for (video, clip, d), row in scores.rows.items()
                           if video == job.name and d == dim and clip >= 0 and row.get("content_hash")),
                          key=lambda row: int(row["clip"]))
            if not rows or any(row["error"] or math.isnan(float(row["score"])) for row in rows):
                continue  # whole-video protocol, or an in-clip error already recorded
            groups: dict[int, list[dict]] = defaultdict(list)
            for row in rows:
                groups[int(row["scene"]) if str(row.get("scene", "")) not in ("", "-1") else -1].append(row)
            frames = fps = None
            try:
                for scene, group in sorted(groups.items()):
                    clip2clip = math.nan
                    if len(group) >= 2:
                        starts = [int(row["frame_start"]) for row in group]
                        key = _fast_branch_key(sha=group[0]["content_hash"], dimension=dim, starts=starts, crf=clip_crf,
                                               checkpoint=checkpoint)
                        cached = _cache_get(cache_root, key)
                        if cached is not None:
                            clip2clip = float(cached["clip2clip_score"])
                        else:
                            if frames is None:
                                frames, fps = video_io.read_video(job.path)  # [T, H, W, 3]
                            if model is None:
                                with block_downloads(f"loading DINOv2 for {dim} slow-fast"):
                                    model = long_video.load_dinov2_vitb14(checkpoint, device=device)
                            suffix = f"-Scene-{scene}" if scene >= 0 else ""
                            fast_path = (clip_root / group[0]["content_hash"][:16] / "firstframes"
                                         / f"{Path(job.path).stem}{suffix}_{len(starts)}x_firstframes.mp4")
                            # upstream writes the joined video at int(fps), the clip frame rate
                            first = long_video.first_frames_video(frames, starts, fast_path, float(int(fps)), crf=clip_crf)
                            with block_downloads(f"scoring {dim} fast branch"):
                                clip2clip = long_video.dinov2_clip2clip_score(model, first, device=device)
                            _cache_put(cache_root, key, {"clip2clip_score": clip2clip, "dimension": dim,
                                                         "video": job.name, "scene": scene})
                    mapped = long_video.map_clip2clip(clip2clip, table) if not math.isnan(clip2clip) else math.nan
                    for row in group:
                        inclip = float(row["raw_score"])
                        row.update({
                            "inclip_score": inclip, "clip2clip_score": clip2clip, "mapped_clip2clip_score": mapped,
                            "score": long_video.fuse_slow_fast(inclip, mapped, w_inclip=w_inclip, w_clip2clip=w_clip2clip),
                            "protocol": str(row["protocol"]).split("+slowfast")[0] + "+slowfast",
                        })
            except (OSError, ValueError, RuntimeError) as err:
                message = f"slow-fast failed: {_one_line(err)}"
                logger.warning("%s %s: %s", job.name, dim, message)
                for row in rows:
                    row.update({"score": math.nan, "error": message})
                    summary.errors.append((row["video"], int(row["clip"]), dim, message))


def _unit_row(unit: _Unit, raw: float, *, device: str, version: str) -> dict:
    row = _base_row(unit.job, unit.dimension, clip=unit.clip, sha=unit.content_hash, device=device, version=version)
    return row | {
        "raw_score": raw, "score": _score_from_raw(unit.dimension, raw) if not math.isnan(raw) else math.nan,
        "protocol": unit.protocol, "frame_start": unit.frame_start, "frame_end": unit.frame_end,
        "scene": unit.scene if unit.scene >= 0 else "",
    }


def _score_chunk(dimension: str, chunk: Sequence[_Unit], **run_kwargs) -> list[tuple[_Unit, float, str]]:
    """Score a chunk; if vbench raises, score its units one by one so only the bad file gets an error row.

    Missing weights / blocked downloads are not per-video problems: they stop the run.
    """
    try:
        results = _run_vbench_dimension(dimension, chunk, **run_kwargs)
    except (WeightsMissingError, DownloadBlockedError):
        raise
    except Exception as err:  # vbench raises anything (AssertionError, decord errors, RuntimeError) on a bad file
        if len(chunk) == 1:
            return [(chunk[0], math.nan, f"vbench failed: {_one_line(err)}")]
        logger.warning("vbench %s failed on a chunk of %d (%s); retrying one video at a time", dimension, len(chunk),
                       _one_line(err))
        return [item for unit in chunk for item in _score_chunk(dimension, [unit], **run_kwargs)]
    out = []
    for unit in chunk:
        if unit.path in results:
            out.append((unit, results[unit.path], ""))
        else:  # e.g. temporal_flickering skips a file cv2 cannot read instead of raising
            out.append((unit, math.nan, "vbench returned no result for this file (unreadable video?)"))
    return out


# --------------------------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------------------------
def aggregate_scores(rows: Sequence[Mapping] | str | os.PathLike, *, videos: Sequence[str] | None = None) -> dict[str, float]:
    """Per dimension: mean over clips per video, then mean over videos (VBench-Long `reorganize_clips_results`).

    Error rows (NaN score) are left out; a dimension with no scored video is absent. `videos` restricts the rows to
    those video names. The result feeds `totals.compute_totals`.
    """
    if isinstance(rows, (str, os.PathLike)):
        rows = read_scores(rows)
    wanted = set(videos) if videos is not None else None
    per_video: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        score = float(row["score"])
        if math.isnan(score) or (wanted is not None and row["video"] not in wanted):
            continue
        per_video[row["dimension"]][row["video"]].append(score)
    return {
        dim: sum(sum(clips) / len(clips) for clips in by_video.values()) / len(by_video)
        for dim, by_video in per_video.items()
    }
