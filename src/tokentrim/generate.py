"""Generation stage: prompts x seeds -> videos/<name>.mp4, events/<name>.jsonl, meta/<name>.json, videos.csv.

Pipelined: the GPU rolls out and decodes video n+1 while a background writer (`tokentrim.video_writer`, a bounded
queue of `video.writer_queue` videos) encodes video n and writes its files, meta last.

Resumable: a video whose mp4, events and meta files exist is skipped; every file is written atomically (temp file +
rename), so a killed run leaves either a finished video or nothing (at most the queued videos are lost). Several processes may share a run directory
(`shard.index/shard.count`): each writes only its own videos, and videos.csv is rebuilt from meta/*.json.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tokentrim.backbones import Backbone, build_backbone, make_pipeline
from tokentrim.env_info import write_env_json
from tokentrim.init.flowmo import FlowMoConfig
from tokentrim.report.atomic_io import atomic_path, remove_stale_temps, write_json_atomic, write_text_atomic
from tokentrim.scoring.prompts import video_name
from tokentrim.trim import TokenTrim, TokenTrimConfig
from tokentrim.video_io import encoding, write_video
from tokentrim.video_writer import BackgroundWriter

logger = logging.getLogger(__name__)

# config sections that decide what a run directory's videos are; a rerun must agree on them
# (dotted keys name one key of a section: the rest of `video` -- the writer's queue -- does not change the videos)
GENERATION_KEYS = ("backbone", "trim", "init", "prompts", "num_latent_frames", "seed_offset", "dtype", "video.encoding")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Job:
    prompt: str
    seed: int
    name: str  # VBench naming: <prompt>-<seed>


def trim_config(cfg: Mapping[str, Any]) -> TokenTrimConfig:
    """TokenTrimConfig from `cfg.trim` (the `name` key is the variant label, not a knob)."""
    return TokenTrimConfig(**_known(cfg, TokenTrimConfig, "trim", ignore=("name",)))


def flowmo_config(cfg: Mapping[str, Any]) -> FlowMoConfig:
    return FlowMoConfig(**_known(cfg, FlowMoConfig, "init", ignore=("name",)))


def init_name(init_cfg: Mapping[str, Any]) -> str:
    return "flowmo" if init_cfg.get("enabled") else "none"


def _known(section: Mapping[str, Any], cls, key: str, ignore=()) -> dict:
    allowed = set(cls.__dataclass_fields__)
    values = {k: v for k, v in section.items() if k not in ignore}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{key} has unknown keys {unknown}; allowed: {sorted(allowed)}")
    return values


def jobs_of(prompts_cfg: Mapping[str, Any], seed_offset: int = 0) -> list[Job]:
    """Every (prompt, seed) of the prompt suite, in a stable order."""
    from tokentrim.prompts import load_prompts

    prompts = load_prompts(prompts_cfg)
    seeds = [int(s) + seed_offset for s in prompts_cfg["seeds"]]
    return [Job(p, s, Path(video_name(p, s)).stem) for p in prompts for s in seeds]


# what a run directory holds that was made with its config.yaml (removed when overwrite=true relabels it)
GENERATED = ("videos", "events", "meta", "latents", "videos.csv", "scores.csv", "env.json")


def changed_generation_keys(run_dir: Path, cfg: DictConfig) -> list[str]:
    """The GENERATION_KEYS on which `run_dir/config.yaml` differs from `cfg` ([] for a new directory)."""
    existing = run_dir / "config.yaml"
    if not existing.exists():
        return []
    old = OmegaConf.to_container(OmegaConf.load(existing), resolve=True)
    new = OmegaConf.to_container(cfg, resolve=True)
    return [k for k in GENERATION_KEYS if _lookup(old, k) != _lookup(new, k)]


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """`config[a][b]` for "a.b" (None where a level is missing, e.g. a run directory made before the key existed)."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def check_run_dir(run_dir: Path, cfg: DictConfig, overwrite: bool) -> list[str]:
    """Refuse to add videos made with a different generation config to an existing run directory, unless
    `overwrite` (then everything generated under the old config is regenerated). Returns the differing keys."""
    differing = changed_generation_keys(run_dir, cfg)
    if differing and not overwrite:
        raise ValueError(
            f"results directory {run_dir} was made with a different config ({', '.join(differing)} differ); "
            "use another experiment_name/variant, or overwrite=true to regenerate it under the new config"
        )
    return differing


def clear_generated(run_dir: Path, differing: list[str]) -> None:
    """overwrite=true over a changed config: remove what the old config made, so that config.yaml never labels videos
    it did not make (every video is then regenerated, and rescored)."""
    removed = [name for name in GENERATED if (run_dir / name).exists()]
    for name in removed:
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    logger.warning("overwrite=true: %s was made with another %s; removed %s to regenerate everything under the new "
                   "config", run_dir, ", ".join(differing), ", ".join(removed) or "nothing")


def generate(cfg: DictConfig, run_dir: Path, *, backbone: Backbone | None = None) -> Path:
    """Generate every video of `cfg` (this process's shard) into `run_dir`. Returns `run_dir`."""
    generate_variants([(cfg, run_dir)], backbone=backbone)
    return run_dir


