"""Loaders for the real model files users download elsewhere: Self Forcing / Rolling Forcing training checkpoints,
the Wan2.1-T2V-1.3B release folder and its diffusers-format twin. Everything ends as a state dict in the ORIGINAL Wan
key names (`blocks.0.self_attn.q.weight`, `head.modulation`, ...), which `CausalWanModel` uses, and is loaded strictly.

Formats (see shared/research/backbones.md §2.6 and §7):
- SF/RF `*.pt`: `torch.load` gives `{"generator", "critic", "generator_ema"}`. `generator` is the FULL_STATE_DICT of
  SF's `WanDiffusionWrapper` (every key starts with `model.`); `generator_ema` is the fp32 EMA shadow, whose names can
  carry FSDP's `_fsdp_wrapped_module.` segments (RF's `inference.py` strips them).
- Wan release folder: `config.json` (`"_class_name": "WanModel"`) + `diffusion_pytorch_model*.safetensors`, sharded
  with `diffusion_pytorch_model.safetensors.index.json` for the large models.
- diffusers folder: `transformer/config.json` (`WanTransformer3DModel`) + safetensors in diffusers' names; the
  inverse of diffusers' `convert_wan_transformer_to_diffusers` (`loaders/single_file_utils.py`) maps them back.

Letters: D model dim, P = pt*ph*pw patch volume, Y layers.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Constructor kwargs of `CausalWanModel` for Wan2.1-T2V-1.3B (release `config.json`; backbones.md §2.1).
WAN_T2V_1_3B_CONFIG: dict[str, object] = {
    "patch_size": (1, 2, 2),
    "text_len": 512,
    "in_dim": 16,
    "dim": 1536,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "text_dim": 4096,
    "out_dim": 16,
    "num_heads": 12,
    "num_layers": 30,
    "eps": 1e-6,
}

#: Example file names used in missing-file messages, keyed by what is missing.
EXPECTED_EXAMPLES: dict[str, str] = {
    "self_forcing": ".../checkpoints/self_forcing_dmd.pt",
    "rolling_forcing": ".../checkpoints/rolling_forcing_dmd.pt",
    "wan_release": ".../Wan2.1-T2V-1.3B (folder with config.json + diffusion_pytorch_model.safetensors)",
    "diffusers": ".../Wan2.1-T2V-1.3B-Diffusers (folder with transformer/config.json)",
    "vae": ".../Wan2.1-T2V-1.3B/Wan2.1_VAE.pth",
    "t5": ".../Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth",
    "tokenizer": ".../Wan2.1-T2V-1.3B/google/umt5-xxl",
}

CHECKPOINT_KINDS = ("self_forcing", "rolling_forcing")

# Wrapper segments that FSDP, activation checkpointing and torch.compile insert into parameter names.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


# ---------------------------------------------------------------------------------------------- paths
def resolve_file(path: str | Path | None, *, what: str, config_key: str, example: str | None = None) -> Path:
    """Return `path` as a `Path` if it is an existing file, else raise one clear `FileNotFoundError` line.

    Args:
        path: the configured location (None or "" counts as missing).
        what: human name of the file, e.g. "Wan VAE weights".
        config_key: the config key that sets it, e.g. "backbone.vae_path".
        example: an example location for the message; defaults to `EXPECTED_EXAMPLES.get(what)`.
    """
    return _resolve(path, what=what, config_key=config_key, example=example, want_dir=False)


def resolve_folder(path: str | Path | None, *, what: str, config_key: str, example: str | None = None) -> Path:
    """Like `resolve_file`, for a folder (tokenizer, release or diffusers folder)."""
    return _resolve(path, what=what, config_key=config_key, example=example, want_dir=True)


def _resolve(path: str | Path | None, *, what: str, config_key: str, example: str | None, want_dir: bool) -> Path:
    example = example or EXPECTED_EXAMPLES.get(what)
    hint = f"set {config_key}" + (f"; expected e.g. {example}" if example else "")
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{what} not found: no path configured ({hint})")
    resolved = Path(path).expanduser()
    exists = resolved.is_dir() if want_dir else resolved.is_file()
    if not exists:
        found = " (it is a folder)" if resolved.is_dir() else " (it is a file)" if resolved.is_file() else ""
        raise FileNotFoundError(f"{what} not found at {resolved}{found} ({hint})")
    return resolved


# ---------------------------------------------------------------------------------------------- raw reading
def read_tensor_file(path: str | Path) -> dict[str, object]:
    """Read a `.safetensors` file or a `torch.save` file (weights_only=True, CPU, memory-mapped when zip-format).

    Memory mapping matters: an SF training checkpoint holds generator, critic and EMA (tens of GB in fp32), and only
    the tensors that are used are then paged in.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): {first_line} "
            "(this harness never unpickles arbitrary objects; re-save the tensors as a plain state dict)"
        ) from error


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return dict(load_file(str(path), device="cpu"))


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def read_safetensors_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """Names, shapes and dtypes of a `.safetensors` file as meta tensors, reading only its header."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensor_slice = handle.get_slice(key)
            dtype = _SAFETENSORS_DTYPES.get(tensor_slice.get_dtype())
            if dtype is None:
                raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {tensor_slice.get_dtype()}")
            out[key] = torch.empty(tensor_slice.get_shape(), dtype=dtype, device="meta")
    return out


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """Remove `_fsdp_wrapped_module.` (and checkpoint/compile wrapper) segments and a leading `model.`.

    SF's `generator` keys are `model.blocks.0...` (the `WanDiffusionWrapper.model` attribute); EMA keys may carry FSDP
    segments anywhere in the name (backbones.md §2.6).
    """
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        for segment in _WRAPPER_SEGMENTS:
            new_key = new_key.replace(segment, "")
        if new_key.startswith("model."):
            new_key = new_key[len("model.") :]
        if new_key in cleaned:
            raise ValueError(f"{source}: two keys map to {new_key!r} after removing wrapper prefixes (second: {key!r})")
        cleaned[new_key] = value
    return cleaned


def cast_floating(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Cast floating-point tensors to `dtype` (None keeps the stored dtype); integer tensors are left alone."""
    if dtype is None:
        return dict(state_dict)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


