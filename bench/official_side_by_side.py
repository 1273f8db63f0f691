"""Our Self Forcing and Rolling Forcing generators vs the official ones, side by side: same GPU, same config, same
random weights.

The official code (guandeh17/Self-Forcing) is imported from a local checkout (`--official-sf PATH`, never vendored):
its `CausalWanModel` is built at the Wan2.1-T2V-1.3B config and given OUR model's state dict (the key names are the
same; strict load), and its `pipeline/causal_inference.py::CausalInferencePipeline` runs the chunk-wise loop with the
text encoder replaced by fixed random prompt embeddings [1, 512, 4096] and the VAE by an identity (the decode is
timed separately). Its flash-attn calls are routed to torch SDPA in the inputs' dtype (flash-attn is not installable
on our GPU machines; this is what flash-attn computes, on torch's kernels). Official `wan/modules/vae.py` `WanVAE_`
gets random weights; ours (`tokentrim.models.vae.WanVAE`) the SAME weights through our key conversion.

Stages (each in its own try/except: a failed stage is recorded and the next one runs; results are rewritten after
every stage so a cut-off run still leaves them):
  forward  one DiT call on an empty cache, ours vs official (numerics, no timing);
  dit      81 frames (21 latent), official vs each of our speed variants (`--ours-variants`), 1 warm-up each
           (excluded; its output is the equality check), then `--repeats` rounds interleaved A B C A B C;
  long     (run last) 30 s rollout (120 latent, 21-frame window, 3 sink frames): official `local_attn_size=21, sink_size=3`
           (its own rolling KV cache) vs our fastest `dit` variant, `--long-repeats` rounds, interleaved;
  vae      decode of 21 latent frames -> 81 frames at 480x832, official vs ours vs ours with the harness's decode
           levers (`ours_fast`: channels_last_3d, cudnn.benchmark, fused_norm, implicit_padding, native_upsample,
           subpixel_upsample; + cudnn_benchmark_all with `--vae-cudnn-benchmark-all`), and `ours_fast_no_<lever>`
           without each of the last four (what each one gains); `ours_fast_k<k>` decodes k latent frames per decoder
           call (`--vae-frames-per-call`);
  end-to-end FPS = pixel frames / (median DiT s + median decode s): every DiT variant with `ours_fast`, and ours with
           its fastest DiT and decode rows;
  profile  (after dit) one more 81-frame video each of official and our fastest variant under torch.profiler: GPU
           kernel time by kind (attention, GEMM, inductor-fused, copies, eager elementwise/reduction) against the
           video's wall time, and the top kernels; wall minus kernel time is where the GPU idles (launch-bound Python);
           the idle gaps between kernels on the device timeline, with the kernels around the longest;
  rf       Rolling Forcing, 81 frames (21 latent): the official TencentARC/RollingForcing
           `inference_rolling_forcing` (`--official-rf PATH`, bench/official_rf.py) vs our `RollingForcingPipeline`
           (no TokenTrim) with each speed variant (`--rf-variants`, same syntax as `--ours-variants`), 1 warm-up each
           (its output is the equality check), then `--repeats` rounds interleaved; ours draws its re-noising noise
           in the official order and shapes (`official_rf.official_renoise_source`), so seeded videos match;
  rf_profile (after rf) the profile stage's breakdown for the official RF loop and our fastest RF variant;
  rf_long  (after rf) 30 s (120 latent frames), official vs our fastest RF variant, `--long-repeats` rounds
           interleaved (no warm-up: the rf stage compiled every window shape; round 0 is the equality check);
Order: forward, dit, profile, vae, end-to-end, rf, rf_profile, rf_long, long (the longest stages last, so a time
limit cuts them first). Results: side_by_side[_rf]_<gpu>_<yyyymm>[_<tag>].{json,md} (`_rf` when only RF stages run).
Timing: torch.cuda.synchronize() around each video; first-block latency = start -> end of the first block's last
denoising call (one extra sync per video, in every variant); peak memory = max_memory_allocated during the video
minus what was allocated before it, plus the variant's own weights (both models stay resident), plus what either
side keeps between videos (the official's caches; our CUDA graphs' pool and static inputs, lever `graphs`).

    python bench/official_side_by_side.py --official-sf .official/sf --out $OUT --repeats 5
    python bench/official_side_by_side.py --official-sf /work/official/sf --tiny --device cpu --out /tmp/sbs
    python bench/official_side_by_side.py --official-rf .official/RollingForcing --what rf,rf_profile,rf_long \
        --repeats 3 --long-repeats 2 --out $OUT --tag a     # H200: about 6 min (compiling 5 window shapes: ~2-3)
    python bench/official_side_by_side.py --official-rf /tmp/rf --tiny --device cpu --what rf,rf_long --out /tmp/sbs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exec_path  # noqa: E402  (bench-only helpers)
import official_rf  # noqa: E402  (the official Rolling Forcing loop)
from official_common import official_pipeline, stub_official_packages  # noqa: E402
from bench_config import with_config_defaults  # noqa: E402

from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.models.vae import WanVAE, convert_original_vae_state_dict  # noqa: E402
from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig  # noqa: E402
from tokentrim.pipelines.rolling_forcing import RollingForcingPipeline, window_schedule  # noqa: E402
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline  # noqa: E402
from tokentrim.report.atomic_io import write_text_atomic  # noqa: E402

STEP_LIST = [1000, 750, 500, 250]  # official configs/self_forcing_dmd.yaml
BLOCK_FRAMES = 3
TIMESTEP_SHIFT = 5.0
WEIGHT_SEED = 20251127
SF_STAGES = ("forward", "dit", "long", "vae", "profile")
RF_STAGES = ("rf", "rf_profile", "rf_long")


@dataclass(frozen=True)
class Geometry:
    """Sizes of one bench setting. Full = the released 81-frame Self Forcing model; tiny = CPU plumbing check."""

    model: dict
    latent_height: int
    latent_width: int
    short_frames: int
    long_frames: int
    window_frames: int
    sink_frames: int
    vae: dict = field(default_factory=dict)  # WanVAE kwargs (ours); the official gets the same as dim=base_dim
    vae_latent_frames: int = 21
    rf_short_frames: int = 21  # Rolling Forcing: 81 frames; needs >= one full window (5 blocks = 15 frames)
    rf_long_frames: int = 120  # 30 s; the tiny one still fills the 24-frame cache (eviction)

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // 2) * (self.latent_width // 2)


FULL = Geometry(model={}, latent_height=60, latent_width=104, short_frames=21, long_frames=120, window_frames=21,
                sink_frames=3, vae={"base_dim": 96})
TINY = Geometry(model=dict(text_len=8, dim=64, ffn_dim=128, text_dim=32, num_heads=2, num_layers=2),
                latent_height=8, latent_width=8, short_frames=6, long_frames=12, window_frames=6, sink_frames=3,
                vae={"base_dim": 8}, vae_latent_frames=4, rf_short_frames=15, rf_long_frames=30)


def parse_variant(spec: str) -> WanSpeedConfig:
    """'eager' | '+'-joined levers: cudnn (cuDNN then flash SDPA), flash, math, compile (inductor), aot (aot_eager),
    tokmajor (token-major q/k/v and KV cache), gelu (the FFN's GEMM with a GELU epilogue), tune (inductor's
    coordinate-descent tuning of the compiled kernels), graphs (CUDA graphs of the repeated cached calls), kvsplitK
    (the self-attention's keys in K chunks of one call, e.g. kvsplit2; needs tokmajor)."""
    backends: list[str] = []
    compile_backend = None
    switches = {"tokmajor": "token_major", "gelu": "gelu_epilogue", "tune": "compile_tuning", "graphs": "cuda_graphs"}
    on: dict[str, bool | int] = {}
    for lever in spec.split("+"):
        if lever == "eager":
            continue
        if lever.startswith("kvsplit") and lever[len("kvsplit"):].isdigit():
            on["attention_kv_splits"] = int(lever[len("kvsplit"):])
            continue
        if lever in switches:
            on[switches[lever]] = True
            continue
        if lever == "cudnn":
            backends += ["cudnn", "flash"]
        elif lever in ("flash", "math", "efficient"):
            backends.append(lever)
        elif lever == "compile":
            compile_backend = "inductor"
        elif lever == "aot":
            compile_backend = "aot_eager"
        else:
            raise ValueError(f"--ours-variants: unknown lever {lever!r} in {spec!r} "
                             f"(eager, cudnn, flash, math, efficient, compile, aot, {', '.join(switches)}, kvsplitK)")
    return WanSpeedConfig(attention_backends=tuple(backends), compile_blocks=compile_backend is not None,
                          compile_backend=compile_backend or "inductor", **on)


# ---------------------------------------------------------------------------------------------- helpers
def _positive_ints(text: str) -> list[int]:
    """'2,3' -> [2, 3] (argparse type; a bad list is one argparse error line)."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weights_gib(module: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**30


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    """max / mean abs difference, and each relative to the reference's max / mean magnitude."""
    diff = (ours.float() - ref.float()).abs()
    ref_abs = ref.float().abs()
    out = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
           "rel_max": float(diff.max() / ref_abs.max().clamp_min(1e-12)),
           "rel_mean": float(diff.mean() / ref_abs.mean().clamp_min(1e-12))}
    # bf16 has 8 bits of mantissa (rel. step 2^-8 = 0.4%); a few-step rollout compounds it: accept 1% mean, 10% max
    out["within_bf16_tolerance"] = out["rel_mean"] <= 1e-2 and out["rel_max"] <= 1e-1
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def graphs_gib(model: CausalWanModel, speed: WanSpeedConfig) -> float:
    """Memory held by the model's CUDA graphs of one lever setting (0 without graphs)."""
    graphs = model.__dict__.get("_graph_sets", {}).get(speed) if speed.cuda_graphs else None
    return graphs.held_bytes() / 2**30 if graphs is not None else 0.0


