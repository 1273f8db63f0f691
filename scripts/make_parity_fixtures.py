"""Record numerical parity fixtures by running the OFFICIAL Self Forcing / Rolling Forcing code on CPU.

The official repositories are NOT vendored: pass local checkouts with ``--sf-repo`` / ``--rf-repo``. This script only
imports them, swaps a few CUDA-only pieces for CPU equivalents (listed in ``tests/fixtures/README.md``), shrinks the
hard-coded Wan2.1-1.3B geometry constants to a tiny model, and saves inputs / captured noises / outputs.

Usage (from the repository root)::

    /work/venv/bin/python scripts/make_parity_fixtures.py \
        --sf-repo /work/official/sf --rf-repo /work/official/rf --out tests/fixtures

Upstream: guandeh17/Self-Forcing (``pipeline/causal_inference.py``, ``wan/modules/causal_model.py``) and
TencentARC/RollingForcing (``pipeline/rolling_forcing_inference.py``, ``wan/modules/causal_model.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tokentrim.report.atomic_io import atomic_path, write_bytes_atomic

# ---------------------------------------------------------------------------------------------------------------------
# Tiny geometry. Official values in comments.
# ---------------------------------------------------------------------------------------------------------------------
TINY_MODEL_CONFIG: dict[str, Any] = {
    "model_type": "t2v",
    "text_len": 8,  # 512
    "in_dim": 16,
    "dim": 64,  # 1536
    "ffn_dim": 128,  # 8960
    "freq_dim": 256,
    "text_dim": 32,  # 4096 (listed in ignore_for_config, but the constructor still honours the passed value)
    "out_dim": 16,
    "num_heads": 2,  # 12 -> head_dim 32 (128)
    "num_layers": 2,  # 30
    "eps": 1e-6,
}
WAN_1_3B_CONFIG: dict[str, Any] = {
    "model_type": "t2v",
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
LATENT_CHANNELS = 16
LATENT_HEIGHT = 8  # 60
LATENT_WIDTH = 8  # 104
TOKENS_PER_FRAME = (LATENT_HEIGHT // 2) * (LATENT_WIDTH // 2)  # 16 (official 1560)
OFFICIAL_TOKENS_PER_FRAME = 1560
FRAMES_PER_BLOCK = 3
PROMPT_VALID_ROWS = 5  # rows >= 5 of prompt_embeds are zero, like the zero-padded UMT5 output
WEIGHT_SEED = 20240611
TIMESTEP_SHIFT = 5.0
SF_STEP_LIST = [1000, 750, 500, 250]
RF_STEP_LIST = [1000, 800, 600, 400, 200]
SF_DEFAULT_CACHE_FRAMES = 21  # official: kv_cache_size = 32760 = 21 * 1560 and max_attention_size = 32760
RF_CACHE_FRAMES = 24  # official: kv_cache_size = 1560 * 24
RF_MAX_ATTENTION_FRAMES = 21  # official: max_attention_size = 21 * frame_length

OFFICIAL_FILES = {
    "sf": [
        "wan/modules/causal_model.py",
        "wan/modules/model.py",
        "wan/modules/attention.py",
        "utils/wan_wrapper.py",
        "utils/scheduler.py",
        "pipeline/causal_inference.py",
    ],
    "rf": [
        "wan/modules/causal_model.py",
        "wan/modules/model.py",
        "wan/modules/attention.py",
        "utils/wan_wrapper.py",
        "utils/scheduler.py",
        "pipeline/rolling_forcing_inference.py",
    ],
}


# ---------------------------------------------------------------------------------------------------------------------
# Small file helpers (atomic writes).
# ---------------------------------------------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    # one metadata key: safetensors writes its metadata map in hash order, several keys make the bytes unstable
    header = {"fixture": json.dumps(meta, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata=header)


def repo_commit(repo: Path, override: str | None) -> str:
    """Commit sha of an official checkout: explicit ``override`` first, else ``git rev-parse HEAD``."""
    if override:
        return override
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise ValueError(f"--*-commit: {repo} is not a git checkout; pass the official commit sha explicitly") from err
    return out.stdout.strip()


def file_hashes(repo: Path, rel_paths: list[str]) -> dict[str, str]:
    return {rel: hashlib.sha256((repo / rel).read_bytes()).hexdigest() for rel in rel_paths}


# ---------------------------------------------------------------------------------------------------------------------
# Making the official code importable and CPU/fp32-exact.
# ---------------------------------------------------------------------------------------------------------------------
def sdpa_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens=None, k_lens=None, dropout_p=0.0,
              softmax_scale=None, q_scale=None, causal=False, window_size=(-1, -1), deterministic=False,
              dtype=None, version=None, fa_version=None) -> torch.Tensor:
    """Stand-in for ``wan.modules.attention.{attention, flash_attention}``: unmasked fp32 SDPA.

    Takes / returns ``[B, L, heads, head_dim]`` like the official functions. The official inference calls never pass
    lengths, a causal flag, a window, a q scale or dropout; refuse them so a silent semantic change cannot slip in.
    """
    if q_lens is not None or k_lens is not None or causal or tuple(window_size) != (-1, -1) or dropout_p:
        raise ValueError(f"sdpa_fp32: unsupported attention options q_lens={q_lens} k_lens={k_lens} "
                         f"causal={causal} window_size={window_size} dropout_p={dropout_p}")
    if q_scale is not None or softmax_scale is not None:
        raise ValueError(f"sdpa_fp32: q_scale/softmax_scale must be None, got {q_scale}/{softmax_scale}")
    out_dtype = q.dtype
    # [B, L, H, D] -> [B, H, L, D]
    qh, kh, vh = (t.transpose(1, 2).to(torch.float32) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qh, kh, vh)
    # [B, H, Lq, D] -> [B, Lq, H, D]
    return out.transpose(1, 2).contiguous().to(out_dtype)


def prepare_official_imports(repo: Path, backbone: str) -> types.SimpleNamespace:
    """Import the official modules from ``repo`` with minimal CPU stubs; returns the modules used."""
    repo = repo.resolve()
    if not (repo / "wan/modules/causal_model.py").is_file():
        raise FileNotFoundError(f"--{backbone}-repo: {repo}/wan/modules/causal_model.py does not exist")
    sys.path.insert(0, str(repo))
    # Package stubs: skip wan/__init__.py (imports the full T2V/I2V stack) and pipeline/__init__.py (imports training
    # pipelines); the real submodules are still loaded from the checkout via __path__.
    for name, sub in (("wan", "wan"), ("wan.modules", "wan/modules"), ("pipeline", "pipeline")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(repo / sub)]
        sys.modules[name] = pkg
    # wan/modules/t5.py calls torch.cuda.current_device() at class-definition time; the text encoder is not used
    # (prompt embeddings are fixture inputs), so replace the module.
    t5_stub = types.ModuleType("wan.modules.t5")

    def _no_t5(*args, **kwargs):
        raise RuntimeError("UMT5 is stubbed out in parity fixtures")

    t5_stub.umt5_xxl = _no_t5
    sys.modules["wan.modules.t5"] = t5_stub
    # SF pipeline/causal_inference.py imports demo_utils.memory, which calls torch.cuda.current_device() at import.
    mem_stub = types.ModuleType("demo_utils.memory")
    mem_stub.gpu = torch.device("cpu")
    mem_stub.get_cuda_free_memory_gb = lambda *a, **k: 0.0
    mem_stub.DynamicSwapInstaller = object
    mem_stub.move_model_to_device_with_memory_preservation = lambda *a, **k: None
    demo_pkg = types.ModuleType("demo_utils")
    demo_pkg.__path__ = [str(repo / "demo_utils")]
    sys.modules["demo_utils"] = demo_pkg
    sys.modules["demo_utils.memory"] = mem_stub

    # SF compiles flex_attention at import time (only used by the training path): make torch.compile the identity.
    with mock.patch.object(torch, "compile", lambda fn=None, *a, **k: fn):
        import wan.modules.attention as attention_mod
        import wan.modules.model as model_mod
        import wan.modules.causal_model as causal_mod
        import utils.wan_wrapper as wrapper_mod
        import utils.scheduler as scheduler_mod
        if backbone == "sf":
            import pipeline.causal_inference as pipeline_mod
        else:
            import pipeline.rolling_forcing_inference as pipeline_mod

    # Route every attention call to fp32 SDPA (names are bound by `from ... import` in each module).
    attention_mod.attention = sdpa_fp32
    attention_mod.flash_attention = sdpa_fp32
    model_mod.flash_attention = sdpa_fp32
    causal_mod.attention = sdpa_fp32
    return types.SimpleNamespace(causal=causal_mod, model=model_mod, wrapper=wrapper_mod, scheduler=scheduler_mod,
                                 pipeline=pipeline_mod)


# ---------------------------------------------------------------------------------------------------------------------
# Tiny model construction.
# ---------------------------------------------------------------------------------------------------------------------
def init_tiny_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded normal weights, in ``named_parameters`` order, so every parameter matters.

    biases ~ N(0, 0.05); RMSNorm / affine LayerNorm weights ~ 1 + N(0, 0.1); everything else (linear / conv weights,
    ``modulation`` tables) ~ N(0, 0.1). Official init zeroes ``head.head.weight``, which would make parity vacuous.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name.endswith(".bias"):
                value = 0.05 * noise
            elif ".norm" in name:
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            param.copy_(value)


def build_tiny_model(mods: types.SimpleNamespace, *, local_attn_size: int = -1, sink_size: int = 0,
                     backbone: str = "sf") -> torch.nn.Module:
    """Official ``CausalWanModel`` at the tiny config, with the 1560-based per-layer constants patched."""
    model = mods.causal.CausalWanModel(**TINY_MODEL_CONFIG, local_attn_size=local_attn_size, sink_size=sink_size)
    init_tiny_weights(model, WEIGHT_SEED)
    model.eval()
    for block in model.blocks:
        attn = block.self_attn
        if backbone == "sf":
            # official: 32760 if local_attn_size == -1 else local_attn_size * 1560
            frames = SF_DEFAULT_CACHE_FRAMES if local_attn_size == -1 else local_attn_size
            attn.max_attention_size = frames * TOKENS_PER_FRAME
        else:
            # official: frame_length = 1560, max_attention_size = 21 * 1560, block_length = 3 * 1560
            attn.frame_length = TOKENS_PER_FRAME
            attn.max_attention_size = RF_MAX_ATTENTION_FRAMES * TOKENS_PER_FRAME
            attn.block_length = FRAMES_PER_BLOCK * TOKENS_PER_FRAME
    return model


def build_wrapper(mods: types.SimpleNamespace, model: torch.nn.Module) -> torch.nn.Module:
    """Official ``WanDiffusionWrapper(is_causal=True, timestep_shift=5.0)`` around our tiny model.

    ``CausalWanModel.from_pretrained('wan_models/...')`` is replaced by returning the already-built tiny model.
    """
    def fake_from_pretrained(*args, **kwargs):
        return model

    with mock.patch.object(mods.wrapper.CausalWanModel, "from_pretrained", fake_from_pretrained):
        # local_attn_size / sink_size only reach from_pretrained, which is replaced; the model already has them.
        wrapper = mods.wrapper.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True)
    return wrapper


def make_kv_cache(num_layers: int, batch: int, cache_tokens: int) -> list[dict[str, Any]]:
    """Per-layer self-attention cache dicts with the official keys, at the tiny head geometry."""
    heads = TINY_MODEL_CONFIG["num_heads"]
    head_dim = TINY_MODEL_CONFIG["dim"] // heads
    return [{
        "k": torch.zeros([batch, cache_tokens, heads, head_dim]),
        "v": torch.zeros([batch, cache_tokens, heads, head_dim]),
        "global_end_index": torch.tensor([0], dtype=torch.long),
        "local_end_index": torch.tensor([0], dtype=torch.long),
    } for _ in range(num_layers)]


def make_crossattn_cache(num_layers: int) -> list[dict[str, Any]]:
    return [{"k": None, "v": None, "is_init": False} for _ in range(num_layers)]


def tiny_prompt_embeds(batch: int, seed: int) -> torch.Tensor:
    """``[B, text_len, text_dim]``; rows >= PROMPT_VALID_ROWS are zero (UMT5 output is zero-padded to text_len)."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn([batch, TINY_MODEL_CONFIG["text_len"], TINY_MODEL_CONFIG["text_dim"]], generator=gen)
    emb[:, PROMPT_VALID_ROWS:] = 0.0
    return emb