# ---------------------------------------------------------------------------------------------- SF / RF checkpoints
def load_self_forcing_checkpoint(
    path: str | Path,
    *,
    use_ema: bool = True,
    kind: str = "self_forcing",
    dtype: torch.dtype | None = torch.bfloat16,
    config_key: str = "backbone.checkpoint_path",
) -> dict[str, torch.Tensor]:
    """Generator weights of a Self Forcing or Rolling Forcing checkpoint, in original Wan key names.

    Accepts the training checkpoint (`generator_ema` / `generator`), a plain state dict saved with `torch.save`, or a
    `.safetensors` file. The official loaders take `generator_ema` under `--use_ema` (both READMEs use it), then cast
    the pipeline to bf16 (`SF:inference.py`); we do the same.

    Args:
        path: checkpoint file.
        use_ema: take `generator_ema`; if absent, fall back to `generator` with a warning.
        kind: "self_forcing" or "rolling_forcing" (same format; only used in messages).
        dtype: cast floating tensors to this dtype after reading (None keeps fp32 EMA weights).
        config_key: config key named in the missing-file message.
    Returns:
        state dict with keys like `blocks.0.self_attn.q.weight`.
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    what = {"self_forcing": "Self Forcing checkpoint", "rolling_forcing": "Rolling Forcing checkpoint"}[kind]
    path = resolve_file(path, what=what, config_key=config_key, example=EXPECTED_EXAMPLES[kind])
    raw = read_tensor_file(path)
    state_dict = select_generator(raw, use_ema=use_ema, source=str(path))
    logger.info("loaded %d tensors from %s", len(state_dict), path)
    return cast_floating(strip_wrapper_prefixes(state_dict, source=str(path)), dtype)


def select_generator(raw: Mapping[str, object], *, use_ema: bool, source: str) -> Mapping[str, torch.Tensor]:
    """Pick the generator state dict out of a training checkpoint, or return `raw` if it already is a state dict."""
    wanted = "generator_ema" if use_ema else "generator"
    if wanted in raw and _is_state_dict(raw[wanted]):
        return raw[wanted]  # type: ignore[return-value]
    if use_ema and "generator" in raw and _is_state_dict(raw["generator"]):
        logger.warning("%s has no 'generator_ema'; falling back to 'generator' (non-EMA weights)", source)
        return raw["generator"]  # type: ignore[return-value]
    if _is_state_dict(raw):
        return raw  # type: ignore[return-value]
    top = sorted(str(k) for k in raw)[:8] if isinstance(raw, Mapping) else type(raw).__name__
    raise ValueError(f"{source} holds neither '{wanted}' nor a plain state dict (top-level keys: {top})")


# ---------------------------------------------------------------------------------------------- Wan release folder
_RELEASE_CONFIG_KEYS = ("text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim", "out_dim", "num_heads",
                        "num_layers", "eps", "patch_size")


def load_wan_release_dit(
    folder: str | Path,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    config_key: str = "backbone.wan_release_dir",
    shapes_only: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Base Wan2.1 DiT from the original release folder (`shapes_only`: meta tensors, for inspection).

    Returns:
        (state dict in original key names, `CausalWanModel` kwargs read from `config.json`).
    """
    folder = resolve_folder(folder, what="Wan release folder", config_key=config_key,
                            example=EXPECTED_EXAMPLES["wan_release"])
    config_path = resolve_file(folder / "config.json", what="Wan release config.json", config_key=config_key,
                               example=EXPECTED_EXAMPLES["wan_release"])
    raw_config = json.loads(config_path.read_text())
    model_type = raw_config.get("model_type", "t2v")
    if model_type != "t2v":
        raise ValueError(f"{config_path}: model_type must be 't2v' (text-to-video), got {model_type!r}")
    config = dict(WAN_T2V_1_3B_CONFIG)
    config.update({k: raw_config[k] for k in _RELEASE_CONFIG_KEYS if k in raw_config})
    config["patch_size"] = tuple(config["patch_size"])  # type: ignore[arg-type]
    state_dict = read_safetensors_folder(folder, stem="diffusion_pytorch_model", config_key=config_key,
                                         shapes_only=shapes_only)
    return cast_floating(state_dict, dtype), config


