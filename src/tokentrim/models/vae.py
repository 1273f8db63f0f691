"""Wan2.1 VAE (causal 3-D conv, stride 4x8x8) on top of diffusers' `AutoencoderKLWan`, with a streaming decoder.

The network is diffusers' (0.33+); this module adds what the harness needs around it:
- loading the official `Wan2.1_VAE.pth` (original key names, converted here for any config) or a diffusers `vae/`
  folder, always from an explicit config (never `from_single_file`, which may fetch a config from the Hub);
- Wan's latent normalisation z = (mu - mean) / std and its inverse (SF `utils/wan_wrapper.py::WanVAEWrapper`);
- a streaming decode that keeps each causal conv's 2-frame feature cache across chunks, so decoding a video block by
  block equals decoding it in one call (backbones.md §3.1, §7).

Letters: B batch, F latent frames, C = z_dim latent channels, h, w latent size, T pixel frames, H, W pixel size.
Latents are `[B, F, C, h, w]`, pixels `[B, T, 3, H, W]` in [-1, 1]. The first latent frame decodes to 1 pixel frame
and every later one to 2**sum(temperal_downsample) frames (4 for Wan: T = 1 + 4 (F - 1)).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from torch import nn

from tokentrim.models.loading import (
    EXPECTED_EXAMPLES,
    cast_floating,
    load_state_dict_strict,
    read_safetensors_folder,
    read_tensor_file,
    resolve_file,
    resolve_folder,
)
from tokentrim.models.vae_decode_fusion import (
    fuse_decoder_norms,
    implicit_padding_convs,
    native_upsampling,
    subpixel_upsampling,
    unfuse_decoder_norms,
)
from tokentrim.models.vae_full_sequence import encode_full_sequence

logger = logging.getLogger(__name__)

#: Per-channel latent statistics of the Wan2.1 VAE (SF `WanVAEWrapper`; equal to diffusers' defaults).
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# Config keys of a diffusers AutoencoderKLWan config.json that must keep their Wan2.1 values here.
_FIXED_DIFFUSERS_KEYS = {"is_residual": False, "in_channels": 3, "out_channels": 3, "patch_size": None,
                         "attn_scales": [], "dropout": 0.0}
_CONFIG_KEYS = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample", "latents_mean",
                "latents_std")


# ---------------------------------------------------------------------------------------------- key mapping
# Inside a Wan `ResidualBlock`: residual = Sequential(RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout,
# CausalConv3d), shortcut = CausalConv3d | Identity (SF `wan/modules/vae.py`); diffusers names them as below.
_RESNET_LEAVES = (("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
                  ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut."))


def _rename_prefix(rest: str, table: Sequence[tuple[str, str]]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def original_to_diffusers_vae_key(key: str, *, num_res_blocks: int, num_levels: int) -> str:
    """Map one original Wan VAE key (`Wan2.1_VAE.pth`) to its `AutoencoderKLWan` name, for any config.

    Structure (SF `wan/modules/vae.py` vs diffusers `autoencoder_kl_wan.py`): top-level `conv1`/`conv2` are
    `quant_conv`/`post_quant_conv`; in encoder and decoder `conv1` is `conv_in`, `head.0`/`head.2` are
    `norm_out`/`conv_out`, `middle.{0,1,2}` are `mid_block.resnets.0`, `.attentions.0`, `.resnets.1`. The encoder's flat
    `downsamples.j` keeps its index as `down_blocks.j`. The decoder's flat `upsamples.j` is grouped per level:
    each level has num_res_blocks + 1 residual blocks then one `Resample` (none after the last level).

    Args:
        num_res_blocks: residual blocks per encoder level (Wan: 2).
        num_levels: len(dim_mult) (Wan: 4).
    """
    if key.startswith("conv1."):
        return "quant_conv." + key[len("conv1."):]
    if key.startswith("conv2."):
        return "post_quant_conv." + key[len("conv2."):]
    match = re.match(r"^(encoder|decoder)\.(.+)$", key)
    if match is None:
        raise ValueError(f"VAE key {key!r} is not under encoder./decoder./conv1./conv2. (original Wan layout)")
    side, rest = match.groups()
    if rest.startswith("conv1."):
        return f"{side}.conv_in.{rest[len('conv1.'):]}"
    if rest.startswith("head.0."):
        return f"{side}.norm_out.{rest[len('head.0.'):]}"
    if rest.startswith("head.2."):
        return f"{side}.conv_out.{rest[len('head.2.'):]}"
    middle = re.match(r"^middle\.(\d)\.(.+)$", rest)
    if middle:
        index, inner = int(middle.group(1)), middle.group(2)
        target = {0: "resnets.0", 1: "attentions.0", 2: "resnets.1"}.get(index)
        if target is None:
            raise ValueError(f"VAE key {key!r}: middle index must be 0, 1 or 2")
        return f"{side}.mid_block.{target}.{_rename_prefix(inner, _RESNET_LEAVES)}"
    flat = re.match(r"^(downsamples|upsamples)\.(\d+)\.(.+)$", rest)
    if flat and side == "encoder" and flat.group(1) == "downsamples":
        return f"encoder.down_blocks.{flat.group(2)}.{_rename_prefix(flat.group(3), _RESNET_LEAVES)}"
    if flat and side == "decoder" and flat.group(1) == "upsamples":
        per_level = num_res_blocks + 2  # (num_res_blocks + 1) residual blocks + 1 Resample
        level, position = divmod(int(flat.group(2)), per_level)
        inner = _rename_prefix(flat.group(3), _RESNET_LEAVES)
        if level >= num_levels or (level == num_levels - 1 and position > num_res_blocks):
            raise ValueError(f"VAE key {key!r}: upsample index beyond {num_levels} levels x {per_level} modules")
        if position <= num_res_blocks:
            return f"decoder.up_blocks.{level}.resnets.{position}.{inner}"
        return f"decoder.up_blocks.{level}.upsamplers.0.{inner}"
    raise ValueError(f"VAE key {key!r} has no counterpart in diffusers' AutoencoderKLWan")


def diffusers_to_original_vae_key(key: str, *, num_res_blocks: int) -> str:
    """Inverse of `original_to_diffusers_vae_key`."""
    inverse_leaves = tuple((new, old) for old, new in _RESNET_LEAVES)
    if key.startswith("quant_conv."):
        return "conv1." + key[len("quant_conv."):]
    if key.startswith("post_quant_conv."):
        return "conv2." + key[len("post_quant_conv."):]
    match = re.match(r"^(encoder|decoder)\.(.+)$", key)
    if match is None:
        raise ValueError(f"VAE key {key!r} is not under encoder./decoder./quant_conv./post_quant_conv.")
    side, rest = match.groups()
    for new, old in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(new):
            return f"{side}.{old}{rest[len(new):]}"
    middle = re.match(r"^mid_block\.(resnets\.0|attentions\.0|resnets\.1)\.(.+)$", rest)
    if middle:
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[middle.group(1)]
        return f"{side}.middle.{index}.{_rename_prefix(middle.group(2), inverse_leaves)}"
    down = re.match(r"^down_blocks\.(\d+)\.(.+)$", rest)
    if down and side == "encoder":
        return f"encoder.downsamples.{down.group(1)}.{_rename_prefix(down.group(2), inverse_leaves)}"
    up = re.match(r"^up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", rest)
    if up and side == "decoder":
        level = int(up.group(1))
        position = int(up.group(3)) if up.group(3) is not None else num_res_blocks + 1
        index = level * (num_res_blocks + 2) + position
        return f"decoder.upsamples.{index}.{_rename_prefix(up.group(4), inverse_leaves)}"
    raise ValueError(f"VAE key {key!r} has no counterpart in the original Wan VAE layout")


def is_original_vae_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for `Wan2.1_VAE.pth` names (`decoder.conv1.weight`), False for diffusers' (`decoder.conv_in.weight`)."""
    return "decoder.conv1.weight" in state_dict


