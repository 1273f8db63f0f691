"""Split-KV attention (`backbone.speed.attention_kv_splits`) against one fused call, at the Wan2.1-T2V-1.3B shapes.

A Self Forcing block's 4,680 queries x 12 heads make 444 thread blocks of 128 queries for a fused attention kernel:
3.4 waves on an H200's 132 SMs. Stage `waves` times one cuDNN call over the 21-frame cache for query lengths around
4,680, to show the time moving in steps of whole waves. Stage `splits` times, per cache length (3 ... 21 latent
frames of 1,560 tokens; the query is one 3-frame block), one call against the model's own `split_kv_attention` with
2, 3, ... key chunks (compiled merge on CUDA), interleaved (A B C A B C ...) after one warm-up each, median of
`--repeats` rounds. The per-video row adds the medians as one 81-frame video calls them: 7 blocks at cache lengths
3, 6, ..., 21 frames, each 4 denoising steps x 30 layers + the cache step's 29 (its last layer only stages K/V).

    python bench/attention_kv_split.py --out $OUT [--splits 2,3,4] [--repeats 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_layout import time_call  # noqa: E402  (bench-only helpers)
from bench_config import with_config_defaults  # noqa: E402

from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.models.split_attention import merge_kv_splits, split_kv_attention  # noqa: E402
from tokentrim.report.atomic_io import write_text_atomic  # noqa: E402

HEADS, HEAD_DIM, BLOCK_FRAMES = 12, 128, 3  # Wan2.1-T2V-1.3B
CALLS_PER_BLOCK = 4 * 30 + 29  # Self Forcing: 4 denoising steps x 30 layers, then the cache step (last layer: K/V only)
ONE_CALL = {"cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION]}


def token_major(length: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """[1, n, L, d] view of [1, L, n, d] memory (the token-major cache's layout)."""
    return torch.randn(1, length, HEADS, HEAD_DIM, device=device, dtype=dtype, generator=gen).transpose(1, 2)


def tflops(q_len: int, k_len: int, seconds: float) -> float:
    return 4 * q_len * k_len * HEADS * HEAD_DIM / seconds / 1e12


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/attention_kv_split.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--inner", type=int, help="calls per timed sample")
    parser.add_argument("--backend", choices=list(ONE_CALL))
    parser.add_argument("--splits", help="key chunk counts to time against one call")
    parser.add_argument("--cache-frames", help="key lengths in latent frames")
    parser.add_argument("--wave-query-lengths", help="query lengths of stage waves ('' = skip the stage)")
    parser.add_argument("--tokens-per-frame", type=int, help="1560 at 480x832")
    parser.add_argument("--device")
    return with_config_defaults(parser, "attention_kv_split")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.inner < 1:
        raise ValueError(f"--repeats and --inner must be >= 1, got {args.repeats}, {args.inner}")
    splits = [int(s) for s in str(args.splits).split(",")]
    if any(s < 2 for s in splits):
        raise ValueError(f"--splits must be integers >= 2, got {args.splits}")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    merge = torch.compile(merge_kv_splits, dynamic=False) if device.type == "cuda" else merge_kv_splits
    frames = [int(f) for f in str(args.cache_frames).split(",")]
    q_len = BLOCK_FRAMES * args.tokens_per_frame

    def one_call(q, k, v):  # on CPU (tests): torch's own kernel
        with sdpa_kernel(ONE_CALL[args.backend]) if device.type == "cuda" else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v)

    waves = []
    k_len = max(frames) * args.tokens_per_frame
    k, v = token_major(k_len, device, dtype, gen), token_major(k_len, device, dtype, gen)
    for length in [int(n) for n in str(args.wave_query_lengths).split(",") if n]:
        q = token_major(length, device, dtype, gen)
        with torch.no_grad():
            one_call(q, k, v)  # warm-up
            seconds = statistics.median(time_call(lambda: one_call(q, k, v), device, args.inner)
                                        for _ in range(args.repeats))
        waves.append({"q_len": length, "k_len": k_len, "ms": 1e3 * seconds, "tflops": tflops(length, k_len, seconds)})
        print(f"waves: q {length}: {1e3 * seconds:.3f} ms, {waves[-1]['tflops']:.0f} TFLOP/s", flush=True)

    rows = []
    q = token_major(q_len, device, dtype, gen)
    for cache_frames in frames:
        k_len = cache_frames * args.tokens_per_frame
        k, v = token_major(k_len, device, dtype, gen), token_major(k_len, device, dtype, gen)
        variants = {"one call": lambda: one_call(q, k, v)}
        variants |= {f"{s} chunks": (lambda s=s: split_kv_attention(q, k, v, s, args.backend, merge))
                     for s in splits if k_len % s == 0}
        times: dict[str, list[float]] = {name: [] for name in variants}
        with torch.no_grad():
            outputs = {name: fn() for name, fn in variants.items()}  # warm-up (excluded; compiles the merge)
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    times[name].append(time_call(fn, device, args.inner))
        reference = outputs["one call"].float()
        for name in variants:
            seconds = statistics.median(times[name])
            rows.append({"cache_frames": cache_frames, "q_len": q_len, "k_len": k_len, "variant": name,
                         "ms": 1e3 * seconds, "tflops": tflops(q_len, k_len, seconds),
                         "max_abs_diff": float((outputs[name].float() - reference).abs().max())})
            print(f"cache {cache_frames:2d} frames, {name}: {rows[-1]['ms']:.3f} ms, {rows[-1]['tflops']:.0f} TFLOP/s",
                  flush=True)
    per_video = {}
    if frames == [BLOCK_FRAMES * (b + 1) for b in range(len(frames))]:  # every cache length of one video
        for name in dict.fromkeys(r["variant"] for r in rows):
            ms = [r["ms"] for r in rows if r["variant"] == name]
            if len(ms) == len(frames):
                per_video[name] = sum(ms) * CALLS_PER_BLOCK / 1e3
    record = {"env": collect_env(str(device)), "args": vars(args) | {"out": str(args.out)}, "waves": waves,
              "rows": rows, "per_video_s": per_video, "protocol": __doc__.split("\n\n")[1].replace("\n", " ")}
    write_record(record, args)
    return record


