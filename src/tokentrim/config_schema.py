"""Typed schema of every conf group, checked in one place (`check_config`) before any directory, model or W&B run.

Each group option of `conf/` has a dataclass here (or reuses the one its code is built from: `TokenTrimConfig`,
`FlowMoConfig`, `WandbLogger`, the TinyWorld scorer's keyword arguments); fixed choices are Enums. `check_config`
walks a composed config against them strictly:

    * types: a bool is never a number (`trim.p=true` is refused, not read as 1.0), an integer key refuses 1.5,
      a number key refuses 'abc', a choice key names its allowed values;
    * keys: a key the schema does not know is refused (a typo never silently does nothing), a missing key is refused;
    * ranges and cross-group rules: the dataclasses' own checks (`TokenTrimConfig.__post_init__`, ...) plus the
      rules that span groups (Rolling Forcing cannot test drift after the first step; FlowMo guides at most the
      sampler's steps; seeds are >= 0; the output root is writable; the scorer's dimensions are ready).

Every failure is one `ConfigError` line naming the dotted key, the rule and the value. `tokentrim.cli.validate` is
the entry point; the sweep preflight calls it once per point.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from tokentrim.backbones import BACKBONE_KINDS, PIPELINES
from tokentrim.generate import DTYPES
from tokentrim.init.flowmo import OPTIMIZERS, TARGETS, FlowMoConfig
from tokentrim.models.loading import CHECKPOINT_KINDS
from tokentrim.prompts import SOURCES as PROMPT_SOURCES
from tokentrim.report.detector import DetectorConfig
from tokentrim.report.wandb_log import LOGGER_NAMES
from tokentrim.report.wandb_log import MODES as WANDB_MODES
from tokentrim.scoring.planning import LONG_PROTOCOLS, PROMPT_PROTOCOLS
from tokentrim.scoring.scorer_config import SCORER_NAMES
from tokentrim.tinyworld.prompts import SPLITS as TINYWORLD_SPLITS
from tokentrim.trim.tokentrim import (DRIFT_METRICS, DRIFT_REFERENCES, DRIFT_SOURCES, REGEN_NOISE, SCOPES, SEVERITIES,
                                     TokenTrimConfig)
from tokentrim.video_io import ENCODINGS


class ConfigError(ValueError):
    """A bad config value: one line naming the key, the rule and the value (exit code 2 in the CLI)."""


# `launcher.name`: the options of the `conf/launcher` group (each file sets `launcher.name` to its own stem)
LAUNCHERS: tuple[str, ...] = tuple(sorted(path.stem for path in (Path(__file__).parent / "conf" / "launcher").glob(
    "*.yaml")))


def _choices(name: str, values: Sequence[str]) -> type[enum.Enum]:
    """A str Enum whose members are `values` (the tuple the code that consumes the key declares)."""
    return enum.Enum(name, {v: v for v in values}, type=str)


# ---------------------------------------------------------------------------------------------- choices
# choices whose consuming modules declare the allowed values (as tuples): one list each, made Enums here
PromptSource = _choices("PromptSource", PROMPT_SOURCES)
PromptSplit = _choices("PromptSplit", TINYWORLD_SPLITS)
ScorerName = _choices("ScorerName", SCORER_NAMES)
LongProtocol = _choices("LongProtocol", LONG_PROTOCOLS)
LoggerName = _choices("LoggerName", LOGGER_NAMES)
LauncherName = _choices("LauncherName", LAUNCHERS)
CheckpointKind = _choices("CheckpointKind", CHECKPOINT_KINDS)
DType = _choices("DType", tuple(DTYPES))
BackboneKind = _choices("BackboneKind", BACKBONE_KINDS)
PipelineName = _choices("PipelineName", PIPELINES)
WandbMode = _choices("WandbMode", WANDB_MODES)
Severity = _choices("Severity", SEVERITIES)
DriftMetric = _choices("DriftMetric", DRIFT_METRICS)
DriftReference = _choices("DriftReference", DRIFT_REFERENCES)
Scope = _choices("Scope", SCOPES)
RegenNoise = _choices("RegenNoise", REGEN_NOISE)
DriftSource = _choices("DriftSource", DRIFT_SOURCES)
PromptProtocol = _choices("PromptProtocol", PROMPT_PROTOCOLS)
FlowMoTarget = _choices("FlowMoTarget", TARGETS)
FlowMoOptimizer = _choices("FlowMoOptimizer", OPTIMIZERS)
VideoEncoding = _choices("VideoEncoding", ENCODINGS)
CHOICE_OVERLAYS: dict[type, dict[str, type[enum.Enum]]] = {
    TokenTrimConfig: {"severity": Severity, "drift_metric": DriftMetric, "drift_reference": DriftReference, "scope": Scope, "regen_noise": RegenNoise,
                      "drift_source": DriftSource},
    FlowMoConfig: {"target": FlowMoTarget, "optimizer": FlowMoOptimizer},
}


# ---------------------------------------------------------------------------------------------- groups
@dataclasses.dataclass
class PathsConfig:
    output_root: str
    weights_dir: str
    score_cache_dir: Optional[str]


@dataclasses.dataclass
class ShardConfig:
    index: int = 0
    count: int = 1


@dataclasses.dataclass
class VideoConfig:
    """`video`: how `tokentrim generate` encodes and writes its videos (`tokentrim.video_io.encoding`,
    `tokentrim.video_writer`)."""

    encoding: VideoEncoding
    writer_queue: int
    warm_up_latent_frames: Optional[int]


@dataclasses.dataclass
class ReportConfig:
    dir: Optional[str]
    n_boot: int
    plots: bool
    baseline_variant: str
    detector: DetectorConfig  # report.detector: ranges checked by DetectorConfig itself


@dataclasses.dataclass
class TinyVideoConfig:
    num_latent_frames: Optional[int]


@dataclasses.dataclass
class WanVideoConfig:
    height: int
    width: int
    fps: float
    num_latent_frames: int


@dataclasses.dataclass
class TinyBackboneConfig:
    """`backbone=tiny`: the embedded TinyWorld model. `sampler` holds overrides of the sampler its export ships
    (checked against the pipeline's sampler dataclass by `backbones.sampler_config`)."""

    name: str
    kind: BackboneKind
    pipeline: PipelineName
    weights_dir: Optional[str]
    random_weights: bool
    assets: str  # packaged export folder under tokentrim/assets/ loaded when weights_dir is null
    video: TinyVideoConfig
    sampler: dict[str, Any]


@dataclasses.dataclass
class WanBackboneConfig:
    """`backbone=self_forcing | rolling_forcing`: causal Wan2.1-T2V-1.3B. `model`, `sampler` and `speed` are checked
    by `backbones.check_backbone_config` / `sampler_config` against `WanConfig` and the pipeline's sampler."""

    name: str
    kind: BackboneKind
    pipeline: PipelineName
    random_weights: bool
    checkpoint: str
    checkpoint_kind: CheckpointKind
    use_ema: bool
    wan_dir: str
    vae_path: str
    text_encoder_path: str
    tokenizer_path: str
    text_cache_dir: Optional[str]
    vae_config: Optional[dict[str, Any]]
    model: dict[str, Any]
    sampler: dict[str, Any]
    video: WanVideoConfig
    speed: dict[str, Any]


@dataclasses.dataclass
class TrimConfig(TokenTrimConfig):
    """`trim=tokentrim | none`: `TokenTrimConfig` plus the variant label `name`."""

    name: str = "tokentrim"


@dataclasses.dataclass
class InitConfig(FlowMoConfig):
    """`init=flowmo | none`: `FlowMoConfig` as is."""


@dataclasses.dataclass
class ListPromptsConfig:
    name: str
    source: PromptSource
    prompts: list[str]
    seeds: list[int]
    limit: Optional[int]


@dataclasses.dataclass
class FilePromptsConfig:
    name: str
    source: PromptSource
    path: str
    seeds: list[int]
    limit: Optional[int]


@dataclasses.dataclass
class VbenchPromptsConfig:
    name: str
    source: PromptSource
    dimensions: Optional[list[str]]
    seeds: list[int]
    limit: Optional[int]


@dataclasses.dataclass
class TinyWorldPromptsConfig:
    """Prompts drawn from the TinyWorld grammar (`tinyworld.prompts.prompt_set`)."""

    name: str
    source: PromptSource
    split: PromptSplit
    count: int
    seed: int
    seeds: list[int]
    limit: Optional[int]


PROMPT_SCHEMAS: dict[str, type] = {"list": ListPromptsConfig, "file": FilePromptsConfig,
                                   "vbench": VbenchPromptsConfig, "tinyworld": TinyWorldPromptsConfig}


@dataclasses.dataclass
class TinyWorldScorerConfig:
    """`scorer=tinyworld`: `tinyworld.metrics.TinyWorldScorer` keyword arguments plus the VBench dimensions beside."""

    name: ScorerName
    clip_seconds: float
    onset_threshold: float
    dimensions: list[str]
    include_video_mean: bool
    fg_threshold: float
    colour_tolerance: float
    occlusion_margin_px: int
    min_area_fraction: float
    vbench_dimensions: list[str]


@dataclasses.dataclass
class VbenchScorerConfig:
    """`scorer=vbench`: `tokentrim.scoring.score_videos` keyword arguments (`scoring.scorer_config.VBENCH_ARGS`)."""

    name: ScorerName
    dimensions: Optional[list[str]]
    cache_dir: Optional[str]
    torch_home: Optional[str]
    hf_home: Optional[str]
    device: Optional[str]
    score_cache_dir: Optional[str]
    clip_dir: Optional[str]
    long_protocol: LongProtocol
    long_min_seconds: float
    clip_seconds: dict[str, float]
    clip_crf: int
    scene_split: bool
    scene_threshold: float
    scene_min_frames: int
    slow_fast: bool
    slow_fast_dimensions: list[str]
    slow_fast_mapping_dir: Optional[str]
    dinov2_path: Optional[str]
    slow_fast_w_inclip: float
    slow_fast_w_clip2clip: float
    chunk_size: int
    num_workers: int
    devices: Optional[list[str]]
    num_shards: int
    shard_index: int
    full_info_path: Optional[str]
    imaging_quality_preprocessing_mode: str
    prompt_protocol: PromptProtocol


SCORER_SCHEMAS: dict[str, type] = {"tinyworld": TinyWorldScorerConfig, "vbench": VbenchScorerConfig}


@dataclasses.dataclass
class NoLoggerConfig:
    name: LoggerName


@dataclasses.dataclass
class WandbLoggerConfig:
    """`logger=wandb`: `report.wandb_log.WandbLogger` keyword arguments."""

    name: LoggerName
    mode: WandbMode
    project: str
    entity: Optional[str]
    group: Optional[str]
    dir: Optional[str]
    tags: list[str]
    log_videos: bool
    max_videos: int


LOGGER_SCHEMAS: dict[str, type] = {"none": NoLoggerConfig, "wandb": WandbLoggerConfig}


@dataclasses.dataclass
class LauncherConfig:
    name: LauncherName


@dataclasses.dataclass
class ScoreConfig:
    """`score`: `tokentrim score` on a plain folder of mp4s (the scoring branch's `tokentrim.scoring.folder`)."""

    videos_dir: Optional[str]
    prompt_file: Optional[str]
    variant: str
    run_dir: Optional[str]


@dataclasses.dataclass
class RunConfig:
    """The composed `conf/config.yaml` (groups are checked by their own schema; see `check_config`)."""

    experiment_name: str
    variant: Optional[str]
    seed_offset: int
    device: str
    dtype: DType
    baseline: bool
    overwrite: bool
    num_latent_frames: Optional[int]
    save_latents: bool
    video: VideoConfig
    shard: ShardConfig
    report: ReportConfig
    paths: Any
    backbone: Any
    trim: Any
    init: Any
    prompts: Any
    scorer: Any
    logger: Any
    launcher: Any
    score: Optional[ScoreConfig] = None  # present once the folder-scoring keys are in conf/config.yaml


# ---------------------------------------------------------------------------------------------- the strict walk
def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _hints(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    overlay = next((o for cls, o in CHOICE_OVERLAYS.items() if issubclass(schema, cls)), {})
    return {f.name: overlay.get(f.name, hints[f.name]) for f in dataclasses.fields(schema)}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as type `hint`, or a ConfigError naming `key`. Bools are never numbers; ints refuse fractions."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if hint is Any:
        return value
    if value is None:
        raise ConfigError(f"{key} must be set ({_type_word(hint)}), got null")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if isinstance(value, bool) or value not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, got {_describe(value)}")
        return str(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {_describe(value)}")
        return str(value)
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key} must be a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        item = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return check_section(value, hint, key)
    raise TypeError(f"schema type {hint!r} of {key} is not supported")  # a bug in this module, not in the config


def _type_word(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def check_section(section: Any, schema: type, key: str) -> dict[str, Any]:
    """The keys of `section` typed by the dataclass `schema`: unknown and missing keys refused. Returns plain values."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{key} must be a mapping of {sorted(f.name for f in dataclasses.fields(schema))}, "
                          f"got {_describe(section)}")
    hints = _hints(schema)
    unknown = sorted(set(section) - set(hints))
    if unknown:
        raise ConfigError(f"{key} has unknown keys {unknown}; allowed: {sorted(hints)}")
    values = {}
    for field in dataclasses.fields(schema):
        if field.name in section:
            values[field.name] = _coerce(section[field.name], hints[field.name], f"{key}.{field.name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}.{field.name} is required (a key of {schema.__name__}), but it is missing")
    return values


def _option_schema(section: Mapping, selector: str, schemas: dict[str, type], key: str) -> type:
    choice = section.get(selector)
    if choice not in schemas:
        raise ConfigError(f"{key}.{selector} must be one of {list(schemas)}, got {_describe(choice)}")
    return schemas[choice]


# ---------------------------------------------------------------------------------------------- the one preflight
def check_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Every check that can fail before any directory, model or W&B run is created (see module docstring).

    `cfg` is the resolved config as plain containers. Returns the typed sections (plain values). Raises ConfigError
    (one line) on the first problem.
    """
    from tokentrim.backbones import check_backbone_config, resolved_sampler, sampler_config

    top = check_section(cfg, RunConfig, "config")
    out: dict[str, Any] = dict(top)
    out["paths"] = check_section(cfg["paths"], PathsConfig, "paths")
    backbone_schema = TinyBackboneConfig if cfg["backbone"].get("kind") == "tinyworld" else WanBackboneConfig
    out["backbone"] = check_section(cfg["backbone"], backbone_schema, "backbone")
    out["trim"] = check_section(cfg["trim"], TrimConfig, "trim")
    out["init"] = check_section(cfg["init"], InitConfig, "init")
    out["prompts"] = check_section(cfg["prompts"], _option_schema(cfg["prompts"], "source", PROMPT_SCHEMAS, "prompts"),
                                   "prompts")
    for group, schemas in (("scorer", SCORER_SCHEMAS), ("logger", LOGGER_SCHEMAS)):
        out[group] = check_section(cfg[group], _option_schema(cfg[group], "name", schemas, group), group)
    out["launcher"] = check_section(cfg["launcher"], LauncherConfig, "launcher")

    # ranges: the consuming dataclasses' own rules (one place each)
    trim = out["trim"]
    _ranged(lambda: TokenTrimConfig(**{k: v for k, v in trim.items() if k != "name"}))
    init = _ranged(lambda: FlowMoConfig(**out["init"]))
    backbone = dict(cfg["backbone"])
    _ranged(lambda: check_backbone_config(backbone))
    sampler = _ranged(lambda: sampler_config(backbone["pipeline"], resolved_sampler(backbone)), prefix="backbone.")
    _check_run_keys(out)
    _ranged(lambda: DetectorConfig(**out["report"]["detector"]))
    _check_logger(out["logger"])

    # rules across groups
    if backbone["pipeline"] == "rolling_forcing" and trim["drift_source"] != "final":
        raise ConfigError(f"trim.drift_source must be 'final' with backbone.pipeline=rolling_forcing (a block's steps "
                          f"span several windows: no first-step test), got {trim['drift_source']!r}")
    num_steps = len(sampler.denoising_steps)
    if init.enabled and init.steps > num_steps:
        raise ConfigError(f"init.steps must be <= the sampler's {num_steps} denoising steps "
                          f"(backbone.sampler.denoising_steps), got {init.steps}")
    seeds = out["prompts"]["seeds"]
    if not seeds:
        raise ConfigError("prompts.seeds must hold at least one seed, e.g. prompts.seeds=[0], got []")
    if min(seeds) + out["seed_offset"] < 0:
        raise ConfigError(f"prompts.seeds + seed_offset must be >= 0 (a seed names a video and a noise generator), "
                          f"got seed {min(seeds)} + seed_offset {out['seed_offset']}")
    check_writable_root(out["paths"]["output_root"], "paths.output_root")
    return out


def _ranged(build, prefix: str = ""):
    """Run a dataclass's own range check, re-raised as one ConfigError line (its key given the group `prefix` when
    the dataclass names it without, e.g. the sampler's `sampler.shift` is `backbone.sampler.shift`)."""
    try:
        return build()
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        line = str(err).splitlines()[0]
        if prefix and not line.startswith(prefix):
            line = prefix + line
        raise ConfigError(line) from None


def _check_run_keys(out: Mapping[str, Any]) -> None:
    device = out["device"]
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if device != "cpu" and out["launcher"]["name"] != "slurm":  # SLURM jobs run on GPU nodes, not here
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} needs CUDA, but torch sees no CUDA device (use device=cpu)")
        index = int(device[5:]) if device.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA devices are visible")
    shard = out["shard"]
    if shard["count"] < 1:
        raise ConfigError(f"shard.count must be >= 1, got {shard['count']}")
    if not 0 <= shard["index"] < shard["count"]:
        raise ConfigError(f"shard.index must be in [0, shard.count={shard['count']}), got {shard['index']}")
    if out["num_latent_frames"] is not None and out["num_latent_frames"] < 1:
        raise ConfigError(f"num_latent_frames must be >= 1 or null, got {out['num_latent_frames']}")
    video = out["video"]
    if video["writer_queue"] < 0:
        raise ConfigError(f"video.writer_queue must be >= 0 (0 = write inline), got {video['writer_queue']}")
    if video["warm_up_latent_frames"] is not None and video["warm_up_latent_frames"] < 1:
        raise ConfigError(f"video.warm_up_latent_frames must be >= 1 or null, got {video['warm_up_latent_frames']}")
    if out["report"]["n_boot"] < 0:
        raise ConfigError(f"report.n_boot must be >= 0, got {out['report']['n_boot']}")
    if not out["report"]["baseline_variant"] or "/" in out["report"]["baseline_variant"]:
        raise ConfigError(f"report.baseline_variant must be a directory name without '/', "
                          f"got {out['report']['baseline_variant']!r}")
    if not out["experiment_name"] or "/" in out["experiment_name"]:
        raise ConfigError(f"experiment_name must be a non-empty name without '/', got {out['experiment_name']!r}")
    if out["variant"] is not None and (not out["variant"] or "/" in out["variant"]):
        raise ConfigError(f"variant must be null or a non-empty name without '/', got {out['variant']!r}")
    limit = out["prompts"]["limit"]
    if limit is not None and limit < 1:
        raise ConfigError(f"prompts.limit must be >= 1 or null, got {limit}")


def _check_logger(logger_cfg: Mapping[str, Any]) -> None:
    if logger_cfg["name"] == "wandb":
        from tokentrim.report.wandb_log import make_logger

        _ranged(lambda: make_logger(dict(logger_cfg)))


def check_writable_root(path: str | os.PathLike, key: str) -> None:
    """`path` exists as a writable directory, or its nearest existing ancestor is one (nothing is created here).

    A directory whose mode grants nobody write permission counts as read-only even for root (who could still write).
    """
    target = Path(path).absolute()
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key} must be a directory (or creatable as one), but {probe} is a file: got {str(path)!r}")
    mode = probe.stat().st_mode
    if not os.access(probe, os.W_OK | os.X_OK) or not mode & 0o222:
        raise ConfigError(f"{key} must be a writable directory, but {probe} is read-only: got {str(path)!r}")