def convert_original_vae_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, num_res_blocks: int, num_levels: int
) -> dict[str, torch.Tensor]:
    """Rename a `Wan2.1_VAE.pth` state dict to `AutoencoderKLWan` names (tensors shared, not copied)."""
    return {original_to_diffusers_vae_key(k, num_res_blocks=num_res_blocks, num_levels=num_levels): v
            for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------- model
class WanVAE(nn.Module):
    """Wan2.1 VAE with latent normalisation and streaming decode. Defaults are the released Wan2.1 VAE.

    Args:
        base_dim: channels of the first level (Wan: 96).
        z_dim: latent channels C (Wan: 16).
        dim_mult: channel multiplier per level (Wan: (1, 2, 4, 4)); spatial stride is 2**(len(dim_mult) - 1).
        num_res_blocks: residual blocks per encoder level (Wan: 2).
        temperal_downsample: per level transition, whether time is halved (Wan: (False, True, True)); diffusers'
            spelling is kept so a diffusers `config.json` can be passed as is.
        latents_mean, latents_std: per-channel statistics, length z_dim; default to Wan2.1's when z_dim is 16.
    """

    def __init__(
        self,
        *,
        base_dim: int = 96,
        z_dim: int = 16,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temperal_downsample: Sequence[bool] = (False, True, True),
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
    ):
        super().__init__()
        if len(temperal_downsample) != len(dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs len(dim_mult) - 1 = {len(dim_mult) - 1} entries, "
                             f"got {list(temperal_downsample)}")
        if latents_mean is None and latents_std is None and z_dim == len(WAN21_LATENTS_MEAN):
            latents_mean, latents_std = WAN21_LATENTS_MEAN, WAN21_LATENTS_STD
        if latents_mean is None or latents_std is None or not len(latents_mean) == len(latents_std) == z_dim:
            raise ValueError(f"latents_mean and latents_std need z_dim={z_dim} entries each, got "
                             f"{None if latents_mean is None else len(latents_mean)} and "
                             f"{None if latents_std is None else len(latents_std)}")
        self.config = {
            "base_dim": int(base_dim), "z_dim": int(z_dim), "dim_mult": [int(m) for m in dim_mult],
            "num_res_blocks": int(num_res_blocks), "temperal_downsample": [bool(t) for t in temperal_downsample],
            "latents_mean": [float(m) for m in latents_mean], "latents_std": [float(s) for s in latents_std],
        }
        self.autoencoder = AutoencoderKLWan(**self.config)
        self.temporal_factor = 2 ** sum(self.config["temperal_downsample"])
        self.spatial_factor = 2 ** (len(self.config["dim_mult"]) - 1)
        self.num_decoder_convs = self.autoencoder._cached_conv_counts["decoder"]
        self.decode_cudnn_benchmark = False  # see set_decode_speed
        self.decode_cudnn_benchmark_all = False  # see set_decode_speed
        self.decode_frames_per_call = 1  # see set_decode_speed

    # ------------------------------------------------------------------ construction from files
    @classmethod
    def from_config_and_state_dict(
        cls,
        config: Mapping[str, object],
        state_dict: Mapping[str, torch.Tensor],
        *,
        source: str,
        dtype: torch.dtype = torch.bfloat16,
    ) -> WanVAE:
        """Build from a config (our kwargs, or a diffusers AutoencoderKLWan `config.json` dict) and a state dict in
        original Wan or diffusers key names. The model is built on the meta device and the tensors are assigned."""
        kwargs = _vae_kwargs_from_config(config, source=source)
        with torch.device("meta"):
            vae = cls(**kwargs)
        if is_original_vae_layout(state_dict):
            state_dict = convert_original_vae_state_dict(
                state_dict, num_res_blocks=kwargs["num_res_blocks"], num_levels=len(kwargs["dim_mult"])
            )
        load_state_dict_strict(vae.autoencoder, cast_floating(state_dict, dtype), source=source, assign=True)
        return vae.eval().requires_grad_(False)

    @classmethod
    def from_wan_checkpoint(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        config_key: str = "backbone.vae_path",
        **config: object,
    ) -> WanVAE:
        """From the official `Wan2.1_VAE.pth` (or any tensor file in original/diffusers names); `config` overrides the
        Wan2.1 defaults for non-standard VAEs."""
        path = resolve_file(path, what="Wan VAE weights", config_key=config_key, example=EXPECTED_EXAMPLES["vae"])
        state_dict = read_tensor_file(path)
        return cls.from_config_and_state_dict(
            config, state_dict, source=str(path), dtype=dtype  # type: ignore[arg-type]
        )

    @classmethod
    def from_diffusers_folder(
        cls, folder: str | Path, *, dtype: torch.dtype = torch.bfloat16, config_key: str = "backbone.vae_path"
    ) -> WanVAE:
        """From a diffusers `vae/` folder (`config.json` + `diffusion_pytorch_model*.safetensors`) or its parent."""
        folder = resolve_folder(folder, what="Wan VAE folder", config_key=config_key,
                                example=".../Wan2.1-T2V-1.3B-Diffusers/vae")
        if (folder / "vae" / "config.json").is_file():
            folder = folder / "vae"
        config_path = resolve_file(folder / "config.json", what="Wan VAE config.json", config_key=config_key,
                                   example=".../Wan2.1-T2V-1.3B-Diffusers/vae/config.json")
        config = json.loads(config_path.read_text())
        if config.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
            raise ValueError(f"{config_path}: _class_name must be 'AutoencoderKLWan', got {config['_class_name']!r}")
        state_dict = read_safetensors_folder(folder, stem="diffusion_pytorch_model", config_key=config_key)
        return cls.from_config_and_state_dict(config, state_dict, source=str(folder), dtype=dtype)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write `config.json` + `diffusion_pytorch_model.safetensors` (diffusers names), each atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "AutoencoderKLWan", **self.config}
        _atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
        tensors = {k: v.detach().contiguous() for k, v in self.autoencoder.state_dict().items()}
        _atomic_write(folder / "diffusion_pytorch_model.safetensors", lambda tmp: save_file(tensors, tmp))

    # ------------------------------------------------------------------ normalisation
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std as `[1, 1, C, 1, 1]` float32 on `like`'s device."""
        shape = (1, 1, self.config["z_dim"], 1, 1)
        mean = torch.tensor(self.config["latents_mean"], dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(self.config["latents_std"], dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """z = (mu - mean) / std, in float32 (SF `WanVAEWrapper.encode_to_latent`). mu: [B, F, C, h, w]."""
        mean, std = self._stats(mu)
        return (mu.float() - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """mu = z * std + mean, in float32 (SF `WanVAEWrapper.decode_to_pixel`). latents: [B, F, C, h, w]."""
        mean, std = self._stats(latents)
        return latents.float() * std + mean

    # ------------------------------------------------------------------ encode / decode
    @property
    def dtype(self) -> torch.dtype:
        return self.autoencoder.post_quant_conv.weight.dtype

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, *, full_sequence: bool = False) -> torch.Tensor:
        """Pixels `[B, T, 3, H, W]` in [-1, 1] -> normalised posterior means `[B, F, C, h, w]` (float32).

        T must be 1 + 4k (diffusers encodes the first frame, then chunks of 4; Wan's encoder does the same).
        `full_sequence=True` computes the same numbers in one pass over the clip (`vae_full_sequence`; for long
        clips on a GPU, where the chunk loop is launch-bound).
        """
        batch_size, num_frames, channels, height, width = pixels.shape
        if channels != 3 or (num_frames - 1) % 4 or height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(f"pixels must be [B, 1+4k, 3, H, W] with H, W divisible by {self.spatial_factor}, "
                             f"got {list(pixels.shape)}")
        x = pixels.transpose(1, 2).to(self.dtype)  # [B, T, 3, H, W] -> [B, 3, T, H, W]
        if full_sequence:
            moments = encode_full_sequence(self.autoencoder, x)  # [B, 2C, F, h, w]
        else:
            moments = self.autoencoder._encode(x)  # what autoencoder.encode wraps (no tiling/slicing here)
        mu = moments[:, : self.config["z_dim"]].transpose(1, 2)  # posterior means [B, C, F, h, w] -> [B, F, C, h, w]
        return self.normalize(mu)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents `[B, F, C, h, w]` -> pixels `[B, T, 3, H, W]` in [-1, 1] (float32), in one call."""
        return self.stream_decoder().decode_chunk(latents)

    def decode_stream(self, latent_chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode consecutive latent chunks of ONE video; yields one pixel chunk per latent chunk.

        The causal feature cache carries across chunks, so `torch.cat(list(decode_stream(chunks)), 1)` equals
        `decode(torch.cat(chunks, 1))`. Chunk 0's first latent gives 1 frame, every other latent gives 4.
        """
        decoder = self.stream_decoder()
        for chunk in latent_chunks:
            yield decoder.decode_chunk(chunk)

    def set_decode_speed(self, *, channels_last_3d: bool, cudnn_benchmark: bool, fused_norm: bool = False,
                         implicit_padding: bool = False, native_upsample: bool = False,
                         subpixel_upsample: bool = False, cudnn_benchmark_all: bool = False,
                         frames_per_call: int = 1) -> None:
        """Execution levers of the decode (same math up to float rounding; on an H100, 81 frames at 480x832 in bf16:
        1.851 s -> 1.513 s with the first two, 1.17-1.28 s with the first five; bench/results/side_by_side_*H100*;
        on an H200 1.66 s -> 0.95 s with the six that are on by default since the fused norm runs over channel
        rows, 1.13 s before that; bench/results/side_by_side_NVIDIA_H200_202611_j.*).

        Args:
            channels_last_3d: store every Conv3d weight channels-last (cuDNN then runs the convolutions in NDHWC);
                False restores the default layout.
            cudnn_benchmark: let cuDNN time its convolution algorithms during decoding
                (`torch.backends.cudnn.benchmark`, set only inside the decode and restored after it). Algorithm
                choice may differ between runs, so results are reproducible to float rounding, not bit for bit.
            fused_norm: each RMS norm + SiLU of the decoder runs as one compiled kernel (`vae_decode_fusion`;
                torch.compile on first use); False restores diffusers' modules.
            implicit_padding: the decoder's causal convolutions pad H and W inside cuDNN instead of copying the
                padded activation (`vae_decode_fusion`); False restores diffusers' forward.
            native_upsample: nearest upsampling in the activation's dtype instead of a float32 round trip (the same
                bits; `vae_decode_fusion`); False restores diffusers' forward.
            subpixel_upsample: each nearest x2 + 3x3 convolution runs as four 2x2 phase kernels on the
                low-resolution input (2.25x fewer FLOPs there, no upsampled copy; same math up to the rounding of the
                summed taps; `vae_decode_fusion`); False restores diffusers' forward.
            frames_per_call: latent frames per decoder call after a video's first latent frame (which is always
                decoded alone: its temporal upsampling differs). diffusers and the official code use 1; k > 1 runs
                the same causal convolutions over k frames at once (fewer, larger kernels; activations k times
                larger).
            cudnn_benchmark_all: with `cudnn_benchmark`, time every candidate algorithm of each convolution shape
                (`torch.backends.cudnn.benchmark_limit = 0`, inside the decode only) instead of torch's first 10. On
                an H200, before the rows form of the fused norm: 1.125 -> 1.065 s per decode, for 20-45 s more on
                the process's first decode (not re-measured since).
        """
        if not isinstance(frames_per_call, int) or frames_per_call < 1:
            raise ValueError(f"frames_per_call must be a positive integer, got {frames_per_call!r}")
        self.decode_frames_per_call = frames_per_call
        self.decode_cudnn_benchmark_all = bool(cudnn_benchmark_all)
        layout = torch.channels_last_3d if channels_last_3d else torch.contiguous_format
        with torch.no_grad():
            for param in self.autoencoder.parameters():
                if param.dim() == 5:  # Conv3d weights [out, in, t, h, w]
                    param.data = param.data.contiguous(memory_format=layout)
        self.decode_cudnn_benchmark = bool(cudnn_benchmark)
        if fused_norm:
            fuse_decoder_norms(self.autoencoder.decoder, compile=True)
        else:
            unfuse_decoder_norms(self.autoencoder.decoder)
        implicit_padding_convs(self.autoencoder.decoder, bool(implicit_padding))
        native_upsampling(self.autoencoder.decoder, bool(native_upsample))
        subpixel_upsampling(self.autoencoder.decoder, bool(subpixel_upsample))

    def stream_decoder(self) -> WanVAEStreamDecoder:
        """A fresh streaming decoder (one per video) for pipelines that push chunks as they are generated."""
        return WanVAEStreamDecoder(self)


class WanVAEStreamDecoder:
    """Decoder state of one video: the per-conv cache of the last 2 time steps (diffusers `_feat_map`, CACHE_T = 2).

    diffusers' `AutoencoderKLWan.decode` clears this cache at the start and end of every call, so it cannot stream
    (backbones.md §7); we hold the cache here and drive `autoencoder.decoder` one latent frame at a time, exactly like
    `AutoencoderKLWan._decode`. `snapshot()`/`restore()` allow a pipeline to roll back a rejected chunk.
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.feat_cache: list[object] = [None] * vae.num_decoder_convs
        self.num_latents_decoded = 0
        self.batch_size: int | None = None

    def snapshot(self) -> tuple[list[object], int, int | None]:
        return list(self.feat_cache), self.num_latents_decoded, self.batch_size

    def restore(self, state: tuple[list[object], int, int | None]) -> None:
        cache, self.num_latents_decoded, self.batch_size = state
        self.feat_cache = list(cache)

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents `[B, F, C, h, w]` (the video's next F frames) -> pixels `[B, T, 3, H, W]`, float32."""
        batch_size, num_frames, channels, height, width = latents.shape
        if channels != self.vae.config["z_dim"]:
            raise ValueError(
                f"latents must have C={self.vae.config['z_dim']} channels at dim 2, got {list(latents.shape)}"
            )
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ValueError(
                f"batch size changed mid-video: first chunk had B={self.batch_size}, this one {batch_size}"
            )
        self.batch_size = batch_size
        autoencoder = self.vae.autoencoder
        z = self.vae.denormalize(latents).to(self.vae.dtype).transpose(1, 2)  # [B, F, C, h, w] -> [B, C, F, h, w]
        frames = []
        with _cudnn_benchmark(self.vae.decode_cudnn_benchmark, 0 if self.vae.decode_cudnn_benchmark_all else None):
            x = autoencoder.post_quant_conv(z)  # 1x1x1 conv: no temporal state
            i = 0
            while i < num_frames:
                first = self.num_latents_decoded == 0
                step = 1 if first else self.vae.decode_frames_per_call  # the video's first latent goes alone
                out = autoencoder.decoder(
                    x[:, :, i : i + step],  # [B, C, k, h, w]
                    feat_cache=self.feat_cache,
                    feat_idx=[0],
                    first_chunk=first,
                )  # [B, 3, 1 (first latent) or 4k, H, W]
                frames.append(out)
                taken = min(step, num_frames - i)
                self.num_latents_decoded += taken
                i += taken
        pixels = torch.cat(frames, dim=2).clamp(-1.0, 1.0)  # [B, 3, T, H, W]
        return pixels.transpose(1, 2).float()  # -> [B, T, 3, H, W]


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool, limit: int | None = None):
    """`torch.backends.cudnn.benchmark = True` (and `benchmark_limit = limit` unless None) inside the block if
    `enabled` (else untouched); restored after."""
    previous = torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit
    if enabled:
        torch.backends.cudnn.benchmark = True
        if limit is not None:
            torch.backends.cudnn.benchmark_limit = limit
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit = previous


def _vae_kwargs_from_config(config: Mapping[str, object], *, source: str) -> dict[str, object]:
    for key, required in _FIXED_DIFFUSERS_KEYS.items():
        if key in config and config[key] != required:
            raise ValueError(f"{source}: VAE config {key}={config[key]!r} is not supported (Wan2.1 needs {required!r})")
    decoder_base_dim = config.get("decoder_base_dim")
    if decoder_base_dim is not None and decoder_base_dim != config.get("base_dim", 96):
        raise ValueError(f"{source}: decoder_base_dim={decoder_base_dim!r} differs from base_dim (Wan2.2 layout)")
    unknown = set(config) - set(_CONFIG_KEYS) - set(_FIXED_DIFFUSERS_KEYS) - {
        "decoder_base_dim", "scale_factor_temporal", "scale_factor_spatial", "clip_output"
    }
    unknown = {k for k in unknown if not k.startswith("_")}
    if unknown:
        raise ValueError(f"{source}: unknown VAE config keys {sorted(unknown)} (known: {list(_CONFIG_KEYS)})")
    kwargs: dict[str, object] = {
        "base_dim": config.get("base_dim", 96),
        "z_dim": config.get("z_dim", 16),
        "dim_mult": tuple(config.get("dim_mult", (1, 2, 4, 4))),  # type: ignore[arg-type]
        "num_res_blocks": config.get("num_res_blocks", 2),
        "temperal_downsample": tuple(config.get("temperal_downsample", (False, True, True))),  # type: ignore[arg-type]
    }
    for key in ("latents_mean", "latents_std"):
        if config.get(key) is not None:
            kwargs[key] = tuple(config[key])  # type: ignore[arg-type]
    return kwargs


def _atomic_write(path: Path, write) -> None:  # write(tmp_path_str) -> None
    from tokentrim.report.atomic_io import atomic_path

    with atomic_path(path) as tmp:
        write(str(tmp))
