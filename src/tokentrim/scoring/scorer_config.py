"""The `scorer` config group read in one place: its check before any work (`preflight`) and the `score_videos` keywords.

`preflight(scorer_cfg, device)` raises one line (the key, the rule, the value; for a dimension that is not ready the
missing file and the config key to set) and touches nothing: no directory, no model, no vbench import. `tokentrim
run` / `generate` / `score` call it before generation, so a missing checkpoint is found in seconds, not after hours.

Prompt protocol (`scorer.prompt_protocol`, `planning.dimensions_for_prompt`): `auto` (default) scores a VBench suite
prompt only on the requested dimensions it lists, any other prompt on all of them; `standard` refuses prompts outside
the suite (`check_prompts`, called by `tokentrim run` / `generate` on the composed prompts, before generation); `all`
scores every requested dimension on every video. `scorer=tinyworld`'s extra VBench dimensions always use `all`.

Device rule: `scorer.device: null` (the shipped default) means the top-level `device`, so `device=cuda` (e.g.
`experiment=paper_main`) scores VBench on the GPU too; `scorer.device=cpu` overrides it. `scorer.devices: null` means
`[scorer device]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tokentrim.scoring.totals import ALL_DIMENSIONS
from tokentrim.scoring.weights import WeightsMissingError, check_dimensions, raise_if_missing

__all__ = ["SCORER_NAMES", "VBENCH_ARGS", "check_prompts", "preflight", "scorer_device", "vbench_dimensions",
           "vbench_kwargs"]

SCORER_NAMES: tuple[str, ...] = ("vbench", "tinyworld")
# `scorer=vbench` keys passed to `score_videos` as they are (besides name, dimensions, device, score_cache_dir).
VBENCH_ARGS: tuple[str, ...] = (
    "cache_dir", "torch_home", "hf_home", "clip_dir", "long_protocol", "long_min_seconds", "clip_seconds",
    "clip_crf", "slow_fast", "chunk_size", "num_shards", "shard_index", "num_workers", "devices", "full_info_path",
    "imaging_quality_preprocessing_mode", "scene_split", "scene_threshold", "scene_min_frames",
    "slow_fast_dimensions", "slow_fast_mapping_dir", "dinov2_path", "slow_fast_w_inclip", "slow_fast_w_clip2clip",
    "prompt_protocol",
)
_VBENCH_KEYS = ("name", "dimensions", "device", "score_cache_dir", *VBENCH_ARGS)
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


def scorer_device(scorer_cfg: Mapping[str, Any], device: str) -> str:
    """`scorer.device`, or the top-level `device` when it is null / absent (module docstring)."""
    value = scorer_cfg.get("device")
    return str(device if value is None else value)


def vbench_dimensions(scorer_cfg: Mapping[str, Any]) -> list[str] | None:
    """The VBench dimensions a scorer config asks for (`scorer.dimensions`, or tinyworld's `vbench_dimensions`);
    None = every ready dimension (scorer=vbench only)."""
    if scorer_cfg.get("name") == "vbench":
        dims = scorer_cfg.get("dimensions")
        key = "scorer.dimensions"
    else:
        dims = scorer_cfg.get("vbench_dimensions", ["temporal_flickering"])
        key = "scorer.vbench_dimensions"
        if dims is None:
            return []
    if dims is None:
        return None
    if isinstance(dims, str) or not all(isinstance(d, str) for d in dims):
        raise ValueError(f"{key} must be a list of VBench dimension names or null, got {dims!r}")
    unknown = [d for d in dims if d not in ALL_DIMENSIONS]
    if unknown:
        raise ValueError(f"{key} has unknown dimension(s) {unknown}; names are {list(ALL_DIMENSIONS)}")
    return list(dict.fromkeys(dims))


def vbench_kwargs(scorer_cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
    """`score_videos` keywords of a scorer config (dimensions, device and, for scorer=vbench, every set VBENCH_ARGS
    key; tinyworld's clip length applies to the VBench dimensions scored beside it, on every video)."""
    dims = vbench_dimensions(scorer_cfg)
    kwargs: dict[str, Any] = {"dimensions": dims, "device": scorer_device(scorer_cfg, device)}
    if scorer_cfg.get("name") == "vbench":
        kwargs |= {key: scorer_cfg[key] for key in VBENCH_ARGS if scorer_cfg.get(key) is not None}
    else:
        kwargs["clip_seconds"] = {d: float(scorer_cfg.get("clip_seconds", 2.0)) for d in dims or []}
        kwargs["prompt_protocol"] = "all"
    return kwargs


def _check_device(key: str, value: Any) -> None:
    if not _DEVICE.match(str(value)):
        raise ValueError(f"{key} must be cpu, cuda or cuda:N (null = the top-level device), got {value!r}")


def preflight(scorer_cfg: Mapping[str, Any], device: str) -> None:
    """Check a scorer config before any work: one-line ValueError / WeightsMissingError (module docstring).

    Checks: the scorer name; for scorer=vbench, unknown keys, types and ranges of the options (`check_score_options`);
    the resolved device(s); the requested dimensions' names and readiness (every file and package present); with
    `dimensions: null`, that at least one dimension is ready.
    """
    from tokentrim.scoring.vbench_adapter import check_score_options

    name = scorer_cfg.get("name")
    if name not in SCORER_NAMES:
        raise ValueError(f"scorer.name must be one of {list(SCORER_NAMES)}, got {name!r}")
    kwargs = vbench_kwargs(scorer_cfg, device)
    _check_device("scorer.device", kwargs["device"])
    if name == "vbench":
        unknown = sorted(set(scorer_cfg) - set(_VBENCH_KEYS))
        if unknown:
            raise ValueError(f"scorer has unknown key(s) {unknown}; scorer=vbench keys are {sorted(_VBENCH_KEYS)}")
        for index, value in enumerate(kwargs.get("devices") or []):
            _check_device(f"scorer.devices[{index}]", value)
        clip_seconds = kwargs.get("clip_seconds") or {}
        bad = {k: v for k, v in clip_seconds.items() if k not in ALL_DIMENSIONS or not float(v) > 0}
        if bad:
            raise ValueError(f"scorer.clip_seconds maps VBench dimension names to seconds > 0, got {bad}")
        options = ("long_protocol", "scene_split", "scene_threshold", "scene_min_frames", "slow_fast",
                   "slow_fast_dimensions", "slow_fast_w_inclip", "slow_fast_w_clip2clip", "chunk_size", "num_shards",
                   "shard_index", "num_workers", "prompt_protocol")
        check_score_options(**{key: kwargs[key] for key in options if key in kwargs})
    dims = kwargs["dimensions"]
    if dims == []:
        return
    status = check_dimensions(
        dims, cache_dir=kwargs.get("cache_dir"), torch_home=kwargs.get("torch_home"), hf_home=kwargs.get("hf_home"),
        slow_fast=bool(kwargs.get("slow_fast", False)),
        slow_fast_dimensions=list(kwargs.get("slow_fast_dimensions") or ["subject_consistency"]),
        slow_fast_mapping_dir=kwargs.get("slow_fast_mapping_dir"), dinov2_path=kwargs.get("dinov2_path"),
        scene_split=bool(kwargs.get("scene_split", False)))
    if dims is not None:
        raise_if_missing(status)
    elif not any(item.is_ready for item in status.values()):
        first = next(iter(status.values()))
        raise WeightsMissingError(f"scorer.dimensions is null (every ready dimension) but none is ready, e.g. "
                                  f"{first.one_line()}; run `tokentrim vbench-check`")


def check_prompts(scorer_cfg: Mapping[str, Any], prompts: Sequence[str]) -> None:
    """Under `scorer.prompt_protocol: standard`, refuse (one line, PromptOutsideSuiteError) prompts outside the VBench
    suite before anything is generated; other protocols and scorers accept every prompt."""
    if scorer_cfg.get("name") != "vbench" or scorer_cfg.get("prompt_protocol", "auto") != "standard":
        return
    from tokentrim.scoring.planning import dimensions_by_prompt
    from tokentrim.scoring.prompts import suite_dimensions

    suite = suite_dimensions(full_info_path=scorer_cfg.get("full_info_path"))
    dimensions_by_prompt(list(prompts), vbench_dimensions(scorer_cfg) or [], suite, "standard")
