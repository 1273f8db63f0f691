"""The embedded TinyWorld backbone: the shipped tiny causal Wan DiT + tiny Wan VAE + grammar text encoder.

Trained by `scripts/train_tinyworld.py` (numbers and commands: results/tinyworld/README.md) and shipped in
`tokentrim/assets/tinyworld/`: `config.json` (every constructor argument, the sampler, the video format, the git sha
of the training code, sha256 of each weight file) and three fp16 safetensors files (`dit`, `text_encoder`, `vae`).
Loading is strict: exact key sets and shapes, one clear error naming the file otherwise.

Latents are `[B, F, C, h, w]` (C = `latent_channels`); `vae.decode` turns them into pixels `[B, T, 3, H, W]` in
[-1, 1] with T = 1 + 4 (F - 1) (Wan's causal VAE; `vae.stream_decoder()` decodes block by block).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from tokentrim.models.vae import WanVAE
from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.tinyworld.text_encoder import TinyTextEncoder

logger = logging.getLogger(__name__)

WEIGHT_FILES: tuple[str, ...] = ("dit.safetensors", "text_encoder.safetensors", "vae.safetensors")
CONFIG_FILE = "config.json"
BLOCK_FRAMES = 3


@dataclass
class TinyWorldBackbone:
    """What `tokentrim run` needs to generate TinyWorld videos (see the module docstring for the tensor contract)."""

    model: CausalWanModel  # eval, requires_grad False
    vae: WanVAE  # decode(latents [B, F, C, h, w]) -> pixels [B, T, 3, H, W] in [-1, 1]
    text_encoder: TinyTextEncoder  # encode(prompts: list[str]) -> text_embeds [B, S, text_dim]
    sampler: dict  # SelfForcingConfig kwargs (4 warped steps, block 3, max_frames = window, sink_frames = 3)
    height: int
    width: int
    fps: float
    latent_channels: int
    latent_height: int
    latent_width: int
    train_window_latent_frames: int
    git_sha: str


DEFAULT_ASSETS = "tinyworld"  # the packaged export `backbone=tiny` loads; `backbone=tiny_drift` loads "tinyworld_drift"


def default_weights_dir(assets: str = DEFAULT_ASSETS) -> Path:
    """The packaged `tokentrim/assets/<assets>` folder (`backbone.assets`)."""
    return Path(str(resources.files("tokentrim") / "assets" / assets))


def weights_folder(weights_dir: str | os.PathLike | None = None, assets: str | None = None) -> Path:
    """The export folder a TinyWorld backbone loads: `backbone.weights_dir` when set, else the packaged
    `tokentrim/assets/<backbone.assets>` (default "tinyworld"). The one place this choice is made.

    Raises:
        ValueError: `assets` names no packaged folder (one line naming the key and the folders that exist).
    """
    if weights_dir:
        return Path(weights_dir)
    name = assets or DEFAULT_ASSETS
    folder = default_weights_dir(name)
    if "/" in name or name.startswith(".") or not folder.is_dir():
        root = Path(str(resources.files("tokentrim") / "assets"))
        shipped = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        raise ValueError(f"backbone.assets must name a packaged TinyWorld export, one of {shipped}, got {name!r}")
    return folder


def read_export_config(folder: Path) -> dict:
    """`config.json` of an export folder, checked for the keys a loader needs (one-line errors)."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"TinyWorld model file {path} is missing (re-install tokentrim or re-export with "
                                f"scripts/train_tinyworld.py stages=[export])")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"TinyWorld model file {path} is not valid JSON: {err}") from err
    for key in ("dit", "text_encoder", "vae", "sampler", "video", "train_window_latent_frames"):
        if key not in config:
            raise ValueError(f"TinyWorld model file {path} lacks the key {key!r}")
    return config


def shipped_sampler(weights_dir: str | os.PathLike | None = None, assets: str | None = None) -> dict:
    """The sampler an export ships (`config.json` `sampler`), read without loading any weights."""
    return dict(read_export_config(weights_folder(weights_dir, assets))["sampler"])


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"TinyWorld model file {path} is missing (re-install tokentrim or re-export with "
                                f"scripts/train_tinyworld.py stages=[export])")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"TinyWorld model file {path} is not a readable safetensors file: {err}") from err


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"TinyWorld model file {path} does not match its config: missing keys {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"TinyWorld model file {path}: {key} has shape {list(value.shape)}, the config needs "
                             f"{list(expected[key].shape)}")
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True)


def load_tinyworld(device: str = "cpu", dtype: torch.dtype = torch.float32,
                   weights_dir: str | None = None, assets: str | None = None) -> TinyWorldBackbone:
    """Load a packaged TinyWorld model (`assets`, default the shipped "tinyworld") or an export in `weights_dir`
    for inference on `device` in `dtype`."""
    folder = weights_folder(weights_dir, assets)
    config = read_export_config(folder)

    model = CausalWanModel(**config["dit"])
    _load_strict(model, _read_weights(folder / "dit.safetensors"), folder / "dit.safetensors", dtype)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    text_encoder = TinyTextEncoder(**config["text_encoder"])
    _load_strict(text_encoder, _read_weights(folder / "text_encoder.safetensors"),
                 folder / "text_encoder.safetensors", dtype)
    text_encoder = text_encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)

    vae_path = folder / "vae.safetensors"
    vae_state = _read_weights(vae_path)
    try:
        vae = WanVAE.from_config_and_state_dict(config["vae"], vae_state, source=str(vae_path), dtype=dtype)
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"TinyWorld model file {vae_path} does not match its config: {err}") from err
    vae = vae.to(device).eval().requires_grad_(False)

    video = config["video"]
    spatial = vae.spatial_factor
    return TinyWorldBackbone(
        model=model,
        vae=vae,
        text_encoder=text_encoder,
        sampler=dict(config["sampler"]),
        height=int(video["height"]),
        width=int(video["width"]),
        fps=float(video["fps"]),
        latent_channels=int(config["vae"]["z_dim"]),
        latent_height=int(video["height"]) // spatial,
        latent_width=int(video["width"]) // spatial,
        train_window_latent_frames=int(config["train_window_latent_frames"]),
        git_sha=str(config.get("git_sha", "unknown")),
    )


def latent_frames_for_seconds(seconds: float, fps: float) -> int:
    """Fewest latent frames, a multiple of the 3-frame block, whose decoded video (1 + 4 (F - 1) frames) lasts at
    least `seconds` at `fps`."""
    if not seconds > 0 or not fps > 0:
        raise ValueError(f"seconds and fps must be > 0, got seconds={seconds}, fps={fps}")
    pixel = math.ceil(seconds * fps - 1e-9)
    latent = 1 + max(0, math.ceil((pixel - 1) / 4))
    return BLOCK_FRAMES * math.ceil(latent / BLOCK_FRAMES)
