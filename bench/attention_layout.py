"""Does the memory layout of q/k/v change the cost of the self-attention kernel? At the Wan2.1-T2V-1.3B shapes.

`bench/official_side_by_side.py --what dit,profile` shows both generators running the same cuDNN flash kernel, yet
ours spends slightly more time in it per call. One difference is layout: our KV cache is head-major,
`[B, H, L, D]` contiguous (BHSD). The official code keeps flash-attn's `[B, L, H, D]` (BSHD) and hands SDPA a
transposed view. This bench times `F.scaled_dot_product_attention` on one query block (3 latent frames = 4,680
tokens) against caches of 3 ... 21 latent frames (1,560 tokens each), for both layouts. The variants run interleaved
(A B A B ...), after one warm-up each; the median over `--repeats` rounds is reported.

    python bench/attention_layout.py --out $OUT [--repeats 20] [--backend cudnn|flash|auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.report.atomic_io import write_text_atomic  # noqa: E402

HEADS, HEAD_DIM, TOKENS_PER_FRAME, BLOCK_FRAMES = 12, 128, 1560, 3  # Wan2.1-T2V-1.3B at 480x832
BACKENDS = {"cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION], "auto": None}


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same `[B, H, L, D]` values stored as `layout` (bhsd: contiguous; bshd: a transposed view of a contiguous
    `[B, L, H, D]`)."""
    return x.contiguous() if layout == "bhsd" else x.transpose(1, 2).contiguous().transpose(1, 2)


def time_call(fn, device, inner: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / inner


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/attention_layout.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--inner", type=int, help="calls per timed sample")
    parser.add_argument("--backend", choices=list(BACKENDS))
    parser.add_argument("--cache-frames", help="key lengths in latent frames")
    parser.add_argument("--tokens-per-frame", type=int, help=f"{TOKENS_PER_FRAME} at 480x832")
    parser.add_argument("--device")
    return with_config_defaults(parser, "attention_layout")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.inner < 1:
        raise ValueError(f"--repeats and --inner must be >= 1, got {args.repeats}, {args.inner}")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    frames = [int(f) for f in args.cache_frames.split(",")]
    rows = []
    for cache_frames in frames:
        q_len, k_len = BLOCK_FRAMES * args.tokens_per_frame, cache_frames * args.tokens_per_frame
        qkv = [torch.randn(1, HEADS, n, HEAD_DIM, device=device, dtype=dtype, generator=gen)
               for n in (q_len, k_len, k_len)]
        inputs = {layout: [as_layout(x, layout) for x in qkv] for layout in ("bhsd", "bshd")}
        times: dict[str, list[float]] = {layout: [] for layout in inputs}
        outputs = {}
        ctx = sdpa_kernel(BACKENDS[args.backend]) if BACKENDS[args.backend] else torch.no_grad()
        with ctx, torch.no_grad():
            for layout, (q, k, v) in inputs.items():  # warm-up (excluded)
                outputs[layout] = F.scaled_dot_product_attention(q, k, v)
            for _ in range(args.repeats):
                for layout, (q, k, v) in inputs.items():
                    times[layout].append(time_call(lambda: F.scaled_dot_product_attention(q, k, v), device, args.inner))
        row = {"cache_frames": cache_frames, "q_len": q_len, "k_len": k_len,
               **{f"{layout}_ms": 1e3 * statistics.median(t) for layout, t in times.items()}}
        row["bshd_over_bhsd"] = row["bshd_ms"] / row["bhsd_ms"]
        row["max_abs_diff"] = float((outputs["bshd"].float() - outputs["bhsd"].float()).abs().max())  # same math
        rows.append(row)
        print(f"cache {cache_frames:2d} frames: bhsd {row['bhsd_ms']:.3f} ms, bshd {row['bshd_ms']:.3f} ms "
              f"({row['bshd_over_bhsd']:.3f}x)", flush=True)
    record = {"env": collect_env(str(device)), "args": vars(args) | {"out": str(args.out)}, "rows": rows,
              "protocol": __doc__.split("\n\n")[1].replace("\n", " ")}
    gpu = (record["env"].get("gpu_name") or "cpu").replace(" ", "_")
    stem = args.out / f"attention_layout_{gpu}_{time.strftime('%Y%m')}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=1, default=str))
    lines = [f"# SDPA ({args.backend}) by q/k/v layout: {record['env'].get('device_name', '?')}, "
             f"{record['env'].get('date_utc', '?')}", "", f"torch {record['env'].get('torch')}, bf16 on CUDA, "
             f"{HEADS} heads x {HEAD_DIM}, query = one {BLOCK_FRAMES}-frame block; median of {args.repeats} rounds "
             f"x {args.inner} calls", "",
             "| cache frames | q len | k len | BHSD ms (ours) | BSHD ms (flash-attn layout) | BSHD / BHSD | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['cache_frames']} | {r['q_len']} | {r['k_len']} | {r['bhsd_ms']:.3f} | {r['bshd_ms']:.3f} | "
              f"{r['bshd_over_bhsd']:.3f} | {r['max_abs_diff']:.2g} |" for r in rows]
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    return record


if __name__ == "__main__":
    main()