def read_safetensors_folder(
    folder: Path, *, stem: str, config_key: str, shapes_only: bool = False
) -> dict[str, torch.Tensor]:
    """Read `<stem>.safetensors`, or the shards listed in `<stem>.safetensors.index.json`, or all `<stem>*.safetensors`.

    With `shapes_only`, tensors come back on the meta device (names, shapes, dtypes; no data is read).
    """

    index_path = folder / f"{stem}.safetensors.index.json"
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        shard_names = sorted(set(weight_map.values()))
        files = [resolve_file(folder / name, what=f"shard listed in {index_path.name}", config_key=config_key)
                 for name in shard_names]
    else:
        files = sorted(folder.glob(f"{stem}*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no {stem}*.safetensors in {folder} (set {config_key} to the folder that holds them)")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        shard = read_safetensors_shapes(file) if shapes_only else _load_safetensors(file)
        overlap = state_dict.keys() & shard.keys()
        if overlap:
            raise ValueError(f"{file}: key {sorted(overlap)[0]!r} also appears in an earlier shard of {folder}")
        state_dict.update(shard)
    return state_dict


# ---------------------------------------------------------------------------------------------- diffusers folder
# diffusers name -> original Wan name, for the non-block parameters (inverse of diffusers'
# TRANSFORMER_KEYS_RENAME_DICT in loaders/single_file_utils.py::convert_wan_transformer_to_diffusers).
_DIFFUSERS_TOP_LEVEL = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
}
# Inside `blocks.{i}.`: diffusers module path -> original module path. diffusers numbers the norms in call order
# (norm1, norm2 = affine cross-attention norm, norm3), while Wan calls norm1, norm3, norm2; only norm3 has weights.
_DIFFUSERS_IN_BLOCK = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def diffusers_to_original_wan_key(key: str) -> str:
    """Map one `WanTransformer3DModel` parameter name to the original Wan name (T2V models only).

    `scale_shift_table` [1, 6, D] per block is `modulation` [1, 6, D]; the top-level `scale_shift_table` [1, 2, D] is
    `head.modulation` [1, 2, D] (same shapes, same (shift, scale, ...) chunk order).
    """
    if key == "scale_shift_table":
        return "head.modulation"
    block = re.match(r"^blocks\.(\d+)\.scale_shift_table$", key)
    if block:
        return f"blocks.{block.group(1)}.modulation"
    block = _BLOCK_KEY.match(key)
    if block:
        index, module, leaf = block.groups()
        if module in _DIFFUSERS_IN_BLOCK:
            return f"blocks.{index}.{_DIFFUSERS_IN_BLOCK[module]}.{leaf}"
    else:
        module, _, leaf = key.rpartition(".")
        if module in _DIFFUSERS_TOP_LEVEL and leaf in ("weight", "bias"):
            return f"{_DIFFUSERS_TOP_LEVEL[module]}.{leaf}"
    if "image_embedder" in key or "add_k_proj" in key or "add_v_proj" in key or "norm_added_k" in key:
        raise ValueError(f"diffusers key {key!r} belongs to an image-to-video model; only Wan T2V loads here")
    if "to_qkv" in key or "to_kv" in key:
        raise ValueError(f"diffusers key {key!r} is a fused projection; save the model with unfused projections")
    raise ValueError(f"diffusers key {key!r} has no counterpart in the original Wan T2V layout")