def generate_variants(variants: list[tuple[DictConfig, Path]], *, backbone: Backbone | None = None) -> list[Path]:
    """Generate several variants (e.g. baseline and TokenTrim) of the same backbone, prompts and seeds.

    Videos are interleaved per (prompt, seed) -- A B A B ... -- after one untimed warm-up rollout, so that the
    wall times in videos.csv compare like with like (overhead x in the report).
    """
    checked = [(cfg, run_dir, check_run_dir(run_dir, cfg, cfg.overwrite)) for cfg, run_dir in variants]  # all, first
    plans = []
    for cfg, run_dir, differing in checked:
        jobs = jobs_of(cfg.prompts, cfg.seed_offset)[cfg.shard.index :: cfg.shard.count]
        if differing:
            clear_generated(run_dir, differing)
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        for sub in ("videos", "events", "meta"):
            (run_dir / sub).mkdir(exist_ok=True)
        todo = [j for j in jobs if not _is_done(run_dir, j)]
        logger.info("%s: %d videos, %d already done", run_dir, len(jobs), len(jobs) - len(todo))
        plans.append((cfg, run_dir, todo))
    if any(todo for _, _, todo in plans):
        first = plans[0][0]
        device, dtype = first.device, DTYPES[first.dtype]
        backbone = backbone or build_backbone(OmegaConf.to_container(first.backbone, resolve=True), device=device, dtype=dtype)
        runners = []
        for cfg, run_dir, todo in plans:
            write_env_json(run_dir / "env.json", device=cfg.device, seed=cfg.seed_offset, backbone=backbone.info,
                           video_encoding=encoding(cfg.video.encoding).record(), video_writer_queue=cfg.video.writer_queue)
            pipeline = make_pipeline(backbone, trim=TokenTrim(trim_config(cfg.trim)), flowmo=flowmo_config(cfg.init))
            runners.append((cfg, run_dir, {j.name: j for j in todo}, pipeline))
        num_frames = first.num_latent_frames or backbone.num_latent_frames
        warm_prompt = next(j.prompt for _, _, todo in plans for j in todo)
        warm_frames = min(num_frames, first.video.warm_up_latent_frames or num_frames)
        warm_up(backbone, runners[0][3], warm_prompt, warm_frames, device, first.video.encoding)
        names = dict.fromkeys(j.name for _, _, todo in plans for j in todo)  # first-seen order, no duplicates
        order = [(runner, runner[2][name]) for name in names for runner in runners if name in runner[2]]
        with BackgroundWriter(first.video.writer_queue) as writer:
            for (cfg, run_dir, _, pipeline), job in tqdm(order, desc="videos", unit="video"):
                _generate_one(job, backbone, pipeline, run_dir, num_frames, cfg, device, writer)
    for _, run_dir, _ in plans:
        write_manifest(run_dir)
    return [run_dir for _, run_dir, _ in plans]