def official_cache_gib(pipeline) -> float:
    """GiB of the caches the official pipeline keeps between calls (`kv_cache1`, `crossattn_cache`: lists of dicts of
    tensors, allocated on its first call)."""
    total = 0
    for name in ("kv_cache1", "crossattn_cache"):
        for entry in getattr(pipeline, name, None) or []:
            total += sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, torch.Tensor))
    return total / 2**30


class Timer:
    """Times one video: total, first-block latency (via a forward hook on the DiT call counter), peak memory."""

    def __init__(self, device: torch.device, hook_module: torch.nn.Module, first_block_calls: int, own_weights_gib: float,
                 resident_gib=None):
        self.device, self.hook_module, self.first_block_calls = device, hook_module, first_block_calls
        self.own_weights_gib = own_weights_gib
        # memory the side keeps allocated between videos (the official pipeline keeps its KV / cross-attention caches
        # from the first call on and refills them in place): counted, or its peak would leave the cache out
        self.resident_gib = resident_gib or (lambda: 0.0)

    def __call__(self, fn) -> tuple[dict, object]:
        calls = [0]
        marks: dict[str, float] = {}

        def hook(_module, _inputs, _output):
            calls[0] += 1
            if calls[0] == self.first_block_calls:
                sync(self.device)
                marks["first"] = time.perf_counter()

        handle = self.hook_module.register_forward_hook(hook)
        is_cuda = self.device.type == "cuda"
        try:
            if is_cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
                base = torch.cuda.memory_allocated(self.device)
            sync(self.device)
            start = time.perf_counter()
            out = fn()
            sync(self.device)
            total = time.perf_counter() - start
        finally:
            handle.remove()
        peak = None
        if is_cuda:
            peak = (torch.cuda.max_memory_allocated(self.device) - base) / 2**30 + self.own_weights_gib + self.resident_gib()
        first = marks["first"] - start if "first" in marks else None
        return {"total_s": total, "first_block_s": first, "peak_mem_gib": peak, "dit_calls": calls[0]}, out


# ---------------------------------------------------------------------------------------------- official code
def official_sdpa(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
                  window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None, fa_version=None):
    """Stand-in for the official `flash_attention` / `attention` ([B, L, n, d] in and out): torch SDPA in the
    inputs' dtype. The inference path never passes lengths, windows, causal or scales: refuse them."""
    if q_lens is not None or k_lens is not None or causal or tuple(window_size) != (-1, -1) or dropout_p:
        raise ValueError(f"official_sdpa: unsupported options q_lens={q_lens} k_lens={k_lens} causal={causal} "
                         f"window_size={window_size} dropout_p={dropout_p}")
    if softmax_scale is not None or q_scale is not None:
        raise ValueError(f"official_sdpa: softmax_scale/q_scale must be None, got {softmax_scale}/{q_scale}")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, n, L, d]
    return out.transpose(1, 2).contiguous()  # [B, n, L, d] -> [B, L, n, d]