def original_to_diffusers_wan_key(key: str) -> str:
    """Inverse of `diffusers_to_original_wan_key` (used by tests and by `inspect_checkpoint`)."""
    if key == "head.modulation":
        return "scale_shift_table"
    block = re.match(r"^blocks\.(\d+)\.modulation$", key)
    if block:
        return f"blocks.{block.group(1)}.scale_shift_table"
    block = _BLOCK_KEY.match(key)
    inverse_block = {v: k for k, v in _DIFFUSERS_IN_BLOCK.items()}
    if block and block.group(2) in inverse_block:
        index, module, leaf = block.groups()
        return f"blocks.{index}.{inverse_block[module]}.{leaf}"
    module, _, leaf = key.rpartition(".")
    inverse_top = {v: k for k, v in _DIFFUSERS_TOP_LEVEL.items()}
    if module in inverse_top:
        return f"{inverse_top[module]}.{leaf}"
    raise ValueError(f"original Wan key {key!r} has no counterpart in diffusers' WanTransformer3DModel")


def diffusers_config_to_causal_wan(config: Mapping[str, object], *, source: str) -> dict[str, object]:
    """`WanTransformer3DModel` config.json -> `CausalWanModel` kwargs; rejects variants the causal model lacks."""
    if config.get("image_dim") is not None or config.get("added_kv_proj_dim") is not None:
        raise ValueError(f"{source}: image_dim/added_kv_proj_dim are set (image-to-video model); only T2V loads here")
    if config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ValueError(f"{source}: qk_norm must be 'rms_norm_across_heads', got {config.get('qk_norm')!r}")
    if not config.get("cross_attn_norm", True):
        raise ValueError(f"{source}: cross_attn_norm must be true (Wan T2V), got {config.get('cross_attn_norm')!r}")
    num_heads = int(config.get("num_attention_heads", 12))  # type: ignore[arg-type]
    head_dim = int(config.get("attention_head_dim", 128))  # type: ignore[arg-type]
    return {
        "patch_size": tuple(config.get("patch_size", (1, 2, 2))),  # type: ignore[arg-type]
        "text_len": WAN_T2V_1_3B_CONFIG["text_len"],  # not in diffusers' config: 512 is hard-coded in WanPipeline
        "in_dim": int(config.get("in_channels", 16)),  # type: ignore[arg-type]
        "dim": num_heads * head_dim,
        "ffn_dim": int(config.get("ffn_dim", 8960)),  # type: ignore[arg-type]
        "freq_dim": int(config.get("freq_dim", 256)),  # type: ignore[arg-type]
        "text_dim": int(config.get("text_dim", 4096)),  # type: ignore[arg-type]
        "out_dim": int(config.get("out_channels", 16)),  # type: ignore[arg-type]
        "num_heads": num_heads,
        "num_layers": int(config.get("num_layers", 30)),  # type: ignore[arg-type]
        "eps": float(config.get("eps", 1e-6)),  # type: ignore[arg-type]
    }


