"""The decoder's fused RMS norm + SiLU kernel (`backbone.speed.vae_fused_norm`), one variant per process.

Compiled kernels choose their launch configuration per process, so a decode time from one process can be luck
(`perf_summary_NVIDIA_H200_202611.md`, rounds 4 and 5: ours_fast took 1.04 s in some processes, 1.13 s in others).
This bench therefore measures ONE variant per process and is meant to be called several times, interleaving the
variants across processes:

    for v in shipped five_d shipped five_d unfused; do python bench/vae_norm_kernel.py --variant $v --out $OUT/x.jsonl; done

Variants: `shipped` (the harness's kernel: channels-last activations as `[N, C]` rows), `five_d` (the same math as one
dynamic-shape kernel over the `[B, C, T, H, W]` tensor, the kernel before 2026-11-28), `unfused` (diffusers' chain of
eager kernels). Each process builds the full-size Wan2.1 VAE (random bf16 weights), turns on the ours_fast decode
levers of `official_side_by_side.py`, times a first decode (compiles + cuDNN's benchmark), then `--repeats` more
(median reported), and profiles one decode (kernel totals). One JSON line per process is appended to `--out`
(with device, versions and date).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.models import vae_decode_fusion as fusion  # noqa: E402
from tokentrim.models.vae import WanVAE  # noqa: E402

VARIANTS = ("shipped", "five_d", "unfused")


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/vae_norm_kernel.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--repeats", type=int, help="timed decodes after the first")
    parser.add_argument("--latent-frames", type=int, help="21 = an 81-frame video")
    parser.add_argument("--latent-size", help="latent height,width (60,104 = 480x832)")
    parser.add_argument("--base-dim", type=int, help="VAE width (96 = Wan2.1)")
    parser.add_argument("--out", type=Path, help="JSON lines file, one line appended per process")
    parser.add_argument("--device")
    return with_config_defaults(parser, "vae_norm_kernel")


def kernel_totals(fn, device: torch.device) -> dict[str, float]:
    """Seconds per kernel name (first 60 characters) over one call of `fn` (CUDA kernels; CPU ops elsewhere)."""
    activity = torch.profiler.ProfilerActivity.CUDA if device.type == "cuda" else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        seconds = (event.device_time_total if device.type == "cuda" else event.self_cpu_time_total) / 1e6
        if seconds > 0:
            totals[event.key[:60]] = totals.get(event.key[:60], 0.0) + seconds
    return totals


def execution_path(variant: str) -> dict:
    """Whether the fused norm ran compiled: `CompiledRMSNormSiLU.failed` (shipped: warns and runs eagerly on a
    compiler failure); five_d calls torch.compile directly, whose failure raises."""
    failed = variant == "shipped" and fusion.compiled_rms_norm_silu().failed
    return {"fused_norm": variant != "unfused", "compile_failed": failed,
            "fell_back": ["vae_fused_norm: torch.compile failed (eager norm ran)"] if failed else []}


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    height, width = (int(n) for n in str(args.latent_size).split(","))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.variant == "five_d":  # the kernel before the rows form: one dynamic-shape kernel over [B, C, T, H, W]
        five_d = torch.compile(fusion.rms_norm_silu, dynamic=True, fullgraph=True)
        fusion.compiled_rms_norm_silu = lambda: five_d
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(base_dim=args.base_dim)
    vae = vae.to(device=device, dtype=torch.bfloat16 if cuda else torch.float32).eval().requires_grad_(False)
    vae.set_decode_speed(channels_last_3d=True, cudnn_benchmark=cuda, fused_norm=args.variant != "unfused",
                         implicit_padding=True, native_upsample=True, subpixel_upsample=True)
    latents = torch.randn(1, args.latent_frames, 16, height, width, device=device,
                          generator=torch.Generator(device=device).manual_seed(2)).to(vae.dtype)

    def decode() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            vae.decode(latents)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = decode()
    times = [decode() for _ in range(args.repeats)]
    with torch.no_grad():
        totals = kernel_totals(lambda: vae.decode(latents), device)
    record = {"variant": args.variant, "first_decode_s": first, "decode_s_median": statistics.median(times),
              "decode_s": times, "fused_norm_kernels_s": sum(s for k, s in totals.items() if k.startswith("triton")),
              "top_kernels_s": dict(sorted(totals.items(), key=lambda kv: -kv[1])[:8]),
              "latent_frames": args.latent_frames, "latent_size": [height, width], "base_dim": args.base_dim,
              "execution_path": execution_path(args.variant), "env": collect_env(str(device))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:  # one line per process: an interrupted process adds nothing
        f.write(json.dumps(record, default=str) + "\n")
    print(f"{args.variant}: first {first:.2f} s, median {record['decode_s_median']:.4f} s, fused-norm kernels "
          f"{record['fused_norm_kernels_s']:.4f} s", flush=True)
    return record


if __name__ == "__main__":
    fell_back = main()["execution_path"]["fell_back"]
    if fell_back:  # the line above is already in --out, with its path
        sys.stderr.write(f"vae_norm_kernel.py: requested lever fell back: {'; '.join(fell_back)}\n")
        raise SystemExit(3)