def import_official(repo: Path) -> types.SimpleNamespace:
    """Import the official modules with stubs for what inference does not use (T5, tokenizer, demo memory utils)."""
    repo = repo.resolve()
    if not (repo / "pipeline/causal_inference.py").is_file():
        raise FileNotFoundError(f"--official-sf: {repo}/pipeline/causal_inference.py does not exist")
    stub_official_packages(repo, ("wan", "wan.modules", "pipeline", "demo_utils"))
    mem = types.ModuleType("demo_utils.memory")  # calls torch.cuda.current_device() at import; low_memory unused
    mem.gpu = torch.device("cpu")
    mem.get_cuda_free_memory_gb = lambda *a, **k: 0.0
    mem.DynamicSwapInstaller = object
    mem.move_model_to_device_with_memory_preservation = lambda *a, **k: None
    sys.modules["demo_utils.memory"] = mem
    # causal_model.py compiles flex_attention at import (training path only): make torch.compile the identity there
    with mock.patch.object(torch, "compile", lambda fn=None, *a, **k: fn):
        import pipeline.causal_inference as pipeline_mod
        import utils.wan_wrapper as wrapper_mod
        import wan.modules.attention as attention_mod
        import wan.modules.causal_model as causal_mod
        import wan.modules.model as model_mod
        import wan.modules.vae as vae_mod
    attention_mod.attention = attention_mod.flash_attention = official_sdpa
    model_mod.flash_attention = official_sdpa
    causal_mod.attention = official_sdpa
    return types.SimpleNamespace(causal=causal_mod, wrapper=wrapper_mod, pipeline=pipeline_mod, vae=vae_mod, repo=repo)


def build_official(mods, ours: CausalWanModel, geo: Geometry, prompt_embeds: torch.Tensor, device, dtype):
    """Official wrapper + pipeline holding our weights; returns (pipeline, wrapper)."""
    cfg = ours.config
    pipe, model, wrapper = official_pipeline(mods, ours, step_list=STEP_LIST, block_frames=BLOCK_FRAMES,
                                             timestep_shift=TIMESTEP_SHIFT, prompt_embeds=prompt_embeds,
                                             device=device, dtype=dtype)
    if geo is TINY:  # the official loop hard-codes the 1.3B geometry (30 layers, 1560 tokens, 12x128 heads, 512 text)
        pipe.num_transformer_blocks = cfg.num_layers
        pipe.frame_seq_length = geo.tokens_per_frame
        heads, head_dim = cfg.num_heads, cfg.dim // cfg.num_heads

        def init_kv(self, batch_size, dtype, device):
            frames = self.local_attn_size if self.local_attn_size != -1 else 21
            shape = [batch_size, frames * geo.tokens_per_frame, heads, head_dim]
            self.kv_cache1 = [{"k": torch.zeros(shape, dtype=dtype, device=device),
                               "v": torch.zeros(shape, dtype=dtype, device=device),
                               "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
                               "local_end_index": torch.tensor([0], dtype=torch.long, device=device)}
                              for _ in range(cfg.num_layers)]

        def init_xattn(self, batch_size, dtype, device):
            shape = [batch_size, cfg.text_len, heads, head_dim]
            self.crossattn_cache = [{"k": torch.zeros(shape, dtype=dtype, device=device),
                                     "v": torch.zeros(shape, dtype=dtype, device=device), "is_init": False}
                                    for _ in range(cfg.num_layers)]

        pipe._initialize_kv_cache = types.MethodType(init_kv, pipe)
        pipe._initialize_crossattn_cache = types.MethodType(init_xattn, pipe)
    set_official_window(pipe, geo, window=-1, sink=0)
    return pipe, wrapper


def set_official_window(pipe, geo: Geometry, *, window: int, sink: int) -> None:
    """The official rolling cache: `local_attn_size` frames attended (block included), `sink_size` frames kept.
    -1 = its default 32760-token cache (= 21 frames of 1560 tokens: the 81-frame setting)."""
    model = pipe.generator.model
    model.local_attn_size = window
    pipe.local_attn_size = window
    for block in model.blocks:
        attn = block.self_attn
        attn.local_attn_size, attn.sink_size = window, sink
        attn.max_attention_size = (21 if window == -1 else window) * geo.tokens_per_frame
    pipe.kv_cache1 = None  # re-sized at the next video


def run_official(pipe, noise: torch.Tensor, seed: int) -> torch.Tensor:
    pipe.kv_cache1 = None  # fresh caches allocated inside the video, as ours are
    pipe.crossattn_cache = None
    torch.manual_seed(seed)  # its re-noising draws torch.randn_like from the default generator
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every timestep
        _video, latents = pipe.inference(noise, ["side-by-side"], return_latents=True)
    return latents


# ---------------------------------------------------------------------------------------------- ours
def build_ours(geo: Geometry, device, dtype) -> CausalWanModel:
    """Our DiT with seeded random weights (norm gains near 1, so activations keep a realistic scale)."""
    with torch.device("meta"):
        model = CausalWanModel(**geo.model)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.02, generator=gen)
            if ".norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model.to(dtype).eval().requires_grad_(False)


def run_ours(model: CausalWanModel, pipe: SelfForcingPipeline, prompt_embeds, noise: torch.Tensor, seed: int):
    context_kv = model.encode_context(prompt_embeds)  # per video, as the official fills its cross-attn cache per video
    torch.manual_seed(seed)  # same default-generator draws, same order and shapes as the official randn_like
    return pipe(noise, context_kv, noise_source=lambda s: torch.randn(s, device=noise.device, dtype=noise.dtype))