def convert_diffusers_wan_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a `WanTransformer3DModel` state dict to original Wan names (tensors are shared, not copied)."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = diffusers_to_original_wan_key(key)
        if new_key in converted:
            raise ValueError(f"diffusers keys collide on {new_key!r} (second: {key!r})")
        converted[new_key] = value
    return converted


def load_diffusers_wan_dit(
    folder: str | Path,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    config_key: str = "backbone.diffusers_dir",
    shapes_only: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Wan DiT from a diffusers-format folder (the pipeline root with `transformer/`, or `transformer/` itself).
    `shapes_only`: meta tensors, for inspection.

    Returns:
        (state dict converted to original Wan key names, `CausalWanModel` kwargs).
    """
    folder = resolve_folder(folder, what="diffusers Wan folder", config_key=config_key,
                            example=EXPECTED_EXAMPLES["diffusers"])
    if (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"
    config_path = resolve_file(folder / "config.json", what="diffusers transformer config.json",
                               config_key=config_key, example=EXPECTED_EXAMPLES["diffusers"])
    raw_config = json.loads(config_path.read_text())
    class_name = raw_config.get("_class_name")
    if class_name != "WanTransformer3DModel":
        raise ValueError(f"{config_path}: _class_name must be 'WanTransformer3DModel', got {class_name!r}")
    config = diffusers_config_to_causal_wan(raw_config, source=str(config_path))
    state_dict = read_safetensors_folder(folder, stem="diffusion_pytorch_model", config_key=config_key,
                                         shapes_only=shapes_only)
    return cast_floating(convert_diffusers_wan_state_dict(state_dict), dtype), config


# ---------------------------------------------------------------------------------------------- expected layout
def causal_wan_state_dict_shapes(
    *,
    patch_size: tuple[int, int, int] = (1, 2, 2),
    text_len: int = 512,
    in_dim: int = 16,
    dim: int = 1536,
    ffn_dim: int = 8960,
    freq_dim: int = 256,
    text_dim: int = 4096,
    out_dim: int = 16,
    num_heads: int = 12,
    num_layers: int = 30,
    eps: float = 1e-6,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official `CausalWanModel` state dict (backbones.md §2.2), from the config alone.

    `text_len`, `num_heads` and `eps` do not change any shape; they are accepted so a full config can be passed.
    """
    del text_len, num_heads, eps
    patch_volume = math.prod(patch_size)
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, in_dim, *patch_size),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
    }
    for i in range(num_layers):
        prefix = f"blocks.{i}."
        shapes[prefix + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes[f"{prefix}{attn}.{proj}.weight"] = (dim, dim)
                shapes[f"{prefix}{attn}.{proj}.bias"] = (dim,)
            shapes[f"{prefix}{attn}.norm_q.weight"] = (dim,)
            shapes[f"{prefix}{attn}.norm_k.weight"] = (dim,)
        shapes[prefix + "norm3.weight"] = (dim,)
        shapes[prefix + "norm3.bias"] = (dim,)
        shapes[prefix + "ffn.0.weight"] = (ffn_dim, dim)
        shapes[prefix + "ffn.0.bias"] = (ffn_dim,)
        shapes[prefix + "ffn.2.weight"] = (dim, ffn_dim)
        shapes[prefix + "ffn.2.bias"] = (dim,)
    shapes["head.head.weight"] = (out_dim * patch_volume, dim)
    shapes["head.head.bias"] = (out_dim * patch_volume,)
    shapes["head.modulation"] = (1, 2, dim)
    return shapes


# ---------------------------------------------------------------------------------------------- strict loading
@dataclass
class KeyReport:
    """Differences between a state dict and an expected key -> shape table."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, file, model)

    @property
    def is_ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, *, limit: int = 3) -> str:
        """One line: counts and the first `limit` keys of each kind."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:limit])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:limit])})")
        if self.mismatched:
            shown = ", ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} with wrong shape (e.g. {shown})")
        return "; ".join(parts) if parts else "all keys and shapes match"