def latent_noise(num_frames: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # [B, F, C, H, W]
    return torch.randn([batch, num_frames, LATENT_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH], generator=gen)


class NoiseRecorder:
    """Replacement for ``torch.randn_like`` that draws from a seeded generator and keeps every tensor in call order."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.calls: list[torch.Tensor] = []

    def __call__(self, ref: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs:
            raise ValueError(f"NoiseRecorder: randn_like called with extra arguments {args} {kwargs}")
        out = torch.randn(ref.shape, generator=self.gen, dtype=ref.dtype)
        self.calls.append(out.clone())
        return out


class NoiseReplayer:
    """``torch.randn_like`` that returns pre-built tensors in order (used to verify the stored noise is sufficient)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        self.index = 0

    def __call__(self, ref: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.tensors[self.index]
        if out.shape != ref.shape:
            raise ValueError(f"NoiseReplayer: call {self.index} expects shape {tuple(ref.shape)}, has {tuple(out.shape)}")
        self.index += 1
        return out.clone()


class _TextStub:
    """Stands in for ``WanTextEncoder``: returns the fixture's prompt embeddings."""

    def __init__(self, prompt_embeds: torch.Tensor) -> None:
        self.prompt_embeds = prompt_embeds

    def __call__(self, text_prompts) -> dict[str, torch.Tensor]:
        return {"prompt_embeds": self.prompt_embeds}


class _VaeStub:
    """Stands in for ``WanVAEWrapper``; the pipelines decode at the end, we keep the latents (return_latents=True)."""

    def decode_to_pixel(self, latent: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        return latent.float()


def log_generator_calls(wrapper: torch.nn.Module, log: list[dict[str, Any]]) -> None:
    """Record (frames, current_start, timestep row, updating_cache) for each call of the official wrapper."""
    original = wrapper.forward

    def logged(*args, **kwargs):
        x = kwargs["noisy_image_or_video"]
        t = kwargs["timestep"]
        start = kwargs.get("current_start")
        log.append({
            "start_frame": int(start) // TOKENS_PER_FRAME,
            "num_frames": int(x.shape[1]),
            "timestep": [float(v) for v in t[0].tolist()],
            "timestep_dtype": str(t.dtype).replace("torch.", ""),
            "updating_cache": bool(kwargs.get("updating_cache", False)),
        })
        return original(*args, **kwargs)

    wrapper.forward = logged


def tensor_stats(t: torch.Tensor) -> dict[str, float]:
    return {"mean": float(t.mean()), "std": float(t.std()), "absmax": float(t.abs().max())}


def make_pipeline(mods: types.SimpleNamespace, wrapper: torch.nn.Module, prompt_embeds: torch.Tensor,
                  step_list: list[int], cache_tokens: int) -> torch.nn.Module:
    """Official inference pipeline around the tiny wrapper, with the 1.3B constants patched to the tiny geometry."""
    args = types.SimpleNamespace(denoising_step_list=step_list, warp_denoising_step=True,
                                 num_frame_per_block=FRAMES_PER_BLOCK, independent_first_frame=False,
                                 context_noise=0)
    with contextlib.redirect_stdout(io.StringIO()):
        pipe = mods.pipeline.CausalInferencePipeline(args, device=torch.device("cpu"), generator=wrapper,
                                                     text_encoder=_TextStub(prompt_embeds), vae=_VaeStub())
    pipe.num_transformer_blocks = TINY_MODEL_CONFIG["num_layers"]  # official: 30
    pipe.frame_seq_length = TOKENS_PER_FRAME  # official: 1560
    num_layers = TINY_MODEL_CONFIG["num_layers"]

    def init_kv(self, batch_size, dtype, device):
        cache = make_kv_cache(num_layers, batch_size, cache_tokens)
        if hasattr(self, "kv_cache_clean"):
            self.kv_cache_clean = cache
        else:
            self.kv_cache1 = cache

    pipe._initialize_kv_cache = types.MethodType(init_kv, pipe)
    return pipe


def scheduler_tables(wrapper: torch.nn.Module, warped: torch.Tensor) -> dict[str, Any]:
    sched = wrapper.scheduler
    ids = [int(torch.argmin((sched.timesteps - t).abs())) for t in warped]
    return {
        "warped_timesteps": [float(t) for t in warped],
        "warped_timesteps_float32_hex": [float(t).hex() for t in warped],
        "sigmas_float32": [float(sched.sigmas[i]) for i in ids],
        "schedule_index": ids,
    }


def common_meta(backbone: str, commit: str, repo: Path) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "official_repo": "guandeh17/Self-Forcing" if backbone == "sf" else "TencentARC/RollingForcing",
        "official_commit": commit,
        "official_file_sha256": file_hashes(repo, OFFICIAL_FILES[backbone]),
        "torch_version": torch.__version__,
        "dtype": "float32",
        "weights_file": "weights.safetensors",
        "weight_seed": WEIGHT_SEED,
        "model_config": {**TINY_MODEL_CONFIG, "patch_size": [1, 2, 2], "qk_norm": True, "cross_attn_norm": True},
        "latent_shape_CHW": [LATENT_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH],
        "tokens_per_frame": TOKENS_PER_FRAME,
        "frames_per_block": FRAMES_PER_BLOCK,
        "timestep_shift": TIMESTEP_SHIFT,
        "attention": "all attention routed to unmasked fp32 torch SDPA (see README)",
    }


def save_scenario(out_dir: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    meta = dict(meta)
    meta["tensors_file"] = f"{name}.safetensors"
    meta["tensors"] = {k: list(v.shape) for k, v in tensors.items()}
    write_safetensors(out_dir / f"{name}.safetensors", tensors, {"scenario": name, "commit": meta["official_commit"]})
    write_json(out_dir / f"{name}.json", meta)
    print(f"wrote {out_dir / name}.{{safetensors,json}}")


def save_weights(out_dir: Path, model: torch.nn.Module, commit: str) -> None:
    sd = {k: v for k, v in model.state_dict().items()}
    write_safetensors(out_dir / "weights.safetensors", sd, {"commit": commit, "seed": str(WEIGHT_SEED),
                                                            "config": json.dumps(TINY_MODEL_CONFIG)})
    print(f"wrote {out_dir / 'weights.safetensors'} ({len(sd)} tensors)")


def cache_snapshot(cache: list[dict[str, Any]], prefix: str = "cache") -> dict[str, torch.Tensor]:
    """K/V up to ``local_end_index`` for every layer (what the test should find in its own cache)."""
    out = {}
    for i, layer in enumerate(cache):
        end = int(layer["local_end_index"].item())
        out[f"{prefix}.layer{i}.k"] = layer["k"][:, :end].clone()
        out[f"{prefix}.layer{i}.v"] = layer["v"][:, :end].clone()
    return out


def cache_indices(cache: list[dict[str, Any]]) -> dict[str, int]:
    return {"global_end_index": int(cache[0]["global_end_index"].item()),
            "local_end_index": int(cache[0]["local_end_index"].item())}


# ---------------------------------------------------------------------------------------------------------------------
# Self Forcing scenarios.
# ---------------------------------------------------------------------------------------------------------------------
def sf_model_forward(mods, out_dir: Path, commit: str, repo: Path) -> None:
    """(a) Two model-level calls through the official wrapper: block 0 on an empty cache, then block 1 on it."""
    model = build_tiny_model(mods, backbone="sf")
    wrapper = build_wrapper(mods, model)
    batch = 2
    prompt = tiny_prompt_embeds(batch, seed=11)
    x0_in = latent_noise(FRAMES_PER_BLOCK, seed=12, batch=batch)
    x1_in = latent_noise(FRAMES_PER_BLOCK, seed=13, batch=batch)
    # per-frame, per-sample timesteps (float32, as the pipeline feeds them)
    t0 = torch.tensor([[1000.0, 937.5, 833.3333129882812], [625.0, 250.0, 0.0]])
    t1 = torch.tensor([[500.0, 500.0, 500.0], [937.5, 100.0, 10.0]])
    kv = make_kv_cache(TINY_MODEL_CONFIG["num_layers"], batch, SF_DEFAULT_CACHE_FRAMES * TOKENS_PER_FRAME)
    xc = make_crossattn_cache(TINY_MODEL_CONFIG["num_layers"])
    cond = {"prompt_embeds": prompt}
    with torch.no_grad():
        flow0, pred0 = wrapper(noisy_image_or_video=x0_in, conditional_dict=cond, timestep=t0, kv_cache=kv,
                               crossattn_cache=xc, current_start=0)
        idx0 = cache_indices(kv)
        flow1, pred1 = wrapper(noisy_image_or_video=x1_in, conditional_dict=cond, timestep=t1, kv_cache=kv,
                               crossattn_cache=xc, current_start=FRAMES_PER_BLOCK * TOKENS_PER_FRAME)
        # the raw model (no wrapper) must agree: [B, C, F, H, W] in, [B, C, F, H, W] out
        kv_check = make_kv_cache(TINY_MODEL_CONFIG["num_layers"], batch, SF_DEFAULT_CACHE_FRAMES * TOKENS_PER_FRAME)
        raw0 = model(x0_in.permute(0, 2, 1, 3, 4), t=t0, context=prompt, seq_len=32760, kv_cache=kv_check,
                     crossattn_cache=make_crossattn_cache(TINY_MODEL_CONFIG["num_layers"]), current_start=0)
    if not torch.equal(raw0.permute(0, 2, 1, 3, 4), flow0):
        raise ValueError("sf_model_forward: wrapper flow_pred differs from the raw CausalWanModel output")
    tensors = {
        "prompt_embeds": prompt,
        "call0.x": x0_in, "call0.timestep": t0, "call0.flow_pred": flow0, "call0.pred_x0": pred0,
        "call1.x": x1_in, "call1.timestep": t1, "call1.flow_pred": flow1, "call1.pred_x0": pred1,
        **cache_snapshot(kv),
    }
    meta = common_meta("sf", commit, repo)
    meta.update({
        "scenario": "model_forward",
        "description": "Model-level: official WanDiffusionWrapper/CausalWanModel forward with KV cache. call0 = "
                       "frames 0-2 (current_start 0) on an empty cache; call1 = frames 3-5 (current_start = 3 "
                       "frames) attending to call0's cache + itself. Per-frame, per-sample timesteps.",
        "batch_size": batch,
        "kv_cache_tokens": SF_DEFAULT_CACHE_FRAMES * TOKENS_PER_FRAME,
        "local_attn_size": -1, "sink_size": 0,
        "calls": [
            {"x": "call0.x", "timestep": "call0.timestep", "current_start_tokens": 0, "start_frame": 0,
             "cache_indices_after": idx0},
            {"x": "call1.x", "timestep": "call1.timestep",
             "current_start_tokens": FRAMES_PER_BLOCK * TOKENS_PER_FRAME, "start_frame": FRAMES_PER_BLOCK,
             "cache_indices_after": cache_indices(kv)},
        ],
        "layouts": {"x": "[B, F, C, H, W]", "flow_pred": "[B, F, C, H, W] (model output v, permuted back)",
                    "pred_x0": "[B, F, C, H, W]; x0 = x - sigma(t) * v in float64, sigma by nearest-timestep "
                               "lookup in the shift-5 schedule, cast to float32",
                    "cache.layerI.k": "[B, tokens, heads, head_dim], K stored roped at absolute frame positions",
                    "cache.layerI.v": "[B, tokens, heads, head_dim]"},
        "stats": {"call0.flow_pred": tensor_stats(flow0), "call1.flow_pred": tensor_stats(flow1)},
    })
    save_scenario(out_dir, "model_forward", tensors, meta)
    save_weights(out_dir, model, commit)


def sf_rollout(mods, out_dir: Path, commit: str, repo: Path, *, name: str, num_frames: int, local_attn_size: int,
               sink_size: int, noise_seed: int, description: str) -> None:
    """(b)/(c) Official ``CausalInferencePipeline.inference`` with recorded re-noise tensors."""
    model = build_tiny_model(mods, local_attn_size=local_attn_size, sink_size=sink_size, backbone="sf")
    wrapper = build_wrapper(mods, model)
    cache_frames = SF_DEFAULT_CACHE_FRAMES if local_attn_size == -1 else local_attn_size
    prompt = tiny_prompt_embeds(1, seed=21)
    pipe = make_pipeline(mods, wrapper, prompt, SF_STEP_LIST, cache_frames * TOKENS_PER_FRAME)
    calls: list[dict[str, Any]] = []
    log_generator_calls(wrapper, calls)
    noise = latent_noise(num_frames, seed=noise_seed)
    recorder = NoiseRecorder(seed=noise_seed + 1)
    with torch.no_grad(), mock.patch.object(torch, "randn_like", recorder), \
            contextlib.redirect_stdout(io.StringIO()):
        _, latents = pipe.inference(noise=noise, text_prompts=["fixture"], return_latents=True)
    steps = pipe.denoising_step_list
    renoise_meta = []
    tensors = {"prompt_embeds": prompt, "noise": noise, "output": latents}
    num_blocks = num_frames // FRAMES_PER_BLOCK
    expected = num_blocks * (len(steps) - 1)
    if len(recorder.calls) != expected:
        raise ValueError(f"{name}: expected {expected} randn_like calls, recorded {len(recorder.calls)}")
    for i, eps in enumerate(recorder.calls):
        block, step = divmod(i, len(steps) - 1)
        key = f"renoise.{i:03d}"
        # randn_like is called on x0.flatten(0, 1): [B*F, C, H, W] -> stored as [B, F, C, H, W]
        tensors[key] = eps.unflatten(0, (1, FRAMES_PER_BLOCK))
        renoise_meta.append({"key": key, "block": block, "frames": [block * 3, block * 3 + 3], "after_step": step,
                             "next_timestep": float(steps[step + 1])})
    meta = common_meta("sf", commit, repo)
    meta.update({
        "scenario": name,
        "description": description,
        "batch_size": 1,
        "num_latent_frames": num_frames,
        "num_blocks": num_blocks,
        "denoising_step_list": SF_STEP_LIST,
        "warp_denoising_step": True,
        **scheduler_tables(wrapper, steps),
        "context_noise": 0,
        "local_attn_size": local_attn_size,
        "sink_size": sink_size,
        "kv_cache_tokens": cache_frames * TOKENS_PER_FRAME,
        "max_attention_tokens": cache_frames * TOKENS_PER_FRAME,
        "cache_indices_after": cache_indices(pipe.kv_cache1),
        "renoise_calls": renoise_meta,
        "generator_calls": calls,
        "layouts": {"noise": "[B, F_total, C, H, W] initial noise", "output": "[B, F_total, C, H, W] final latents "
                    "(x0 of the last step of each block)", "renoise.NNN": "[B, 3, C, H, W]"},
        "stats": {"output": tensor_stats(latents)},
    })
    save_scenario(out_dir, name, tensors, meta)


def run_sf(repo: Path, out: Path, commit_override: str | None) -> None:
    commit = repo_commit(repo, commit_override)
    mods = prepare_official_imports(repo, "sf")
    out_dir = out / "self_forcing"
    sf_model_forward(mods, out_dir, commit, repo)
    sf_rollout(mods, out_dir, commit, repo, name="rollout_global", num_frames=9, local_attn_size=-1, sink_size=0,
               noise_seed=100,
               description="CausalInferencePipeline.inference: 3 blocks x 3 frames, 4 warped steps, context_noise "
                           "0, global attention (cache = 21 frames, never full).")
    sf_rollout(mods, out_dir, commit, repo, name="rollout_local6_sink3", num_frames=15, local_attn_size=6,
               sink_size=3, noise_seed=200,
               description="Rolling cache: local_attn_size=6 frames, sink_size=3 frames, 5 blocks. From block 2 on, "
                           "every new block evicts the previous non-sink block (cache = sink + newest block).")
    sf_rollout(mods, out_dir, commit, repo, name="rollout_local9_sink3", num_frames=18, local_attn_size=9,
               sink_size=3, noise_seed=300,
               description="Rolling cache: local_attn_size=9 frames, sink_size=3 frames, 6 blocks. From block 3 on, "
                           "each new block evicts the oldest non-sink block and shifts one block left.")


# ---------------------------------------------------------------------------------------------------------------------
# Rolling Forcing scenarios.
# ---------------------------------------------------------------------------------------------------------------------
def rf_window_schedule(num_blocks: int, num_steps: int) -> list[tuple[int, int]]:
    """(start_block, end_block inclusive) per window, as in the official loop."""
    return [(max(0, w - num_steps + 1), min(num_blocks - 1, w)) for w in range(num_blocks + num_steps - 1)]


def rf_model_trace(mods, out_dir: Path, commit: str, repo: Path, warped: torch.Tensor) -> None:
    """Model-level trace: a fixed sequence of denoising / updating_cache calls on one explicit cache."""
    model = build_tiny_model(mods, backbone="rf")
    wrapper = build_wrapper(mods, model)
    prompt = tiny_prompt_embeds(1, seed=31)
    cond = {"prompt_embeds": prompt}
    kv = make_kv_cache(TINY_MODEL_CONFIG["num_layers"], 1, RF_CACHE_FRAMES * TOKENS_PER_FRAME)
    xc = make_crossattn_cache(TINY_MODEL_CONFIG["num_layers"])
    # clean -> noisy, 3 frames per level: [t4 x3, t3 x3, t2 x3, t1 x3, t0 x3]
    shared = torch.cat([torch.full([FRAMES_PER_BLOCK], float(t)) for t in reversed(warped)])[None]
    # (start_frame, num_frames, updating_cache, timestep row)
    plan = [
        (0, 6, False, shared[:, -6:]),  # ramp-up window (starts at 0): plain attention, writes sink un-roped
        (0, 3, True, torch.zeros(1, 3)),  # refresh of block 0
        (3, 15, False, shared),  # full window, empty working cache, sink re-roped at frame 0
        (3, 3, True, torch.zeros(1, 3)),
        (6, 15, False, shared),  # working cache = frames 3-5, sink re-roped at frame 0
        (6, 3, True, torch.zeros(1, 3)),
        (9, 15, False, shared),  # working cache = frames 6-8, sink re-roped at frame 3
        (9, 3, True, torch.zeros(1, 3)),
        (12, 6, False, shared[:, :6]),  # tail window: working cache = frames 3-11, sink re-roped at frame 0
    ]
    tensors: dict[str, torch.Tensor] = {"prompt_embeds": prompt}
    calls_meta = []
    gen = torch.Generator().manual_seed(32)
    with torch.no_grad():
        for i, (start, frames, updating, t) in enumerate(plan):
            x = torch.randn([1, frames, LATENT_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH], generator=gen)
            flow, _ = wrapper(noisy_image_or_video=x, conditional_dict=cond, timestep=t, kv_cache=kv,
                              crossattn_cache=xc, current_start=start * TOKENS_PER_FRAME, updating_cache=updating)
            tensors[f"call{i}.x"] = x
            tensors[f"call{i}.timestep"] = t.clone()
            tensors[f"call{i}.flow_pred"] = flow  # pred_x0 not stored (derivable; keeps the file small)
            calls_meta.append({"x": f"call{i}.x", "timestep": f"call{i}.timestep", "start_frame": start,
                               "current_start_tokens": start * TOKENS_PER_FRAME, "num_frames": frames,
                               "updating_cache": updating, "cache_indices_after": cache_indices(kv)})
    tensors.update({k: v for k, v in cache_snapshot(kv).items() if ".layer0." in k})
    meta = common_meta("rf", commit, repo)
    meta.update({
        "scenario": "model_trace",
        "description": "Model-level: official RF wrapper/CausalWanModel calls on one cache, in order. Denoising "
                       "calls (updating_cache=False) and cache-refresh calls (updating_cache=True) at the listed "
                       "start frames; every call writes only the first 3 frames of its input into the cache.",
        "batch_size": 1,
        "kv_cache_tokens": RF_CACHE_FRAMES * TOKENS_PER_FRAME,
        "max_attention_tokens": RF_MAX_ATTENTION_FRAMES * TOKENS_PER_FRAME,
        "block_tokens": FRAMES_PER_BLOCK * TOKENS_PER_FRAME,
        "calls": calls_meta,
        "layouts": {"callN.x": "[B, F, C, H, W]", "callN.flow_pred": "[B, F, C, H, W]",
                    "cache.layer0.k": "[B, tokens, heads, head_dim] after the last call; tokens 0-47 (the sink "
                                      "block) are stored UN-roped, all later slots roped at absolute positions"},
        "stats": {f"call{i}.flow_pred": tensor_stats(tensors[f"call{i}.flow_pred"]) for i in range(len(plan))},
    })
    save_scenario(out_dir, "model_trace", tensors, meta)
    save_weights(out_dir, model, commit)


def rf_rollout(mods, out_dir: Path, commit: str, repo: Path, *, num_blocks: int, noise_seed: int) -> None:
    """Official ``inference_rolling_forcing`` with recorded re-noise tensors (only the used 3-frame slice kept)."""
    model = build_tiny_model(mods, backbone="rf")
    wrapper = build_wrapper(mods, model)
    prompt = tiny_prompt_embeds(1, seed=41)
    pipe = make_pipeline(mods, wrapper, prompt, RF_STEP_LIST, RF_CACHE_FRAMES * TOKENS_PER_FRAME)
    calls: list[dict[str, Any]] = []
    log_generator_calls(wrapper, calls)
    num_frames = num_blocks * FRAMES_PER_BLOCK
    noise = latent_noise(num_frames, seed=noise_seed)
    recorder = NoiseRecorder(seed=noise_seed + 1)
    with torch.no_grad(), mock.patch.object(torch, "randn_like", recorder), \
            contextlib.redirect_stdout(io.StringIO()):
        _, latents = pipe.inference_rolling_forcing(noise=noise, text_prompts=["fixture"], return_latents=True)
    cache_after = cache_indices(pipe.kv_cache_clean)
    steps = pipe.denoising_step_list
    num_steps = len(steps)
    # Map each randn_like call to (window, block): in each window, blocks start..end in order, skipping the block
    # that is already at the last level. randn_like draws a full-window tensor; only 3 frames of it are used.
    renoise_meta = []
    used_slices: list[torch.Tensor] = []
    call_idx = 0
    for w, (sb, eb) in enumerate(rf_window_schedule(num_blocks, num_steps)):
        frames = (eb - sb + 1) * FRAMES_PER_BLOCK
        # level = index into denoising_step_list of the timestep each block is fed in this window
        if frames == num_steps * FRAMES_PER_BLOCK:
            levels = [num_steps - 1 - j for j in range(eb - sb + 1)]  # whole shared row, oldest block cleanest
        elif sb == 0:
            levels = [eb - j for j in range(eb - sb + 1)]  # last `frames` entries of the shared row
        else:
            levels = [num_steps - 1 - j for j in range(eb - sb + 1)]  # first `frames` entries
        for j, block in enumerate(range(sb, eb + 1)):
            level = levels[j]
            if level == num_steps - 1:
                continue
            full = recorder.calls[call_idx]
            if full.shape[0] != frames:
                raise ValueError(f"rf_rollout: randn_like call {call_idx} has {full.shape[0]} frames, window {w} "
                                 f"has {frames}")
            # [B*F_window, C, H, W] -> used slice [B, 3, C, H, W]
            used = full[j * FRAMES_PER_BLOCK:(j + 1) * FRAMES_PER_BLOCK].unsqueeze(0)
            key = f"renoise.{call_idx:03d}"
            used_slices.append(used)
            renoise_meta.append({"key": key, "window": w, "block": block,
                                 "frames": [block * 3, block * 3 + 3],
                                 "level_before": level, "timestep_before": float(steps[level]),
                                 "next_timestep": float(steps[level + 1]),
                                 "full_randn_like_shape": list(full.shape),
                                 "slice_in_full": [j * FRAMES_PER_BLOCK, (j + 1) * FRAMES_PER_BLOCK]})
            call_idx += 1
    if call_idx != len(recorder.calls):
        raise ValueError(f"rf_rollout: mapped {call_idx} noise calls, recorded {len(recorder.calls)}")
    # Verify that the stored slices alone reproduce the rollout: replay with zeros outside the used slices.
    replay = []
    for m, used in zip(renoise_meta, used_slices):
        full = torch.zeros(m["full_randn_like_shape"])
        a, b = m["slice_in_full"]
        full[a:b] = used[0]
        replay.append(full)
    model2 = build_tiny_model(mods, backbone="rf")
    wrapper2 = build_wrapper(mods, model2)
    pipe2 = make_pipeline(mods, wrapper2, prompt, RF_STEP_LIST, RF_CACHE_FRAMES * TOKENS_PER_FRAME)
    with torch.no_grad(), mock.patch.object(torch, "randn_like", NoiseReplayer(replay)), \
            contextlib.redirect_stdout(io.StringIO()):
        _, latents2 = pipe2.inference_rolling_forcing(noise=noise, text_prompts=["fixture"], return_latents=True)
    if not torch.equal(latents, latents2):
        raise ValueError("rf_rollout: replay with only the used noise slices does not reproduce the output")
    tensors = {"prompt_embeds": prompt, "noise": noise, "output": latents}
    for m, used in zip(renoise_meta, used_slices):
        tensors[m["key"]] = used
    meta = common_meta("rf", commit, repo)
    meta.update({
        "scenario": "rollout",
        "description": f"inference_rolling_forcing: {num_blocks} blocks x 3 frames, 5 warped steps, window of 5 "
                       f"blocks, context_noise 0, cache 24 frames (tiny 384 tokens) so that blocks 8+ evict.",
        "batch_size": 1,
        "num_latent_frames": num_frames,
        "num_blocks": num_blocks,
        "denoising_step_list": RF_STEP_LIST,
        "warp_denoising_step": True,
        **scheduler_tables(wrapper, steps),
        "context_noise": 0,
        "kv_cache_tokens": RF_CACHE_FRAMES * TOKENS_PER_FRAME,
        "max_attention_tokens": RF_MAX_ATTENTION_FRAMES * TOKENS_PER_FRAME,
        "block_tokens": FRAMES_PER_BLOCK * TOKENS_PER_FRAME,
        "windows": [{"window": w, "start_block": sb, "end_block": eb}
                    for w, (sb, eb) in enumerate(rf_window_schedule(num_blocks, num_steps))],
        "cache_indices_after": cache_after,
        "renoise_calls": renoise_meta,
        "generator_calls": calls,
        "layouts": {"noise": "[B, F_total, C, H, W] initial noise", "output": "[B, F_total, C, H, W] final latents",
                    "renoise.NNN": "[B, 3, C, H, W]: the 3-frame slice of the official full-window randn_like "
                                   "draw that is actually used (other frames of that draw are discarded)"},
        "stats": {"output": tensor_stats(latents)},
    })
    save_scenario(out_dir, "rollout", tensors, meta)


def run_rf(repo: Path, out: Path, commit_override: str | None) -> None:
    commit = repo_commit(repo, commit_override)
    mods = prepare_official_imports(repo, "rf")
    out_dir = out / "rolling_forcing"
    probe = build_wrapper(mods, build_tiny_model(mods, backbone="rf"))
    timesteps = torch.cat((probe.scheduler.timesteps.cpu(), torch.tensor([0.0])))
    warped = timesteps[1000 - torch.tensor(RF_STEP_LIST)]
    rf_model_trace(mods, out_dir, commit, repo, warped)
    rf_rollout(mods, out_dir, commit, repo, num_blocks=10, noise_seed=400)


# ---------------------------------------------------------------------------------------------------------------------
# Real 1.3B parameter list.
# ---------------------------------------------------------------------------------------------------------------------
def run_params(repo: Path, out: Path, commit_override: str | None) -> None:
    commit = repo_commit(repo, commit_override)
    mods = prepare_official_imports(repo, "sf")
    with torch.device("meta"):
        model = mods.causal.CausalWanModel(**WAN_1_3B_CONFIG)
    sd = model.state_dict()
    shapes = {k: list(v.shape) for k, v in sd.items()}
    total = sum(math.prod(s) for s in shapes.values())
    write_json(out / "wan_t2v_1_3b_params.json", {
        "official_repo": "guandeh17/Self-Forcing",
        "official_commit": commit,
        "class": "wan.modules.causal_model.CausalWanModel",
        "config": WAN_1_3B_CONFIG,
        "checkpoint_key_prefix": "model.",
        "checkpoint_note": "Checkpoint dicts hold 'generator' / 'generator_ema'; keys there carry the "
                           "WanDiffusionWrapper prefix 'model.' (and possibly '_fsdp_wrapped_module.' segments in "
                           "generator_ema). The names below are WITHOUT that prefix.",
        "num_tensors": len(shapes),
        "total_parameters": total,
        "params": shapes,
    })
    print(f"wrote {out / 'wan_t2v_1_3b_params.json'} ({len(shapes)} tensors, {total} parameters)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sf-repo", type=Path, required=True, help="local checkout of guandeh17/Self-Forcing")
    parser.add_argument("--rf-repo", type=Path, required=True, help="local checkout of TencentARC/RollingForcing")
    parser.add_argument("--sf-commit", default=None, help="commit sha of --sf-repo (default: git rev-parse HEAD)")
    parser.add_argument("--rf-commit", default=None, help="commit sha of --rf-repo (default: git rev-parse HEAD)")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    parser.add_argument("--part", choices=["all", "sf", "rf", "params"], default="all")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args.part == "all":
        # SF and RF share module names (wan, utils, pipeline): each part runs in its own interpreter.
        for part in ("sf", "rf", "params"):
            cmd = [sys.executable, __file__, "--part", part, "--sf-repo", str(args.sf_repo), "--rf-repo",
                   str(args.rf_repo), "--out", str(args.out)]
            if args.sf_commit:
                cmd += ["--sf-commit", args.sf_commit]
            if args.rf_commit:
                cmd += ["--rf-commit", args.rf_commit]
            subprocess.run(cmd, check=True)
        return
    runners: dict[str, Callable[[Path, str | None], None]] = {
        "sf": lambda o, c: run_sf(args.sf_repo, o, c),
        "rf": lambda o, c: run_rf(args.rf_repo, o, c),
        "params": lambda o, c: run_params(args.sf_repo, o, c),
    }
    commit = args.rf_commit if args.part == "rf" else args.sf_commit
    runners[args.part](args.out, commit)


if __name__ == "__main__":
    main()