# ---------------------------------------------------------------------------------------------- stages
class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = torch.float32 if args.tiny and self.device.type == "cpu" else torch.bfloat16
        self.geo = TINY if args.tiny else FULL
        self.record: dict = {"protocol": __doc__.split("Stages")[0].strip(), "args": vars(args) | {"out": str(args.out)},
                             "notes": [], "stages": {}}
        self.official = None
        self.official_rf = None
        self.variants = {name: parse_variant(name) for name in args.ours_variants.split(",")}
        self.best_variant = next(iter(self.variants))
        self.rf_variants = {name: parse_variant(name) for name in args.rf_variants.split(",")}
        self.best_rf_variant = next(iter(self.rf_variants))
        self.paths: dict[str, dict] = {}  # ours variant -> the execution path its videos ran (bench/exec_path.py)
        self.record["execution_path"] = self.paths

    # -- bookkeeping
    def stage(self, name: str, fn) -> None:
        log(f"stage {name} ...")
        start = time.perf_counter()
        try:
            self.record["stages"][name] = fn() | {"stage_s": time.perf_counter() - start}
            log(f"stage {name} done in {time.perf_counter() - start:.1f} s")
        except Exception as err:  # one GPU call must yield everything it can: record and go on
            self.record["stages"][name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                                           "stage_s": time.perf_counter() - start}
            log(f"stage {name} FAILED: {type(err).__name__}: {err}")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.write()

    def write(self) -> None:
        env = self.record.get("env") or {}
        gpu = (env.get("gpu_name") or "cpu").replace(" ", "_")
        rf_only = all(w in RF_STAGES for w in self.args.what.split(",") if w)
        tag = f"_{self.args.tag}" if self.args.tag else ""
        stem = self.args.out / f"side_by_side{'_rf' if rf_only else ''}_{gpu}_{time.strftime('%Y%m')}{tag}"
        write_text_atomic(stem.with_suffix(".json"), json.dumps(self.record, indent=1, default=str))
        write_text_atomic(stem.with_suffix(".md"), render_markdown(self.record))

    # -- setup
    def setup(self) -> dict:
        geo, device, dtype = self.geo, self.device, self.dtype
        torch.manual_seed(WEIGHT_SEED)
        self.ours = build_ours(geo, device, dtype)
        cfg = self.ours.config
        gen = torch.Generator(device=device).manual_seed(1)
        self.prompt_embeds = torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype, generator=gen)
        shape = (1, geo.short_frames, cfg.in_dim, geo.latent_height, geo.latent_width)
        self.noise_short = torch.randn(shape, device=device, dtype=dtype, generator=gen)
        self.noise_long = torch.randn((1, geo.long_frames, *shape[2:]), device=device, dtype=dtype, generator=gen)
        self.steps = len(STEP_LIST)
        rf_shape = (1, geo.rf_short_frames, *shape[2:])
        self.noise_rf = torch.randn(rf_shape, device=device, dtype=dtype, generator=gen)
        self.noise_rf_long = torch.randn((1, geo.rf_long_frames, *shape[2:]), device=device, dtype=dtype, generator=gen)
        out = {"ours_weights_gib": weights_gib(self.ours), "dtype": str(dtype), "geometry": "tiny" if self.args.tiny else "full",
               "num_params": sum(p.numel() for p in self.ours.parameters())}
        if self.args.official_sf is not None:
            self.mods = import_official(Path(self.args.official_sf))
            self.official, self.official_wrapper = build_official(self.mods, self.ours, geo, self.prompt_embeds, device, dtype)
            out["official_weights_gib"] = weights_gib(self.official_wrapper)
            out["official_repo"] = str(self.mods.repo)
            self.record["notes"].append("official flash-attn calls routed to torch SDPA in the inputs' dtype "
                                        "(flash-attn is not installable on the GPU machine)")
        else:
            self.record["notes"].append("no --official-sf: our Self Forcing side only")
        if self.args.official_rf is not None:  # after Self Forcing's: it replaces the shared package names
            self.mods_rf = official_rf.import_official_rf(Path(self.args.official_rf), official_sdpa)
            self.official_rf, self.official_rf_wrapper = official_rf.build_official_rf(
                self.mods_rf, self.ours, tokens_per_frame=geo.tokens_per_frame, full_geometry=not self.args.tiny,
                prompt_embeds=self.prompt_embeds, device=device, dtype=dtype)
            out["official_rf_weights_gib"] = weights_gib(self.official_rf_wrapper)
            out["official_rf_repo"] = str(self.mods_rf.repo)
        else:
            self.record["notes"].append("no --official-rf: our Rolling Forcing side only")
        return out

    def ours_pipe(self, window: int, sink: int) -> SelfForcingPipeline:
        cfg = SelfForcingConfig(denoising_steps=tuple(STEP_LIST), shift=TIMESTEP_SHIFT, block_frames=BLOCK_FRAMES,
                                max_frames=window, sink_frames=sink)
        return SelfForcingPipeline(self.ours, cfg)

    def runners(self, noise, ours_pipe, names) -> dict:
        """name -> (timer, run(seed) -> latents); the ours variants switch speed levers before each video."""
        out = {}
        if self.official is not None and "official" in names:
            timer = Timer(self.device, self.official_wrapper, self.steps, weights_gib(self.official_wrapper),
                          resident_gib=lambda: official_cache_gib(self.official))
            out["official"] = (timer, lambda seed: run_official(self.official, noise, seed))
        for name, speed in self.variants.items():
            if f"ours_{name}" not in names:
                continue

            def run(seed, speed=speed, name=name):
                self.ours.set_speed(speed)
                before = exec_path.counts(self.ours)
                latents = run_ours(self.ours, ours_pipe, self.prompt_embeds, noise, seed)
                self.paths[f"ours_{name}"] = exec_path.accumulate(self.paths.get(f"ours_{name}"),
                                                                  exec_path.observe(self.ours, before))
                return latents

            # graphs hold a memory pool and static inputs that a replay does not allocate: counted as resident
            out[f"ours_{name}"] = (Timer(self.device, self.ours, self.steps, weights_gib(self.ours),
                                         resident_gib=lambda speed=speed: graphs_gib(self.ours, speed)), run)
        return out

    def interleaved(self, runners: dict, repeats: int, warmup: bool) -> tuple[dict, dict]:
        """Warm-up (seed 0, kept as the equality output) then `repeats` rounds A B C ...; per-variant stats."""
        outputs, runs = {}, {k: [] for k in runners}
        for name, (timer, run) in runners.items():
            if warmup:
                log(f"  warm-up {name}")
                _, outputs[name] = timer(lambda: run(0))
        for r in range(repeats):
            for name, (timer, run) in runners.items():
                stats, latents = timer(lambda: run(r + 1))
                runs[name].append(stats)
                if name not in outputs:
                    outputs[name] = latents
                log(f"  round {r} {name}: {stats['total_s']:.3f} s")
        return runs, outputs

    def table(self, runs: dict, pixel_frames: int) -> dict:
        rows = {}
        for name, rs in runs.items():
            if not rs:
                continue
            total = summary([r["total_s"] for r in rs])
            firsts = [r["first_block_s"] for r in rs if r["first_block_s"] is not None]
            peaks = [r["peak_mem_gib"] for r in rs if r["peak_mem_gib"] is not None]
            rows[name] = {"total_s": total, "fps_dit_only": pixel_frames / total["median"],
                          "first_block_s": summary(firsts) if firsts else None,
                          "peak_mem_gib": max(peaks) if peaks else None, "dit_calls": rs[0]["dit_calls"]}
        if "official" in rows:
            for row in rows.values():
                row["speedup_vs_official"] = rows["official"]["total_s"]["median"] / row["total_s"]["median"]
        return rows

    @staticmethod
    def equality(outputs: dict, first: str) -> dict:
        """Each output vs the official's and each other `ours_*` output vs `first` (our first, eager-most variant)."""
        ref = outputs.get("official")
        out = {}
        for name, latents in outputs.items():
            if name != "official" and ref is not None:
                out[f"{name}_vs_official"] = compare(latents, ref)
            if name.startswith("ours_") and name != first and first in outputs:
                out[f"{name}_vs_{first}"] = compare(latents, outputs[first])
        return out

    def sf_equality(self, outputs: dict) -> dict:
        return self.equality(outputs, f"ours_{next(iter(self.variants))}")

    @staticmethod
    def fastest_ours(rows: dict, default: str) -> str:
        """The variant name (without `ours_`) of the `ours_*` row with the lowest median time; `default` if none."""
        ours_rows = {k: v for k, v in rows.items() if k.startswith("ours_")}
        if not ours_rows:
            return default
        return min(ours_rows, key=lambda k: ours_rows[k]["total_s"]["median"])[len("ours_"):]

    # -- stages
    def stage_forward(self) -> dict:
        """One DiT call on a fresh cache (block 0, t = 1000): the networks alone, ours vs official."""
        if self.official is None:
            raise ValueError("stage forward needs --official-sf")
        geo, device = self.geo, self.device
        x = self.noise_short[:, :BLOCK_FRAMES]
        t = torch.full((1, BLOCK_FRAMES), 1000.0, device=device)
        results = {}
        for name, speed in self.variants.items():
            self.ours.set_speed(speed)
            cache = self.ours.new_cache(height=geo.latent_height, width=geo.latent_width, max_frames=21, block_frames=BLOCK_FRAMES)
            cache.begin_block(0, BLOCK_FRAMES * geo.tokens_per_frame)
            with torch.no_grad():
                ours = self.ours(x, t, self.ours.encode_context(self.prompt_embeds), start_frame=0, cache=cache)
            results[name] = ours
        pipe = self.official
        pipe.kv_cache1 = None
        pipe._initialize_kv_cache(batch_size=1, dtype=self.dtype, device=device)
        pipe._initialize_crossattn_cache(batch_size=1, dtype=self.dtype, device=device)
        with torch.no_grad():
            flow, _ = self.official_wrapper(noisy_image_or_video=x, conditional_dict={"prompt_embeds": self.prompt_embeds},
                                            timestep=t.long(), kv_cache=pipe.kv_cache1, crossattn_cache=pipe.crossattn_cache,
                                            current_start=0)
        pipe.kv_cache1 = None
        return {f"ours_{name}_vs_official": compare(v, flow) for name, v in results.items()}

    def stage_dit(self) -> dict:
        names = ["official"] + [f"ours_{n}" for n in self.variants]
        pipe = self.ours_pipe(window=21, sink=0)
        runs, outputs = self.interleaved(self.runners(self.noise_short, pipe, names), self.args.repeats, warmup=True)
        rows = self.table(runs, 1 + 4 * (self.geo.short_frames - 1))
        self.best_variant = self.fastest_ours(rows, self.best_variant)
        return {"latent_frames": self.geo.short_frames, "variants": rows, "equality": self.sf_equality(outputs),
                "fastest_ours": f"ours_{self.best_variant}",
                "speed_configs": {f"ours_{n}": vars(s) for n, s in self.variants.items()}}

    def stage_profile(self) -> dict:
        """One 81-frame video per variant (official, our fastest) under torch.profiler, after the dit stage's warm-up."""
        pipe = self.ours_pipe(window=21, sink=0)
        runners = self.runners(self.noise_short, pipe, ["official", f"ours_{self.best_variant}"])
        return {"latent_frames": self.geo.short_frames, **self.profile_runs(runners)}

    def profile_runs(self, runners: dict) -> dict:
        """One video per runner under torch.profiler: kernel time by kind, top kernels, device idle gaps."""
        from torch.profiler import ProfilerActivity, profile

        cuda = self.device.type == "cuda"
        activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
        out = {}
        for name, (_timer, run) in runners.items():
            sync(self.device)
            with profile(activities=[activity]) as prof:
                start = time.perf_counter()
                with torch.no_grad():
                    run(100)
                sync(self.device)
                wall = time.perf_counter() - start
            kernels = [(e.key, (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6, e.count)
                       for e in prof.key_averages()]
            kernels = [k for k in kernels if k[1] > 0]
            by_kind: dict[str, float] = {}
            for key, seconds, _ in kernels:
                by_kind[kernel_kind(key)] = by_kind.get(kernel_kind(key), 0.0) + seconds
            busy = sum(by_kind.values())
            top = sorted(kernels, key=lambda k: -k[1])[:12]
            gaps = kernel_gaps(prof) if cuda else None
            out[name] = {"wall_s": wall, "kernel_s": busy, "idle_s": max(0.0, wall - busy) if cuda else None,
                         "gaps": gaps,
                         "by_kind_s": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
                         "top": [{"kernel": k[:120], "s": sec, "calls": n} for k, sec, n in top],
                         "kernels": [{"kernel": k, "s": sec, "calls": n} for k, sec, n in kernels]}
            log(f"  profile {name}: wall {wall:.3f} s, kernels {busy:.3f} s, {out[name]['by_kind_s']}")
        return {"activity": "cuda kernels" if cuda else "cpu ops", "variants": out}

    def stage_long(self) -> dict:
        geo = self.geo
        if self.official is not None:
            set_official_window(self.official, geo, window=geo.window_frames, sink=geo.sink_frames)
        pipe = self.ours_pipe(window=geo.window_frames, sink=geo.sink_frames)
        names = ["official", f"ours_{self.best_variant}"]
        try:
            runs, outputs = self.interleaved(self.runners(self.noise_long, pipe, names), self.args.long_repeats, warmup=False)
        finally:
            if self.official is not None:
                set_official_window(self.official, geo, window=-1, sink=0)
        return {"latent_frames": geo.long_frames, "window_frames": geo.window_frames, "sink_frames": geo.sink_frames,
                "official_expression": "CausalWanModel local_attn_size=window, sink_size=sink (its rolling KV cache)",
                "variants": self.table(runs, 1 + 4 * (geo.long_frames - 1)), "equality": self.sf_equality(outputs)}

    # -- Rolling Forcing
    def rf_runners(self, noise, names) -> dict:
        """name -> (timer, run(seed) -> latents) for the official RF loop and our RF variants. The timer's first
        block = the denoising call that finishes block 0 (window K-1): the official loop refreshes after every window
        (2 calls per window before it), ours only the clean blocks a later window reads (none before it)."""
        config = official_rf.ours_config()
        official_first_block_calls = 2 * (config.window_blocks - 1) + 1
        before_first_clean = window_schedule(config.window_blocks, config.window_blocks)[: config.window_blocks - 1]
        first_block_calls = sum(1 + w.refresh for w in before_first_clean) + 1
        out = {}
        if self.official_rf is not None and "official" in names:
            timer = Timer(self.device, self.official_rf_wrapper, official_first_block_calls, weights_gib(self.official_rf_wrapper),
                          resident_gib=lambda: official_rf.official_cache_gib(self.official_rf))
            out["official"] = (timer, lambda seed: official_rf.run_official_rf(self.official_rf, noise, seed))
        pipe = RollingForcingPipeline(self.ours, config)
        for name, speed in self.rf_variants.items():
            if f"ours_{name}" not in names:
                continue

            def run(seed, speed=speed, name=name):
                self.ours.set_speed(speed)
                before = exec_path.counts(self.ours)
                context_kv = self.ours.encode_context(self.prompt_embeds)  # per video, as the official's cache
                torch.manual_seed(seed)  # the official loop's draws: same generator, order and shapes
                latents = pipe(noise, context_kv, noise_source=official_rf.official_renoise_source(config, noise))
                self.paths[f"rf_ours_{name}"] = exec_path.accumulate(self.paths.get(f"rf_ours_{name}"),
                                                                     exec_path.observe(self.ours, before))
                return latents

            out[f"ours_{name}"] = (Timer(self.device, self.ours, first_block_calls, weights_gib(self.ours)), run)
        return out

    def rf_equality(self, outputs: dict) -> dict:
        return self.equality(outputs, f"ours_{next(iter(self.rf_variants))}")

    def stage_rf(self) -> dict:
        names = ["official"] + [f"ours_{n}" for n in self.rf_variants]
        runs, outputs = self.interleaved(self.rf_runners(self.noise_rf, names), self.args.repeats, warmup=True)
        rows = self.table(runs, 1 + 4 * (self.geo.rf_short_frames - 1))
        self.best_rf_variant = self.fastest_ours(rows, self.best_rf_variant)
        return {"latent_frames": self.geo.rf_short_frames, "variants": rows, "equality": self.rf_equality(outputs),
                "fastest_ours": f"ours_{self.best_rf_variant}",
                "speed_configs": {f"ours_{n}": vars(s) for n, s in self.rf_variants.items()}}

    def stage_rf_long(self) -> dict:
        names = ["official", f"ours_{self.best_rf_variant}"]
        runs, outputs = self.interleaved(self.rf_runners(self.noise_rf_long, names), self.args.long_repeats,
                                         warmup=False)
        return {"latent_frames": self.geo.rf_long_frames, "variants": self.table(runs, 1 + 4 * (self.geo.rf_long_frames - 1)),
                "equality": self.rf_equality(outputs)}

    def stage_rf_profile(self) -> dict:
        """One 81-frame RF video each of the official loop and our fastest RF variant under torch.profiler."""
        runners = self.rf_runners(self.noise_rf, ["official", f"ours_{self.best_rf_variant}"])
        return {"latent_frames": self.geo.rf_short_frames, **self.profile_runs(runners)}

    def stage_vae(self) -> dict:
        geo, device, dtype = self.geo, self.device, self.dtype
        vae_cfg = dict(dim=geo.vae["base_dim"], z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True], dropout=0.0)  # official _video_vae's cfg
        latents = torch.randn(1, geo.vae_latent_frames, 16, geo.latent_height, geo.latent_width, device=device,
                              dtype=dtype, generator=torch.Generator(device=device).manual_seed(2))
        runners = {}
        state_dict = None
        if self.official is not None:
            torch.manual_seed(WEIGHT_SEED)
            with torch.device(device):
                off_model = self.mods.vae.WanVAE_(**vae_cfg)
            with torch.no_grad():  # default init leaves RMS gains at 1; perturb every tensor so all weights matter
                for p in off_model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            state_dict = {k: v.detach().clone() for k, v in off_model.state_dict().items()}
            off_model = off_model.to(dtype).eval().requires_grad_(False)
            wrapper = object.__new__(self.mods.wrapper.WanVAEWrapper)
            torch.nn.Module.__init__(wrapper)
            from tokentrim.models.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD
            wrapper.mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=torch.float32)
            wrapper.std = torch.tensor(WAN21_LATENTS_STD, dtype=torch.float32)
            wrapper.model = off_model
            runners["official"] = (off_model, lambda: wrapper.decode_to_pixel(latents))
        if state_dict is None:  # ours only: random weights in official layout from our own (diffusers) module
            torch.manual_seed(WEIGHT_SEED)
            with torch.device(device):
                ours_vae = WanVAE(base_dim=geo.vae["base_dim"])
        else:
            sd = convert_original_vae_state_dict(state_dict, num_res_blocks=2, num_levels=4)
            ours_vae = WanVAE.from_config_and_state_dict({"base_dim": geo.vae["base_dim"]}, sd, source="official random VAE", dtype=dtype)
        ours_vae = ours_vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
        runners["ours"] = (ours_vae, lambda: ours_vae.decode(latents))

        cuda = device.type == "cuda"
        levers = dict(channels_last_3d=cuda and self.args.vae_channels_last, cudnn_benchmark=True,
                      cudnn_benchmark_all=self.args.vae_cudnn_benchmark_all,
                      fused_norm=cuda and self.args.vae_fused_norm,
                      implicit_padding=cuda and self.args.vae_implicit_padding,
                      native_upsample=cuda and self.args.vae_native_upsample,
                      subpixel_upsample=cuda and self.args.vae_subpixel_upsample)
        fast_levers = [name for name, on in levers.items() if on]

        def with_levers(**levers):  # the harness's decode levers (backbone.speed.vae_*), off again after the call
            def run():
                ours_vae.set_decode_speed(**levers)
                try:
                    return ours_vae.decode(latents)
                finally:
                    ours_vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False)
            return run

        runners["ours_fast"] = (ours_vae, with_levers(**levers))
        # what each newer lever alone gains: ours_fast without it (the first round's ours_fast had neither)
        for lever in ("fused_norm", "implicit_padding", "native_upsample", "subpixel_upsample"):
            if levers[lever]:
                runners[f"ours_fast_no_{lever}"] = (ours_vae, with_levers(**(levers | {lever: False})))
        for k in self.args.vae_frames_per_call:  # ours_fast decoding k latent frames per decoder call
            runners[f"ours_fast_k{k}"] = (ours_vae, with_levers(**levers, frames_per_call=k))
        outputs, runs = {}, {k: [] for k in runners}
        for r in range(-1, self.args.repeats):  # -1 = warm-up, excluded
            for name, (module, fn) in runners.items():
                stats, pixels = Timer(device, torch.nn.Identity(), 1, weights_gib(module))(lambda: torch_no_grad(fn))
                if r < 0:
                    outputs[name] = pixels
                else:
                    runs[name].append(stats)
                log(f"  vae round {r} {name}: {stats['total_s']:.3f} s")
        pixel_frames = int(outputs["ours"].shape[1])
        rows = {name: {"total_s": summary([s["total_s"] for s in rs]), "fps": pixel_frames / statistics.median(s["total_s"] for s in rs),
                       "peak_mem_gib": max((s["peak_mem_gib"] for s in rs if s["peak_mem_gib"] is not None), default=None)}
                for name, rs in runs.items()}
        eq = {}
        if "official" in outputs:
            ref = outputs["official"]  # [B, T, 3, H, W] in [-1, 1], like ours
            for name in outputs:
                if name != "official":
                    eq[f"{name}_vs_official"] = compare(outputs[name], ref)
        return {"latent_frames": geo.vae_latent_frames, "pixel_frames": pixel_frames,
                "pixel_hw": list(outputs["ours"].shape[-2:]), "fast_levers": fast_levers, "variants": rows, "equality": eq}

    def end_to_end(self) -> dict:
        dit = self.record["stages"].get("dit", {}).get("variants", {})
        vae = self.record["stages"].get("vae", {}).get("variants", {})
        if not dit or not vae:
            raise ValueError("end_to_end needs the dit and vae stages")
        frames = 1 + 4 * (self.geo.short_frames - 1)
        fast = [name for name in vae if name == "ours_fast" or name.startswith("ours_fast_k")]
        fastest_decode = min(fast, key=lambda name: vae[name]["total_s"]["median"]) if fast else "ours"
        pairs = {"ours_eager_decode": (f"ours_{next(iter(self.variants))}", "ours")}
        if "ours_fast" in vae:  # every DiT variant with the decode levers as set (the harness's: its defaults)
            pairs |= {f"ours_{name}+ours_fast": (f"ours_{name}", "ours_fast") for name in self.variants
                      if f"ours_{name}" in dit}
        pairs["ours_fastest"] = (f"ours_{self.best_variant}", fastest_decode)
        if "official" in dit and "official" in vae:
            pairs = {"official": ("official", "official"), **pairs}
        out = {}
        for label, (d, v) in pairs.items():
            seconds = dit[d]["total_s"]["median"] + vae[v]["total_s"]["median"]
            out[label] = {"dit": d, "decode": v, "seconds": seconds, "fps": frames / seconds}
        if "official" in out:
            for row in out.values():
                row["speedup_vs_official"] = row["fps"] / out["official"]["fps"]
        return {"pixel_frames": frames, "rows": out}