def compare_keys(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> KeyReport:
    """Compare names and shapes of `state_dict` against `expected` (key -> shape); order follows `expected`."""
    report = KeyReport()
    for key, shape in expected.items():
        if key not in state_dict:
            report.missing.append(key)
        elif tuple(state_dict[key].shape) != tuple(shape):
            report.mismatched.append((key, tuple(state_dict[key].shape), tuple(shape)))
    report.unexpected = [key for key in state_dict if key not in expected]
    return report


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, assign: bool = False
) -> nn.Module:
    """Strictly load `state_dict` into `model`; on any difference raise ONE `ValueError` naming `source`.

    Floating tensors are copied into the model's existing parameters, so a model built in bf16 receives bf16 weights
    from an fp32 EMA file. With `assign=True` (model built on the meta device) the tensors are taken as they are.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    report = compare_keys(state_dict, expected)
    if not report.is_ok:
        raise ValueError(f"state dict from {source} does not fit {type(model).__name__}: {report.summary()}")
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    return model


# ---------------------------------------------------------------------------------------------- inspection
@dataclass
class CheckpointSummary:
    """What a file or folder holds, for `scripts/inspect_checkpoint.py`."""

    path: str
    # sf_rf_training | dit_state_dict | wan_release_folder | diffusers_folder | diffusers_dit | vae | t5 | unknown
    kind: str
    detail: str
    num_tensors: int
    num_params: int
    dtypes: dict[str, int]  # dtype name -> number of tensors
    top_level_keys: list[str] = field(default_factory=list)
    dit_config: dict[str, object] | None = None
    dit_report: KeyReport | None = None
    notes: list[str] = field(default_factory=list)


def _tensor_stats(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int, dict[str, int]]:
    dtypes: dict[str, int] = {}
    for value in state_dict.values():
        name = str(value.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + 1
    return len(state_dict), sum(v.numel() for v in state_dict.values()), dtypes


def classify_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a flat state dict from its keys (after wrapper prefixes are removed)."""
    keys = set(state_dict)
    if "patch_embedding.weight" in keys and "time_projection.1.weight" in keys:
        return "dit_state_dict"
    if "condition_embedder.time_proj.weight" in keys:
        return "diffusers_dit"
    if "decoder.conv1.weight" in keys or "decoder.conv_in.weight" in keys:
        return "vae"
    if "token_embedding.weight" in keys and any(k.startswith("blocks.0.attn.") for k in keys):
        return "t5"
    if "encoder.final_layer_norm.weight" in keys:
        return "t5"
    return "unknown"


