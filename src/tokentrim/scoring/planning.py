"""Planning a scoring call: which files, which (video, clip, dimension) units, which cache keys.

Prompt protocol (`scorer.prompt_protocol`; the rule is `dimensions_for_prompt`, the only place it lives):
- `auto` (default): a video whose prompt is in the VBench suite (`VBench_full_info.json`) is scored only on the
  requested dimensions its prompt lists, VBench's standard protocol (`VBench.build_full_info_json(mode=
  'vbench_standard')`, then each `compute_<dim>` keeps the entries whose `dimension` lists it:
  `vbench.utils.load_dimension_info`); a video whose prompt is not in the suite is scored on every requested dimension,
  VBench's `custom_input` protocol (an auxiliary-info dimension on such a prompt is an error row, as vbench refuses it).
- `standard`: as `auto`, but a prompt outside the suite is refused (one line, before any decode).
- `all`: every requested dimension on every video.
A (video, dimension) pair the protocol leaves out gets no unit and no row (it is not an error); the scores store drops
a row of such a pair left in scores.csv by an earlier call under another protocol (an empty claim).

Clip protocol (VBench-Long, `vbench2_beta_long`): a video of at least `long_min_seconds` (FAQ: 5.0 s) is cut into
fixed-length clips (`video_io.clip_spans`: 2 s; 10 s for human_action, temporal_style, overall_consistency), one
unit per clip (`clip` = 0, 1, ...); shorter videos get one unit with `clip = -1` (whole file). Clips are named
`<video>_<NNN>.mp4` as upstream, so human_action still parses its label from the name.

Scene splitting (`scene_split`, VBench-Long `--use_semantic_splitting`; `long_video.detect_scenes`, PySceneDetect
ContentDetector, threshold 35): applies with the clip protocol only. Each scene is clipped on its own; clips are named
`<video>-Scene-<s>_<NNN>.mp4` as upstream, `clip` keeps numbering 0, 1, ... over the whole video (so (video, clip,
dimension) stays unique) and the `scene` column holds the scene index (empty when splitting is off). Scene lists are
cached per (content hash, threshold, min length) under `score_cache_dir/scenes`.

Cache key of a unit: sha256 of (content sha256, dimension, clip protocol, clip index, prompt, label name for
human_action, kwargs, vbench version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokentrim import video_io
from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.scoring import long_video
from tokentrim.scoring.prompts import prompt_from_video_name
from tokentrim.scoring.totals import ALL_DIMENSIONS

logger = logging.getLogger(__name__)

__all__ = [
    "AUXILIARY_DIMENSIONS",
    "DEFAULT_CLIP_SECONDS",
    "CACHE_FORMAT",
    "LONG_PROTOCOLS",
    "PROMPT_PROTOCOLS",
    "Plan",
    "PromptOutsideSuiteError",
    "Unit",
    "VideoJob",
    "as_jobs",
    "base_row",
    "check_prompt_protocol",
    "content_hash",
    "dimensions_by_prompt",
    "dimensions_for_prompt",
    "ensure_clips",
    "one_line",
    "plan_units",
    "unit_row",
]

# VBench-Long configs/clip_length_mix.yaml: 2 s clips except these three dimensions at 10 s.
DEFAULT_CLIP_SECONDS: dict[str, float] = {name: 2.0 for name in ALL_DIMENSIONS} | {
    "human_action": 10.0, "temporal_style": 10.0, "overall_consistency": 10.0,
}
# Dimensions whose vbench code reads `auxiliary_info` (custom_input mode refuses them; we pass the suite's info).
AUXILIARY_DIMENSIONS: tuple[str, ...] = (
    "object_class", "multiple_objects", "color", "spatial_relationship", "scene", "appearance_style",
)
CACHE_FORMAT = 1
SCORER = "vbench"
PROMPT_PROTOCOLS: tuple[str, ...] = ("auto", "standard", "all")
# `scorer.long_protocol`: clip videos of >= long_min_seconds ("auto"), every video ("always") or none ("never")
LONG_PROTOCOLS: tuple[str, ...] = ("auto", "always", "never")


class PromptOutsideSuiteError(ValueError):
    """`prompt_protocol='standard'` met a prompt that is not in the VBench suite (one-line message)."""


def check_prompt_protocol(protocol: str) -> None:
    """One-line ValueError unless `protocol` is one of PROMPT_PROTOCOLS."""
    if protocol not in PROMPT_PROTOCOLS:
        raise ValueError(f"scorer.prompt_protocol must be one of {list(PROMPT_PROTOCOLS)}, got {protocol!r}")


def dimensions_for_prompt(prompt: str, requested: Sequence[str], suite: Mapping[str, Sequence[str]],
                          protocol: str) -> tuple[str, ...]:
    """The requested dimensions a video of `prompt` is scored on (module docstring: the prompt protocol).

    Args:
        prompt: the video's prompt (manifest, or the VBench file name).
        requested: the call's dimensions, in order; the result keeps that order.
        suite: {prompt: dimensions it lists} of the VBench suite (`prompts.load_vbench_suite`, duplicates merged).
        protocol: "auto", "standard" or "all".

    Raises:
        PromptOutsideSuiteError: protocol "standard" and `prompt` is not in `suite`.
        ValueError: an unknown protocol.
    """
    check_prompt_protocol(protocol)
    listed = suite.get(prompt)
    if protocol == "all" or (listed is None and protocol == "auto"):
        return tuple(requested)
    if listed is None:
        raise PromptOutsideSuiteError(
            f"scorer.prompt_protocol='standard' scores only prompts of the VBench suite (VBench_full_info.json), got "
            f"{prompt[:80]!r}; set scorer.prompt_protocol=auto (custom_input protocol for such prompts) or all")
    return tuple(dim for dim in requested if dim in listed)


def dimensions_by_prompt(prompts: Sequence[str], requested: Sequence[str], suite: Mapping[str, Sequence[str]],
                         protocol: str) -> dict[str, tuple[str, ...]]:
    """`dimensions_for_prompt` of each distinct prompt; under "standard" every prompt outside the suite is counted
    and the first is named in one line (PromptOutsideSuiteError)."""
    out: dict[str, tuple[str, ...]] = {}
    outside: list[PromptOutsideSuiteError] = []
    for prompt in dict.fromkeys(prompts):
        try:
            out[prompt] = dimensions_for_prompt(prompt, requested, suite, protocol)
        except PromptOutsideSuiteError as err:
            outside.append(err)
    if outside:
        raise PromptOutsideSuiteError(f"{outside[0]} ({len(outside)} of {len(out) + len(outside)} distinct prompts "
                                      f"are outside the suite)")
    return out


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


@dataclass(frozen=True)
class Unit:
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


@dataclass
class Plan:
    """What a call will write: error rows known before scoring, and every unit to score (or take from the cache).

    `clips[(video, dimension)]` = the clip indices of that pair's rows (the scores store's claim); `left_out` = the
    (video, dimension) pairs the prompt protocol leaves out (no unit, no row)."""

    error_rows: list[dict] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    clips: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    left_out: list[tuple[str, str]] = field(default_factory=list)


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ").replace("\r", " ")
    return text[:300]


def score_from_raw(dimension: str, raw: float) -> float:
    """Per-video score on the scale of VBench's aggregate (imaging_quality: MUSIQ / 100, as `technical_quality`)."""
    return raw / 100.0 if dimension == "imaging_quality" else raw