def write_record(record: dict, args: argparse.Namespace) -> None:
    env = record["env"]
    stem = args.out / f"attention_kv_split_{(env.get('gpu_name') or 'cpu').replace(' ', '_')}_{time.strftime('%Y%m')}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=1, default=str))
    lines = [f"# Split-KV attention ({args.backend}) vs one call: {env.get('device_name', '?')}, "
             f"{env.get('date_utc', '?')}", "", f"torch {env.get('torch')}, bf16 on CUDA, {HEADS} heads x {HEAD_DIM}, "
             f"query = one {BLOCK_FRAMES}-frame block; median of {args.repeats} rounds x {args.inner} calls, "
             f"interleaved", ""]
    if record["waves"]:
        lines += ["## One call by query length (keys: the longest cache)", "", "| q len | ms | TFLOP/s |",
                  "|---|---|---|"]
        lines += [f"| {w['q_len']} | {w['ms']:.3f} | {w['tflops']:.0f} |" for w in record["waves"]] + [""]
    lines += ["## Per cache length", "", "| cache frames | k len | variant | ms | TFLOP/s | max abs diff to one call |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['cache_frames']} | {r['k_len']} | {r['variant']} | {r['ms']:.3f} | {r['tflops']:.0f} | "
              f"{r['max_abs_diff']:.2g} |" for r in record["rows"]]
    if record["per_video_s"]:
        base = record["per_video_s"]["one call"]
        lines += ["", f"## One 81-frame video's self-attention (7 blocks x {CALLS_PER_BLOCK} calls)", "",
                  "| variant | s | vs one call |", "|---|---|---|"]
        lines += [f"| {name} | {s:.3f} | {base / s:.3f}x |" for name, s in record["per_video_s"].items()]
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
