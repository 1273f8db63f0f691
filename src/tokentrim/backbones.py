"""Build a generator backbone from `conf/backbone/*.yaml`: the causal DiT, its sampler, text encoding and VAE decoding.

Two kinds:
  * `tinyworld`: the embedded model shipped in the package (runs on CPU);
  * `wan`: the causal Wan2.1-T2V-1.3B backbones (Self Forcing, Rolling Forcing) from user-supplied files, or with
    `random_weights: true` the same compute on random weights (text embeddings are then seeded from the prompt).

Letters: T latent frames, C latent channels, h, w latent height/width, H, W pixels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tokentrim.models.split_attention import LSE_BACKENDS
from tokentrim.models.wan_causal import SDPA_BACKENDS, CausalWanModel, WanConfig, WanSpeedConfig

logger = logging.getLogger(__name__)

BACKBONE_KINDS = ("tinyworld", "wan")
PIPELINES = ("self_forcing", "rolling_forcing")
WAN_VAE_DTYPE = torch.bfloat16  # the Wan2.1 VAE runs in bf16 (SF/RF load it so; `WanVAE.from_wan_checkpoint` default)


@dataclass
class Backbone:
    """Everything generation needs, independent of the kind.

    `encode_prompt(prompt) -> context_kv`; `decode(latents [1, T, C, h, w]) -> uint8 [T_px, H, W, 3]`.
    """

    name: str
    pipeline: str
    model: CausalWanModel
    sampler: dict[str, Any]
    encode_prompt: Callable[[str], list]
    decode: Callable[[torch.Tensor], torch.Tensor]
    latent_channels: int
    latent_height: int
    latent_width: int
    fps: float
    num_latent_frames: int
    info: dict[str, Any] = field(default_factory=dict)


def check_backbone_config(cfg: Mapping[str, Any]) -> None:
    """One clear error per bad key, before any model is built."""
    kind = cfg.get("kind")
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"backbone.kind must be one of {list(BACKBONE_KINDS)}, got {kind!r}")
    if cfg.get("pipeline") not in PIPELINES:
        raise ValueError(f"backbone.pipeline must be one of {list(PIPELINES)}, got {cfg.get('pipeline')!r}")
    if kind == "wan":
        unknown = set(cfg.get("model", {})) - set(WanConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"backbone.model has unknown keys {sorted(unknown)}; allowed: {sorted(WanConfig.__dataclass_fields__)}")
    check_speed_config(cfg.get("speed") or {})
    guidance = (cfg.get("sampler") or {}).get("guidance_scale", 1.0)
    if kind != "tinyworld" and guidance != 1.0:
        raise ValueError(f"backbone.sampler.guidance_scale is for the TinyWorld model (trained with prompt dropout); "
                         f"the {cfg.get('name')} checkpoints are distilled without guidance: got {guidance}")
    frames = cfg.get("video", {}).get("num_latent_frames")
    if frames is not None and (not isinstance(frames, int) or frames < 1):
        raise ValueError(f"backbone.video.num_latent_frames must be a positive integer, got {frames!r}")


# `backbone.speed` decode lever -> its `WanVAE.set_decode_speed` argument
VAE_SPEED_KEYS = {"vae_channels_last": "channels_last_3d", "vae_cudnn_benchmark": "cudnn_benchmark",
                  "vae_fused_norm": "fused_norm", "vae_implicit_padding": "implicit_padding",
                  "vae_native_upsample": "native_upsample", "vae_subpixel_upsample": "subpixel_upsample",
                  "vae_cudnn_benchmark_all": "cudnn_benchmark_all"}
# `backbone.speed` DiT switch -> its `WanSpeedConfig` field
DIT_SPEED_KEYS = {"compile_blocks": "compile_blocks", "token_major": "token_major", "gelu_epilogue": "gelu_epilogue",
                  "cuda_graphs": "cuda_graphs"}
SWITCH_SPEED_KEYS = (*DIT_SPEED_KEYS, *VAE_SPEED_KEYS)  # auto | true | false
# levers whose `auto` is off: measured, but not worth their cost by default (bench/results/perf_summary_NVIDIA_H200_
# 202611.md). cuda_graphs: 0.7 % faster on an H200 for 0.35 GiB more memory than the official code's peak.
# vae_cudnn_benchmark_all: 5 % faster decodes for 20-45 s more on a process's first decode (pays off past ~500 videos).
AUTO_OFF_SPEED_KEYS = ("cuda_graphs", "vae_cudnn_benchmark_all")
SPEED_KEYS = ("attention_backends", "attention_kv_splits", *SWITCH_SPEED_KEYS)
#: `attention_kv_splits: auto` where CUDA, token-major and a kernel with a log-sum-exp are set (bench/results/
#: attention_kv_split_*: 2 splits were the best)
AUTO_KV_SPLITS = 2


def check_speed_config(speed: Mapping[str, Any]) -> None:
    """`backbone.speed`: execution levers of the DiT and the VAE decode (same math; bench/results/side_by_side_*.md)."""
    unknown = set(speed) - set(SPEED_KEYS)
    if unknown:
        raise ValueError(f"backbone.speed has unknown keys {sorted(unknown)}; allowed: {list(SPEED_KEYS)}")
    for key in SWITCH_SPEED_KEYS:
        value = speed.get(key, "auto")
        if value not in ("auto", True, False):
            raise ValueError(f"backbone.speed.{key} must be auto, true or false, got {value!r}")
    backends = speed.get("attention_backends", "auto")
    if backends != "auto" and (isinstance(backends, str) or any(b not in SDPA_BACKENDS for b in backends)):
        raise ValueError(f"backbone.speed.attention_backends must be auto or a list of {sorted(SDPA_BACKENDS)}, "
                         f"got {backends!r}")
    splits = speed.get("attention_kv_splits", "auto")
    if splits != "auto" and (isinstance(splits, bool) or not isinstance(splits, int) or splits < 1):
        raise ValueError(f"backbone.speed.attention_kv_splits must be auto or an integer >= 1, got {splits!r}")
    if splits != "auto" and splits > 1 and speed.get("token_major", "auto") is False:
        raise ValueError(f"backbone.speed.attention_kv_splits={splits} needs backbone.speed.token_major (it is false)")


def _switch_on(speed: Mapping[str, Any], key: str, device: str) -> bool:
    """One auto | true | false lever of `backbone.speed` (checked by `check_speed_config`); auto = on where CUDA
    (off for `AUTO_OFF_SPEED_KEYS`)."""
    value = speed.get(key, "auto")
    if value == "auto":
        return key not in AUTO_OFF_SPEED_KEYS and torch.device(device).type == "cuda"
    return bool(value)


def resolve_speed(speed: Mapping[str, Any], device: str) -> WanSpeedConfig:
    """`backbone.speed` -> `WanSpeedConfig`; `auto` = the fastest measured setting where the device is CUDA
    (compiled block regions, cuDNN then flash attention, token-major q/k/v and cache, the FFN's GELU in its GEMM's
    epilogue, the attention's keys in 2 chunks: bench/results/side_by_side_*; CUDA graphs stay off), eager SDPA
    elsewhere."""
    check_speed_config(speed)
    cuda = torch.device(device).type == "cuda"
    backends = speed.get("attention_backends", "auto")
    backends = (("cudnn", "flash") if cuda else ()) if backends == "auto" else tuple(backends)
    switches = {field: _switch_on(speed, key, device) for key, field in DIT_SPEED_KEYS.items()}
    lse_kernel = not cuda or any(b in LSE_BACKENDS for b in backends)  # CPU: torch's CPU flash kernel
    splits = speed.get("attention_kv_splits", "auto")
    if splits == "auto":
        splits = AUTO_KV_SPLITS if cuda and switches["token_major"] and lse_kernel else 1
    elif splits > 1 and not switches["token_major"]:
        raise ValueError(f"backbone.speed.attention_kv_splits={splits} needs backbone.speed.token_major on "
                         f"(it is {speed.get('token_major', 'auto')!r} on {device})")
    elif splits > 1 and not lse_kernel:
        raise ValueError(f"backbone.speed.attention_kv_splits={splits} needs one of {list(LSE_BACKENDS)} in "
                         f"backbone.speed.attention_backends, got {list(backends)}")
    return WanSpeedConfig(attention_backends=backends, attention_kv_splits=splits, **switches)


def resolve_vae_speed(speed: Mapping[str, Any], device: str) -> dict[str, bool]:
    """`backbone.speed` -> `WanVAE.set_decode_speed` kwargs; `auto` = on where the device is CUDA (channels-last
    Conv3d weights, cudnn.benchmark, the fused RMS norm + SiLU, implicit conv padding, native-dtype upsampling;
    bench/results/side_by_side_vae_*), off elsewhere."""
    check_speed_config(speed)
    return {argument: _switch_on(speed, key, device) for key, argument in VAE_SPEED_KEYS.items()}


def sampler_config(pipeline: str, sampler: Mapping[str, Any]):
    """The typed sampler config of a pipeline (validates every key)."""
    if pipeline == "self_forcing":
        from tokentrim.pipelines.self_forcing import SelfForcingConfig as config_cls
    else:
        from tokentrim.pipelines.rolling_forcing import RollingForcingConfig as config_cls
    allowed = set(config_cls.__dataclass_fields__)
    unknown = set(sampler) - allowed
    if unknown:
        raise ValueError(f"backbone.sampler has unknown keys {sorted(unknown)} for pipeline {pipeline}; allowed: {sorted(allowed)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in sampler.items()}
    return config_cls(**kwargs)


def resolved_sampler(cfg: Mapping[str, Any]) -> dict:
    """`backbone.sampler` as the pipeline gets it: the yaml's for `wan`; for TinyWorld, the overrides on top of the
    sampler its export ships (a JSON read, no weights)."""
    if cfg["kind"] != "tinyworld":
        return dict(cfg["sampler"])
    from tokentrim.tinyworld.backbone import shipped_sampler

    return {**shipped_sampler(cfg.get("weights_dir"), cfg.get("assets")), **dict(cfg.get("sampler") or {})}


def make_pipeline(backbone: Backbone, *, trim=None, flowmo=None):
    """The rollout loop of the backbone with a TokenTrim decider (or None) and a FlowMo config (or None)."""
    config = sampler_config(backbone.pipeline, backbone.sampler)
    if backbone.pipeline == "self_forcing":
        from tokentrim.pipelines.self_forcing import SelfForcingPipeline

        return SelfForcingPipeline(backbone.model, config, trim=trim, flowmo=flowmo)
    from tokentrim.pipelines.rolling_forcing import RollingForcingPipeline

    return RollingForcingPipeline(backbone.model, config, trim=trim, flowmo=flowmo)


def to_uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """[1, T, 3, H, W] in [-1, 1] -> uint8 [T, H, W, 3], the official pipelines' pixels: fp32 x*0.5+0.5, clamp, *255
    (Self Forcing / Rolling Forcing `inference.py`), then TRUNCATED to uint8 as torchvision's `write_video` does
    (`torch.as_tensor(video, dtype=torch.uint8)`), not rounded: rounding would make every frame ~0.5 level brighter."""
    frames = ((pixels[0].float() * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8)  # [T, 3, H, W], truncation
    return frames.permute(0, 2, 3, 1).contiguous()  # -> [T, H, W, 3]


def build_backbone(cfg: Mapping[str, Any], *, device: str, dtype: torch.dtype) -> Backbone:
    check_backbone_config(cfg)
    if cfg["kind"] == "tinyworld":
        return _build_tinyworld(cfg, device=device, dtype=dtype)
    return _build_wan(cfg, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- tinyworld
def _build_tinyworld(cfg: Mapping[str, Any], *, device: str, dtype: torch.dtype) -> Backbone:
    from tokentrim.tinyworld.backbone import load_tinyworld
    from tokentrim.tinyworld.prompts import guidance_prompts

    tw = load_tinyworld(device=device, dtype=dtype, weights_dir=cfg.get("weights_dir"), assets=cfg.get("assets"))
    sampler = resolved_sampler(cfg)
    guided = sampler_config(cfg["pipeline"], sampler).guided
    model = tw.model

    @torch.no_grad()
    def encode_prompt(prompt: str) -> list:  # guided: the prompt's row, then the null prompt's
        return model.encode_context(tw.text_encoder.encode(guidance_prompts([prompt], guided)).to(device))

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return to_uint8_frames(tw.vae.decode(latents))

    frames = cfg.get("video", {}).get("num_latent_frames") or 5 * tw.train_window_latent_frames
    return Backbone(
        name=cfg["name"], pipeline=cfg["pipeline"], model=model, sampler=sampler, encode_prompt=encode_prompt,
        decode=decode, latent_channels=tw.latent_channels, latent_height=tw.latent_height,
        latent_width=tw.latent_width, fps=tw.fps, num_latent_frames=int(frames),
        info={"train_window_latent_frames": tw.train_window_latent_frames, "weights_git_sha": tw.git_sha},
    )


# ---------------------------------------------------------------------------------------------- wan
def check_wan_files(cfg: Mapping[str, Any]) -> None:
    """One clear line naming the first missing user-supplied file and its config key."""
    from tokentrim.models.loading import resolve_file, resolve_folder

    resolve_file(cfg["checkpoint"], what=f"{cfg['name']} checkpoint", config_key="backbone.checkpoint")
    resolve_file(cfg["vae_path"], what="Wan2.1 VAE", config_key="backbone.vae_path")
    resolve_file(cfg["text_encoder_path"], what="UMT5-XXL text encoder", config_key="backbone.text_encoder_path")
    resolve_folder(cfg["tokenizer_path"], what="umt5-xxl tokenizer folder", config_key="backbone.tokenizer_path")


def _build_wan(cfg: Mapping[str, Any], *, device: str, dtype: torch.dtype) -> Backbone:
    model_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(cfg["model"]).items()}
    video = cfg["video"]
    latent_height, latent_width = video["height"] // 8, video["width"] // 8  # Wan VAE: spatial stride 8
    random_weights = bool(cfg.get("random_weights"))
    if random_weights:
        logger.warning("backbone %s: RANDOM weights (random_weights=true): numbers are for timing/plumbing only", cfg["name"])
        with torch.device("meta"):
            model = CausalWanModel(**model_kwargs)
        model = model.to_empty(device=device)
        generator = torch.Generator(device="cpu").manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        model = model.to(dtype)
    else:
        from tokentrim.models.loading import load_self_forcing_checkpoint, load_state_dict_strict, resolve_file

        check_wan_files(cfg)  # every missing file is reported before the 1.3B load starts
        path = resolve_file(cfg["checkpoint"], what=f"{cfg['name']} checkpoint", config_key="backbone.checkpoint")
        state = load_self_forcing_checkpoint(path, use_ema=cfg.get("use_ema", True), kind=cfg.get("checkpoint_kind", "self_forcing"), dtype=dtype)
        with torch.device("meta"):
            model = CausalWanModel(**model_kwargs)
        load_state_dict_strict(model, state, source=str(path), assign=True)
        model = model.to(device=device, dtype=dtype)
    model.eval().requires_grad_(False)
    speed = resolve_speed(cfg.get("speed") or {}, device)
    model.set_speed(speed)
    logger.info("backbone %s: speed levers %s", cfg["name"], speed)
    text_dim, text_len = model.config.text_dim, model.config.text_len

    if random_weights:
        @torch.no_grad()
        def encode_prompt(prompt: str) -> list:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
            g = torch.Generator(device="cpu").manual_seed(seed)
            text = torch.randn(1, text_len, text_dim, generator=g).to(device=device, dtype=dtype)
            return model.encode_context(text)

        from tokentrim.models.vae import WanVAE

        # the Wan2.1 VAE architecture (or `backbone.vae_config`, for small tests), randomly initialised, in the dtype
        # the released VAE is loaded in, so the decode's compute is the real one
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(0)
            vae = WanVAE(**dict(cfg.get("vae_config") or {})).to(device=device, dtype=WAN_VAE_DTYPE)
    else:
        from tokentrim.models.text_encoder import WanTextEncoder
        from tokentrim.models.vae import WanVAE

        text_encoder = WanTextEncoder.from_files(cfg["text_encoder_path"], cfg["tokenizer_path"], dtype=dtype, cache_dir=cfg.get("text_cache_dir"))
        text_encoder = text_encoder.to(device)
        vae = WanVAE.from_wan_checkpoint(cfg["vae_path"], dtype=WAN_VAE_DTYPE).to(device)

        @torch.no_grad()
        def encode_prompt(prompt: str) -> list:
            return model.encode_context(text_encoder([prompt]).to(device=device, dtype=dtype))

    vae_speed = resolve_vae_speed(cfg.get("speed") or {}, device)
    vae.set_decode_speed(**vae_speed)
    logger.info("backbone %s: VAE decode levers %s", cfg["name"], vae_speed)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        chunks = list(vae.decode_stream(latents.float().split(3, dim=1)))  # streaming: bounded memory
        return to_uint8_frames(torch.cat(chunks, dim=1))

    return Backbone(
        name=cfg["name"], pipeline=cfg["pipeline"], model=model, sampler=dict(cfg["sampler"]),
        encode_prompt=encode_prompt, decode=decode, latent_channels=model.config.in_dim,
        latent_height=latent_height, latent_width=latent_width, fps=float(video["fps"]),
        num_latent_frames=int(video["num_latent_frames"]), info={"random_weights": random_weights},
    )