def as_jobs(videos: Sequence[VideoJob | str | os.PathLike] | str | os.PathLike) -> list[VideoJob]:
    """`VideoJob`s sorted by name from paths, jobs or a folder of `*.mp4`; names must be unique."""
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


def base_row(job: VideoJob, dimension: str, *, clip: int, sha: str, device: str, version: str) -> dict:
    return {
        "video": job.name, "clip": clip, "dimension": dimension, "score": math.nan, "error": "", "scorer": SCORER,
        "content_hash": sha, "raw_score": math.nan, "protocol": "", "frame_start": "", "frame_end": "",
        "device": device, "vbench_version": version, "path": str(job.path), "clip_path": "",
    }


def unit_row(unit: Unit, raw: float, *, device: str, version: str) -> dict:
    row = base_row(unit.job, unit.dimension, clip=unit.clip, sha=unit.content_hash, device=device, version=version)
    return row | {
        "raw_score": raw, "score": score_from_raw(unit.dimension, raw) if not math.isnan(raw) else math.nan,
        "protocol": unit.protocol, "frame_start": unit.frame_start, "frame_end": unit.frame_end,
        "scene": unit.scene if unit.scene >= 0 else "",
        "clip_path": unit.path if unit.clip >= 0 else "",  # the clip file vbench read; empty for a whole video
    }


def unit_key(*, content_sha: str, dimension: str, protocol: str, clip: int, prompt: str, label_name: str,
             kwargs: Mapping, version: str) -> str:
    material = {
        "format": CACHE_FORMAT, "content_hash": content_sha, "dimension": dimension, "protocol": protocol,
        "clip": clip, "prompt": prompt, "kwargs": dict(sorted(kwargs.items())), "vbench": version,
        # human_action parses its Kinetics label from the file name (`...person is <label>-N.mp4`), so the name counts.
        "label_name": label_name if dimension == "human_action" else "",
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def scene_clip_dir(clip_root: Path, sha: str, length: int, scene_tag: str) -> Path:
    """Folder of a video's clips: `<clip_root>/<sha16>/<L>f` (`<L>f-<scene tag>` under scene splitting)."""
    return clip_root / sha[:16] / (f"{length}f-{scene_tag}" if scene_tag else f"{length}f")


def scenes_of(job: VideoJob, sha: str, cache_root: Path, *, threshold: float, min_frames: int) -> list[tuple[int, int]]:
    """Scene spans of a video (PySceneDetect), cached per (content hash, threshold, min length)."""
    key = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "content_hash": sha, "threshold": threshold,
                                     "min_frames": min_frames, "scenes": True}, sort_keys=True).encode()).hexdigest()
    path = cache_root / "scenes" / f"{key}.json"
    if path.is_file():
        return [tuple(span) for span in json.loads(path.read_text(encoding="utf-8"))["scenes"]]
    scenes = long_video.detect_scenes(job.path, threshold=threshold, min_scene_len=min_frames)
    write_text_atomic(path, json.dumps({"scenes": scenes, "video": job.name, "content_hash": sha}))
    logger.info("%s: %d scene(s) at threshold %g", job.name, max(len(scenes), 1), threshold)
    return scenes