def warm_up(backbone: Backbone, pipeline, prompt: str, num_frames: int, device: str, encoding_name: str) -> float:
    """One untimed video through everything a timed video uses -- rollout at the videos' length (every KV-cache shape,
    compiled blocks), decode at the real shape (cuDNN autotuning, the fused decode kernels), the host copy and an
    encode (PyAV/libx264 loaded) -- so that the first timed video of a process is not slower than the rest. TokenTrim
    is off (its pruned shapes depend on the prompt). Returns its seconds (logged; README: warm-up per process)."""
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (1, num_frames, backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    noise = torch.randn(shape, generator=generator, device=device)  # latents in fp32 (see _generate_one)
    trim, pipeline.trim = pipeline.trim, None
    try:
        latents = pipeline(noise, backbone.encode_prompt(prompt), noise_source=lambda s: torch.randn(s, generator=generator, device=device))
    finally:
        pipeline.trim = trim
    frames, ready = _to_host(backbone.decode(latents))
    _wait(ready)
    with tempfile.TemporaryDirectory(prefix="tokentrim-warm-up-") as tmp:  # a few frames: loads the encoder
        write_video(Path(tmp) / "warm_up.mp4", frames[:2].numpy(), backbone.fps, encoding_name=encoding_name)
    seconds = time.perf_counter() - start
    logger.info("warm-up: %.2fs (%d latent frames, decode, host copy, encode; untimed)", seconds, num_frames)
    return seconds


def _to_host(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """uint8 frames `[T, H, W, 3]` on the device -> the same on the host in ONE copy (CUDA: into pinned memory,
    non-blocking; the returned event marks its end, waited for by whoever reads the frames)."""
    if pixels.device.type != "cuda":
        return pixels.cpu(), None
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)  # [T, H, W, 3]; torch caches pinned blocks
    host.copy_(pixels, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def _wait(ready: torch.cuda.Event | None) -> None:
    if ready is not None:
        ready.synchronize()


def _is_done(run_dir: Path, job: Job) -> bool:
    """Done = all three files exist; meta is written last (atomically), so a killed video is redone from scratch."""
    return all((run_dir / sub / f"{job.name}{ext}").exists() for sub, ext in (("videos", ".mp4"), ("events", ".jsonl"), ("meta", ".json")))


@dataclass
class Rendered:
    """One video rolled out and decoded on the device (what `render` returns)."""

    latents: torch.Tensor  # [1, T, C, h, w] fp32
    pixels: torch.Tensor  # [T_px, H, W, 3] uint8, on the device
    events: list[dict]
    wall_s: float  # rollout, synchronised
    decode_s: float  # decode, synchronised


def render(job: Job, backbone: Backbone, pipeline, num_frames: int, device: str) -> Rendered:
    """Roll out and decode `job` on the device, each part timed between device synchronisations (the GPU work of one
    video; `bench/cli_throughput.py` times the same function as the bench reference)."""
    generator = torch.Generator(device=device).manual_seed(job.seed)
    shape = (1, num_frames, backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    # latents stay fp32 whatever the model's dtype (the model casts its input; x0 / re-noising in fp32)
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)  # [1, T, C, h, w]
    events: list[dict] = []
    bar = tqdm(total=num_frames // backbone.sampler.get("block_frames", 3), desc="blocks", unit="block", leave=False)

    def on_event(event: dict) -> None:
        events.append({"video": job.name, **event})
        bar.update(1)

    context_kv = backbone.encode_prompt(job.prompt)
    _sync(device)
    start = time.perf_counter()
    latents = pipeline(
        noise, context_kv, noise_source=lambda s: torch.randn(s, generator=generator, device=device), on_event=on_event
    )
    _sync(device)
    wall_s = time.perf_counter() - start
    bar.close()
    start = time.perf_counter()
    pixels = backbone.decode(latents)  # [T_px, H, W, 3] uint8, on the device
    _sync(device)
    return Rendered(latents, pixels, events, wall_s, time.perf_counter() - start)


def _generate_one(job: Job, backbone: Backbone, pipeline, run_dir: Path, num_frames: int, cfg: DictConfig, device: str,
                  writer: BackgroundWriter) -> None:
    """Roll out and decode `job` on the device (timed, synchronised), then hand its frames to `writer`."""
    started_unix = time.time()
    video = render(job, backbone, pipeline, num_frames, device)
    latents, events, wall_s, decode_s = video.latents, video.events, video.wall_s, video.decode_s
    frames, ready = _to_host(video.pixels)  # one device -> host copy, overlapping the next rollout
    latents_cpu = latents[0].float().cpu().contiguous() if cfg.save_latents else None  # [T, C, h, w]
    meta = {
        "video": job.name,
        "prompt": job.prompt,
        "seed": job.seed,
        "backbone": backbone.name,
        "device": str(device),
        "trim": cfg.trim.name,
        "init": init_name(cfg.init),
        "num_frames": int(frames.shape[0]),
        "num_latent_frames": num_frames,
        "fps": backbone.fps,
        "encoding": cfg.video.encoding,
        "wall_s": wall_s,
        "decode_s": decode_s,
        "num_batches": len(events),
        "num_triggers": sum(bool(e["triggered"]) for e in events),
        "num_regenerations": sum(int(e["retries"]) for e in events),
        "num_pruned_tokens": sum(int(e["num_pruned_tokens"]) for e in events),
        "status": "ok",
        "error": "",
        "started_unix": started_unix,  # rollout start; finished_unix (meta written) is added by the writer
        "decoded_unix": time.time(),
    }
    task = functools.partial(_write_outputs, run_dir, job.name, frames, ready, events, latents_cpu, meta, backbone.fps,
                             cfg.video.encoding)
    writer.submit(job.name, task)  # blocks while video.writer_queue videos wait for the writer
    logger.info("%s: %.2fs generation, %.2fs decode, %d triggers", job.name, wall_s, decode_s, meta["num_triggers"])


def _write_outputs(run_dir: Path, name: str, frames: torch.Tensor, ready, events: list[dict],
                   latents: torch.Tensor | None, meta: dict, fps: float, encoding_name: str) -> None:
    """The writer's task for one video: mp4, latents, events, then meta LAST (the done marker)."""
    _wait(ready)
    start = time.perf_counter()
    write_video(run_dir / "videos" / f"{name}.mp4", frames.numpy(), fps, encoding_name=encoding_name)  # [T, H, W, 3]
    encode_s = time.perf_counter() - start
    if latents is not None:
        from safetensors.torch import save_file

        with atomic_path(run_dir / "latents" / f"{name}.safetensors") as tmp:  # unique per process
            save_file({"latents": latents}, str(tmp))
    write_text_atomic(run_dir / "events" / f"{name}.jsonl", "".join(json.dumps(e) + "\n" for e in events))
    write_json_atomic(run_dir / "meta" / f"{name}.json", {**meta, "encode_s": encode_s, "finished_unix": time.time()})


def write_manifest(run_dir: Path) -> Path:
    """videos.csv from meta/*.json (sorted by video name)."""
    rows = [json.loads(p.read_text()) for p in sorted((run_dir / "meta").glob("*.json")) if not p.name.startswith(".")]
    frame = pd.DataFrame(rows)
    return write_text_atomic(run_dir / "videos.csv", frame.to_csv(index=False))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