KERNEL_KINDS = (  # (kind, name fragments), first match wins; names of cuDNN / flash / cuBLAS / inductor kernels
    ("attention", ("fmha", "flash", "attention", "sdpa")),
    ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "triton_tem", "aten::addmm", "aten::mm", "aten::bmm",
              "aten::linear")),
    ("fused by inductor", ("triton_",)),  # torch.compile'd regions (their names may say _to_copy: still compute)
    ("copy", ("direct_copy", "memcpy", "memset", "cat", "fill", "index", "clone", "copy")),
    ("elementwise/reduction", ("elementwise", "reduce", "norm", "softmax", "mul", "add", "silu", "gelu", "pow",
                               "rsqrt", "mean")),
)


def kernel_gaps(prof, top: int = 8, min_us: float = 20.0) -> dict:
    """Where the GPU waits between kernels (profiled run): the idle stretches between consecutive kernels on the
    device timeline, their total, how many exceed `min_us`, and the longest with the kernels on either side."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                   if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start)
    gaps, end, last = [], None, None
    for start, stop, name in spans:
        if end is not None and start > end:
            gaps.append((start - end, last, name))
        if end is None or stop > end:
            end, last = stop, name
    gaps.sort(key=lambda g: -g[0])
    return {"kernels": len(spans), "first_to_last_s": (spans[-1][1] - spans[0][0]) / 1e6 if spans else 0.0,
            "idle_between_kernels_s": sum(g[0] for g in gaps) / 1e6,
            f"gaps_over_{min_us:g}us": sum(g[0] > min_us for g in gaps),
            f"idle_in_gaps_over_{min_us:g}us_s": sum(g[0] for g in gaps if g[0] > min_us) / 1e6,
            "longest": [{"us": round(g[0], 1), "after": g[1][:80], "before": g[2][:80]} for g in gaps[:top]]}


def kernel_kind(name: str) -> str:
    """Coarse kind of one kernel (or CPU op) by its name; 'other' if nothing matches."""
    lowered = name.lower()
    for kind, fragments in KERNEL_KINDS:
        if any(f in lowered for f in fragments):
            return kind
    return "other"


def torch_no_grad(fn):
    with torch.no_grad():
        return fn()


# ---------------------------------------------------------------------------------------------- report
def _fmt(value, spec=".3f") -> str:
    return "-" if value is None else format(value, spec)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table: the header, its rule, one line per row of cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]]


def _spread(stats: dict) -> list[str]:
    """median, min, max of a `summary()` dict, as table cells."""
    return [f"{stats['median']:.3f}", f"{stats['min']:.3f}", f"{stats['max']:.3f}"]


def _profile_lines(stage: str, st: dict | None) -> list[str]:
    """Markdown of a profile stage (`profile`, `rf_profile`)."""
    lines: list[str] = []
    if not st:
        return lines
    if "error" in st:
        return [f"## {stage}: FAILED", "", f"`{st['error']}`", ""]
    variants = st["variants"]
    kinds = sorted({k for v in variants.values() for k in v["by_kind_s"]})
    rows = [[name, f"{v['wall_s']:.3f}", f"{v['kernel_s']:.3f}", _fmt(v["idle_s"]),
             *[_fmt(v["by_kind_s"].get(k)) for k in kinds]] for name, v in variants.items()]
    lines += [f"## {stage}: one {st['latent_frames']}-latent-frame video each ({st['activity']}, seconds)", "",
              *md_table(["variant", "wall", "kernels", "idle", *kinds], rows)]
    for name, v in variants.items():
        lines += ["", f"Top kernels, {name}:", ""] + [f"- {t['s']:.3f} s, {t['calls']} calls: `{t['kernel']}`"
                                                     for t in v["top"]]
        gaps = v.get("gaps")
        if gaps:
            over = [k for k in gaps if k.startswith("gaps_over_")][0]
            lines += ["", f"Device idle between kernels, {name}: {gaps['idle_between_kernels_s']:.3f} s over "
                      f"{gaps['kernels']} kernels ({gaps['first_to_last_s']:.3f} s first to last); "
                      f"{gaps[over]} gaps over {over[len('gaps_over_'):]} hold "
                      f"{gaps['idle_in_' + over + '_s']:.3f} s. Longest:", ""]
            lines += [f"- {g['us']:.0f} us after `{g['after']}`, before `{g['before']}`" for g in gaps["longest"]]
    lines.append("")
    return lines


def render_markdown(record: dict) -> str:
    env = record.get("env") or {}
    lines = [f"# Side by side with the official code: {env.get('device_name', '?')}, {env.get('date_utc', '?')}", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, driver {env.get('gpu_driver')}, git {env.get('git_sha')}"
             f"{' (dirty)' if env.get('git_dirty') else ''}.", ""]
    lines += [f"- {note}" for note in record.get("notes", [])]
    lines += ["", record.get("protocol", ""), ""]
    stages = record.get("stages", {})
    titles = {"dit": "Self Forcing", "long": "Self Forcing, long", "rf": "Rolling Forcing", "rf_long": "Rolling Forcing, long"}
    for name in ("dit", "long", "rf", "rf_long"):
        st = stages.get(name)
        if not st:
            continue
        if "error" in st:
            lines += [f"## {name}: FAILED", "", f"`{st['error']}`", ""]
            continue
        rows = [[v, *_spread(row["total_s"]), f"{row['fps_dit_only']:.2f}", _fmt(row.get("speedup_vs_official"), ".2f"),
                 _fmt(row["first_block_s"]["median"] if row.get("first_block_s") else None),
                 _fmt(row["peak_mem_gib"], ".2f")] for v, row in st["variants"].items()]
        lines += [f"## {name} ({titles[name]}): {st['latent_frames']} latent frames", "",
                  *md_table(["variant", "median s", "min s", "max s", "FPS (DiT only)", "x official", "first block s",
                             "peak GiB"], rows)]
        lines += ["", *[f"- {k}: max abs {e['max_abs']:.3g}, rel max {e['rel_max']:.3g}, rel mean {e['rel_mean']:.3g}, "
                        f"within bf16 tolerance: {e['within_bf16_tolerance']}" for k, e in st.get("equality", {}).items()], ""]
    st = stages.get("vae")
    if st and "error" not in st:
        rows = [[v, *_spread(row["total_s"]), f"{row['fps']:.2f}", _fmt(row["peak_mem_gib"], ".2f")]
                for v, row in st["variants"].items()]
        lines += [f"## vae decode: {st['latent_frames']} latent -> {st['pixel_frames']} frames at {st['pixel_hw']}", "",
                  *md_table(["variant", "median s", "min s", "max s", "FPS", "peak GiB"], rows)]
        lines += ["", f"ours_fast levers: {', '.join(st['fast_levers'])}",
                  *[f"- {k}: max abs {e['max_abs']:.3g}, rel mean {e['rel_mean']:.3g}" for k, e in st["equality"].items()], ""]
    elif st:
        lines += ["## vae: FAILED", "", f"`{st['error']}`", ""]
    st = stages.get("end_to_end")
    if st and "error" not in st:
        rows = [[label, row["dit"], row["decode"], f"{row['seconds']:.3f}", f"{row['fps']:.2f}",
                 _fmt(row.get("speedup_vs_official"), ".2f")] for label, row in st["rows"].items()]
        lines += [f"## end to end ({st['pixel_frames']} frames): FPS = frames / (DiT median + decode median)", "",
                  *md_table(["row", "DiT", "decode", "s", "FPS", "x official"], rows), ""]
    for stage in ("profile", "rf_profile"):
        lines += _profile_lines(stage, stages.get(stage))
    st = stages.get("forward")
    if st and "error" not in st:
        lines += ["## one DiT call (block 0, t=1000), ours vs official", "",
                  *[f"- {k}: max abs {e['max_abs']:.3g}, rel max {e['rel_max']:.3g}, rel mean {e['rel_mean']:.3g}"
                    for k, e in st.items() if isinstance(e, dict)], ""]
    failed = [k for k, v in stages.items() if isinstance(v, dict) and "error" in v]
    if failed:
        lines += [f"Failed stages: {', '.join(failed)} (tracebacks in the JSON)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/official_side_by_side.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-sf", type=Path, help="local guandeh17/Self-Forcing checkout")
    parser.add_argument("--official-rf", type=Path, help="local TencentARC/RollingForcing checkout")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tag", help="suffix of the result files' stem (side_by_side[_rf]_<gpu>_<yyyymm>_<tag>)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--long-repeats", type=int)
    parser.add_argument("--what", help="stages, comma-separated: forward,dit,long,vae,profile,rf,rf_profile,rf_long "
                                       "(profile needs dit; rf_profile and rf_long need rf)")
    parser.add_argument("--ours-variants", help="our speed variants, the first is the reference (see parse_variant)")
    parser.add_argument("--rf-variants", help="our Rolling Forcing speed variants (same syntax), the first is the reference")
    for lever in ("channels-last", "fused-norm", "implicit-padding", "native-upsample", "subpixel-upsample"):
        parser.add_argument(f"--vae-{lever}", action=argparse.BooleanOptionalAction)
    parser.add_argument("--vae-cudnn-benchmark-all", action=argparse.BooleanOptionalAction,
                        help="ours_fast's decode times every cuDNN algorithm per conv shape (benchmark_limit = 0)")
    parser.add_argument("--vae-frames-per-call", type=_positive_ints,
                        help="comma-separated k: also time ours_fast decoding k latent frames per decoder call")
    parser.add_argument("--tiny", action=argparse.BooleanOptionalAction, help="tiny geometry (CPU plumbing check)")
    parser.add_argument("--device")
    return with_config_defaults(parser, "official_side_by_side")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    what = [w for w in args.what.split(",") if w]
    unknown = set(what) - set(SF_STAGES) - set(RF_STAGES)
    if unknown:
        raise ValueError(f"--what: unknown stages {sorted(unknown)}; allowed: {', '.join(SF_STAGES + RF_STAGES)}")
    if "profile" in what and "dit" not in what:
        raise ValueError("--what: profile needs the dit stage (its warm-up compiles and picks the fastest variant)")
    if ("rf_profile" in what or "rf_long" in what) and "rf" not in what:
        raise ValueError("--what: rf_profile and rf_long need the rf stage (its warm-up compiles every window shape "
                         "and picks the fastest variant)")
    if args.repeats < 1 or args.long_repeats < 1:
        raise ValueError(f"--repeats and --long-repeats must be >= 1, got {args.repeats}, {args.long_repeats}")
    if any("compile" in v for v in (args.ours_variants + "," + args.rf_variants).split(",")):
        import torch._dynamo

        # one compiled graph per region is reused by all Y blocks; leave room for the grad-mode / shape variants
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    bench = Bench(args)
    bench.record["env"] = collect_env(str(bench.device))
    bench.stage("setup", bench.setup)
    if "error" in bench.record["stages"]["setup"]:
        return bench.record
    if "forward" in what and bench.official is not None:
        bench.stage("forward", bench.stage_forward)
    if "dit" in what:
        bench.stage("dit", bench.stage_dit)
    if "profile" in what:
        bench.stage("profile", bench.stage_profile)
    if "vae" in what:
        bench.stage("vae", bench.stage_vae)
    if "dit" in what and "vae" in what:
        bench.stage("end_to_end", bench.end_to_end)
    if "rf" in what:
        bench.stage("rf", bench.stage_rf)
    if "rf_profile" in what:
        bench.stage("rf_profile", bench.stage_rf_profile)
    if "rf_long" in what:
        bench.stage("rf_long", bench.stage_rf_long)
    if "long" in what:  # last: the longest stage, cut first if the call runs out of time
        bench.stage("long", bench.stage_long)
    log("done")
    return bench.record


if __name__ == "__main__":
    result = main()
    fallen = {name: path["fell_back"] for name, path in result.get("execution_path", {}).items() if path["fell_back"]}
    if fallen:  # the results (written per stage) record the path; a lever that fell back fails the run
        sys.stderr.write("official_side_by_side.py: requested lever fell back: "
                         + "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in fallen.items()) + "\n")
        raise SystemExit(3)