def ensure_clips(units: Sequence[Unit], job: VideoJob, *, crf: int) -> None:
    """Write the clip files these units read (decoding the long video once), skipping clips already on disk."""
    todo = {unit.path: unit for unit in units if not Path(unit.path).is_file()}.values()  # dims share clip files
    if not todo:
        return
    frames, fps = video_io.read_video(job.path)  # [T, H, W, 3]
    for unit in todo:
        video_io.write_video(unit.path, frames[unit.frame_start:unit.frame_end], fps, crf=crf)  # [L, H, W, 3]


def plan_units(jobs: Sequence[VideoJob], requested: Sequence[str], *, cache_root: Path, clip_root: Path, device: str,
               version: str, kwargs: Mapping, aux_by_prompt: Mapping[str, dict], suite: Mapping[str, Sequence[str]],
               prompt_protocol: str, long_protocol: str, long_min_seconds: float, clip_seconds: Mapping[str, float],
               scene_split: bool, scene_threshold: float, scene_min_frames: int) -> Plan:
    """Per video: its dimensions (`dimensions_for_prompt` of the requested ones), then, if any, hash + probe it once
    and derive its units per dimension; unreadable videos / missing auxiliary info become error rows (clip -1).
    `plan.left_out` lists the (video, dimension) pairs the prompt protocol leaves out (no unit, no row)."""
    plan = Plan()
    for job in jobs:
        dims = dimensions_for_prompt(job.resolved_prompt, requested, suite, prompt_protocol)
        plan.left_out += [(job.name, dim) for dim in requested if dim not in dims]
        if not dims:
            continue
        try:
            sha = content_hash(job.path)
            info = video_io.probe(job.path)
            use_clips = long_protocol == "always" or (long_protocol == "auto" and info.duration_s >= long_min_seconds)
            scenes = (scenes_of(job, sha, cache_root, threshold=scene_threshold, min_frames=scene_min_frames)
                      if scene_split and use_clips else None)
        except (OSError, ValueError) as err:
            for dim in dims:
                row = base_row(job, dim, clip=-1, sha="", device=device, version=version)
                plan.error_rows.append(row | {"error": f"unreadable video: {one_line(err)}"})
                plan.clips[(job.name, dim)].append(-1)
            logger.warning("unreadable video %s: %s", job.path, one_line(err))
            continue
        scene_tag = f"scene{scene_threshold:g}-{scene_min_frames}" if scenes is not None else ""
        for dim in dims:
            if dim in AUXILIARY_DIMENSIONS and dim not in aux_by_prompt.get(job.resolved_prompt, {}):
                row = base_row(job, dim, clip=-1, sha=sha, device=device, version=version)
                plan.error_rows.append(row | {"error": f"prompt {job.resolved_prompt[:80]!r} has no auxiliary_info "
                                                       f"for {dim} in the VBench suite"})
                plan.clips[(job.name, dim)].append(-1)
                continue
            if use_clips:
                length = video_io.clip_num_frames(info.fps, clip_seconds[dim])
                protocol = f"clip:{length}f" + (f"+{scene_tag}" if scene_tag else "")
                clip_dir_of = scene_clip_dir(clip_root, sha, length, scene_tag)
                targets = [(t.clip, str(clip_dir_of / f"{Path(job.path).stem}{t.stem_suffix}.mp4"), t.start, t.end,
                            t.scene)
                           for t in long_video.scene_clip_targets(info.num_frames, info.fps, clip_seconds[dim], scenes)]
            else:
                protocol = "whole"
                targets = [(-1, str(job.path), 0, info.num_frames, -1)]
            for clip, path, start, end, scene in targets:
                # scene-split clips: the frame span joins the key (it depends on the detector, not only on the index)
                key_protocol = f"{protocol}:{start}-{end}" if scene >= 0 else protocol
                key = unit_key(content_sha=sha, dimension=dim, protocol=key_protocol, clip=clip,
                               prompt=job.resolved_prompt, label_name=Path(path).name, kwargs=kwargs, version=version)
                plan.units.append(Unit(job=job, dimension=dim, clip=clip, path=path, content_hash=sha,
                                       protocol=protocol, frame_start=start, frame_end=end, key=key, scene=scene))
                plan.clips[(job.name, dim)].append(clip)
    return plan