def expected_causal_wan_shapes(config: Mapping[str, object] | None = None) -> tuple[dict[str, tuple[int, ...]], str]:
    """Expected key -> shape for `config` (default 1.3B): from the lead's `CausalWanModel` built on the meta device when
    importable, else from `causal_wan_state_dict_shapes`. Returns (shapes, which source was used)."""
    config = dict(WAN_T2V_1_3B_CONFIG if config is None else config)
    try:
        from tokentrim.models.wan_causal import CausalWanModel
    except ImportError as error:
        logger.warning("CausalWanModel not importable (%s); using the built-in key list", error)
        return causal_wan_state_dict_shapes(**config), "built-in key list"  # type: ignore[arg-type]
    with torch.device("meta"):
        model = CausalWanModel(**config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, "CausalWanModel (meta device)"


def describe_checkpoint(path: str | Path, *, use_ema: bool = True) -> CheckpointSummary:
    """Inspect a checkpoint file or model folder without building any model on real memory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found at {path}")
    if path.is_dir():
        return _describe_folder(path)
    raw = read_safetensors_shapes(path) if path.suffix == ".safetensors" else read_tensor_file(path)
    top = sorted(str(k) for k in raw)[:12]
    if any(k in raw for k in ("generator", "generator_ema")):
        state_dict = strip_wrapper_prefixes(select_generator(raw, use_ema=use_ema, source=str(path)), source=str(path))
        present = [k for k in ("generator", "generator_ema", "critic") if k in raw]
        summary = CheckpointSummary(str(path), "sf_rf_training", f"SF/RF training checkpoint with {present}",
                                    *_tensor_stats(state_dict), top_level_keys=top)
        used = "generator_ema" if use_ema and "generator_ema" in raw else "generator"
        summary.notes.append(f"stats are for '{used}'")
        _check_dit(summary, state_dict, WAN_T2V_1_3B_CONFIG)
        return summary
    if not _is_state_dict(raw):
        return CheckpointSummary(str(path), "unknown", "not a flat state dict", 0, 0, {}, top_level_keys=top)
    state_dict = strip_wrapper_prefixes(raw, source=str(path))  # type: ignore[arg-type]
    kind = classify_state_dict(state_dict)
    detail = {
        "dit_state_dict": "Wan DiT state dict (original key names)",
        "diffusers_dit": "Wan DiT state dict (diffusers key names)",
        "vae": "Wan VAE state dict",
        "t5": "UMT5 text encoder state dict",
        "unknown": "state dict of unknown layout",
    }[kind]
    summary = CheckpointSummary(str(path), kind, detail, *_tensor_stats(state_dict), top_level_keys=top)
    if kind == "dit_state_dict":
        _check_dit(summary, state_dict, WAN_T2V_1_3B_CONFIG)
    elif kind == "diffusers_dit":
        _check_dit(summary, convert_diffusers_wan_state_dict(state_dict), WAN_T2V_1_3B_CONFIG)
    return summary


def _describe_folder(path: Path) -> CheckpointSummary:
    config_path = path / "config.json"
    if (path / "transformer" / "config.json").is_file() or (
        config_path.is_file() and json.loads(config_path.read_text()).get("_class_name") == "WanTransformer3DModel"
    ):
        state_dict, config = load_diffusers_wan_dit(path, dtype=None, shapes_only=True)
        summary = CheckpointSummary(str(path), "diffusers_folder", "diffusers Wan transformer folder",
                                    *_tensor_stats(state_dict), dit_config=config)
        _check_dit(summary, state_dict, config)
        return summary
    if (path / "vae" / "config.json").is_file():
        path, config_path = path / "vae", path / "vae" / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text()).get("_class_name") == "AutoencoderKLWan":
        state_dict = read_safetensors_folder(path, stem="diffusion_pytorch_model", config_key="path", shapes_only=True)
        return CheckpointSummary(str(path), "vae", "diffusers AutoencoderKLWan folder", *_tensor_stats(state_dict))
    if config_path.is_file():
        state_dict, config = load_wan_release_dit(path, dtype=None, shapes_only=True)
        summary = CheckpointSummary(str(path), "wan_release_folder", "Wan release folder (config.json + safetensors)",
                                    *_tensor_stats(state_dict), dit_config=config)
        _check_dit(summary, state_dict, config)
        return summary
    names = sorted(p.name for p in path.iterdir())[:12]
    return CheckpointSummary(str(path), "unknown", f"folder without config.json (holds {names})", 0, 0, {})


def _check_dit(
    summary: CheckpointSummary, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> None:
    """Compare against the 1.3B causal layout (and against the folder's own config when it differs)."""
    expected, source = expected_causal_wan_shapes(WAN_T2V_1_3B_CONFIG)
    summary.dit_report = compare_keys(state_dict, expected)
    summary.notes.append(f"expected 1.3B layout from {source}")
    if dict(config) != dict(WAN_T2V_1_3B_CONFIG):
        own_expected, _ = expected_causal_wan_shapes(config)
        own = compare_keys(state_dict, own_expected)
        summary.notes.append(f"against its own config {dict(config)}: {own.summary()}")
