"""Full-size generator throughput on one GPU: random bf16 weights at the Wan2.1-T2V-1.3B config (identical compute
to the released checkpoints), Self Forcing or Rolling Forcing.

Measures, per scenario: video FPS (pixel frames / DiT wall time), first-block latency, steady-state per-block
time, peak GPU memory; an 81-frame video (21 latent frames) and a long rollout (rolling 21-frame window, 3 sink
frames). With --trim it also runs TokenTrim at forced trigger rates (0%, every 10th batch, every batch) and with
--flowmo the FlowMo first batch, interleaved with the baseline (ABAB...). With --vae it times the streaming decode
of the long video by the Wan2.1 VAE architecture (random weights), for end-to-end FPS. The DiT runs with the
execution levers the product gives it: `conf/backbone/<pipeline>.yaml`'s `speed` resolved for CUDA, or `--speed`
(the syntax of `official_side_by_side.py --ours-variants`, e.g. eager or compile+cudnn+tokmajor).

Protocol: one warm-up video per scenario (excluded), then --repeats timed videos; median and min/max reported.
torch.cuda.synchronize() brackets every timed region.

    python bench/throughput.py --out bench/results
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
import exec_path  # noqa: E402  (bench-only helpers)
from bench_config import packaged_config, with_config_defaults  # noqa: E402
from official_side_by_side import parse_variant  # noqa: E402

from tokentrim.backbones import resolve_speed  # noqa: E402
from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.init.flowmo import FlowMoConfig  # noqa: E402
from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig  # noqa: E402
from tokentrim.pipelines.rolling_forcing import RollingForcingConfig, RollingForcingPipeline  # noqa: E402
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline  # noqa: E402
from tokentrim.report.atomic_io import write_text_atomic  # noqa: E402
from tokentrim.trim import TokenTrim, TokenTrimConfig  # noqa: E402


class ForcedTrim(TokenTrim):
    """TokenTrim whose trigger is forced on exactly the tested batches t with t % `period` == 0 (the drift math still
    runs; the natural rule's own verdict is overridden, so the rate does not depend on the weights)."""

    def __init__(self, cfg: TokenTrimConfig, period: int):
        super().__init__(cfg)
        self.period = period

    def decide(self, block_tokens):
        decision = super().decide(block_tokens)
        decision.should_prune = bool(decision.is_tested and decision.t % self.period == 0)
        return decision

    def retest(self, block_tokens):
        decision = super().decide(block_tokens)
        decision.should_prune = False
        return decision


def dit_speed(spec: str | None, pipeline: str, device: str) -> WanSpeedConfig:
    """The DiT's execution levers: `spec` in `parse_variant` syntax, or (None) the `speed` block of
    `conf/backbone/<pipeline>.yaml` resolved for `device`, as `build_backbone` resolves it for users."""
    if spec is not None:
        return parse_variant(spec)
    return resolve_speed(packaged_config("backbone", pipeline, resolve=False).get("speed") or {}, device)


def pixel_frames(latent_frames: int) -> int:
    return 1 + 4 * (latent_frames - 1)  # Wan VAE: 1 latent -> 1 frame, then 4 per latent


def time_video(pipe, noise, context_kv, seed: int) -> dict:
    g = torch.Generator(device=noise.device).manual_seed(seed)
    block_times: list[float] = []
    torch.cuda.synchronize()
    start = time.perf_counter()
    last = [start]

    def on_event(_event: dict) -> None:  # called once per block, after the decision (synced)
        torch.cuda.synchronize()
        now = time.perf_counter()
        block_times.append(now - last[0])
        last[0] = now

    pipe(noise, context_kv, noise_source=lambda s: torch.randn(s, generator=g, device=noise.device, dtype=noise.dtype), on_event=on_event)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    return {"total_s": total, "first_block_s": block_times[0] if block_times else None, "block_s": block_times}


def time_vae_decode(latent_frames: int, device: torch.device) -> dict:
    """Streaming decode (3 latent frames a chunk) of a long video by the Wan2.1 VAE architecture, random weights, as
    the harness decodes: bf16 and the default `backbone.speed` decode levers."""
    from tokentrim.backbones import WAN_VAE_DTYPE, resolve_vae_speed
    from tokentrim.models.vae import WanVAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = WanVAE().to(device=device, dtype=WAN_VAE_DTYPE).eval()
    vae.set_decode_speed(**resolve_vae_speed({}, str(device)))
    latents = torch.randn(1, latent_frames, 16, 60, 104, device=device)
    out = {}
    for attempt in ("warmup", "timed"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        frames = 0
        with torch.no_grad():
            for chunk in vae.decode_stream(latents.split(3, dim=1)):
                frames += chunk.shape[1]
        torch.cuda.synchronize()
        out = {"latent_frames": latent_frames, "pixel_frames": frames, "decode_s": time.perf_counter() - start,
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    out["decode_fps"] = out["pixel_frames"] / out["decode_s"]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/throughput.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, help="latent frames of the short video")
    parser.add_argument("--long-frames", type=int, help="latent frames of the long rollout (120 = 30 s)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--trim", action=argparse.BooleanOptionalAction, help="also time TokenTrim at forced rates")
    parser.add_argument("--flowmo", action=argparse.BooleanOptionalAction, help="also time FlowMo on the first batch")
    parser.add_argument("--vae", action=argparse.BooleanOptionalAction, help="also time the VAE decode of the long video")
    parser.add_argument("--pipeline", choices=["self_forcing", "rolling_forcing"])
    parser.add_argument("--speed", help="DiT speed levers, e.g. eager or compile+cudnn (see official_side_by_side."
                                        "parse_variant); default: conf/backbone/<pipeline>.yaml's speed")
    parser.add_argument("--out", type=Path)
    return with_config_defaults(parser, "throughput")


def main() -> None:
    args = build_parser().parse_args()
    compile_counts = exec_path.start()
    device = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = CausalWanModel()
    model = model.to_empty(device=device)
    for p in model.parameters():  # random weights, fixed seed
        torch.nn.init.normal_(p, std=0.02)
    model = model.to(torch.bfloat16)
    model.set_speed(dit_speed(args.speed, args.pipeline, str(device)))
    num_params = sum(p.numel() for p in model.parameters())
    text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    context_kv = model.encode_context(text)

    results: dict = {"num_params": num_params, "scenarios": {}, "speed": vars(model.speed)}
    if args.pipeline == "self_forcing":
        scenarios = {
            "81_frames": (args.frames, SelfForcingConfig(max_frames=21, sink_frames=0)),
            f"long_{args.long_frames}_latent": (args.long_frames, SelfForcingConfig(max_frames=21, sink_frames=3)),
        }
        pipeline_cls = SelfForcingPipeline
    else:
        scenarios = {
            "81_frames": (args.frames, RollingForcingConfig()),
            f"long_{args.long_frames}_latent": (args.long_frames, RollingForcingConfig()),
        }
        pipeline_cls = RollingForcingPipeline
    results["pipeline"] = args.pipeline
    for name, (latent_frames, sampler) in scenarios.items():
        noise = torch.randn(1, latent_frames, 16, 60, 104, device=device, dtype=torch.bfloat16, generator=torch.Generator(device).manual_seed(1))
        variants = {"baseline": (TokenTrim(TokenTrimConfig(enabled=False)), None)}
        if args.trim:
            variants["trim_rate0"] = (TokenTrim(TokenTrimConfig(lam=1e9)), None)  # tested, never triggers
            variants["trim_rate10"] = (ForcedTrim(TokenTrimConfig(), period=10), None)  # about the paper's regime
            variants["trim_rate100"] = (ForcedTrim(TokenTrimConfig(), period=1), None)
        if args.flowmo:
            variants["flowmo"] = (TokenTrim(TokenTrimConfig(enabled=False)), FlowMoConfig())
        pipes = {k: pipeline_cls(model, sampler, trim=trim, flowmo=flowmo) for k, (trim, flowmo) in variants.items()}
        runs: dict[str, list] = {k: [] for k in pipes}
        torch.cuda.reset_peak_memory_stats()
        for k, pipe in pipes.items():  # warm-up, excluded
            time_video(pipe, noise, context_kv, seed=0)
        for r in range(args.repeats):  # interleaved ABAB...
            for k, pipe in pipes.items():
                runs[k].append(time_video(pipe, noise, context_kv, seed=r + 1))
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        out = {}
        for k, rs in runs.items():
            totals = [r["total_s"] for r in rs]
            steady = [statistics.median(r["block_s"][3:]) for r in rs if len(r["block_s"]) > 3]
            med = statistics.median(totals)
            out[k] = {
                "latent_frames": latent_frames,
                "pixel_frames": pixel_frames(latent_frames),
                "total_s_median": med,
                "total_s_min": min(totals),
                "total_s_max": max(totals),
                "fps_dit_only": pixel_frames(latent_frames) / med,
                "first_block_s_median": statistics.median(r["first_block_s"] for r in rs),
                "steady_block_s_median": statistics.median(steady) if steady else None,
                "overhead_x": med / statistics.median(x["total_s"] for x in runs["baseline"]),
            }
        out["peak_mem_gib"] = peak_gib
        results["scenarios"][name] = out
        print(name, json.dumps(out, indent=1))
    if args.vae:
        results["vae_decode"] = time_vae_decode(args.long_frames, device)
        print("vae", json.dumps(results["vae_decode"], indent=1))
    results["execution_path"] = exec_path.observe(model, compile_counts, fused_norm_used=bool(args.vae))
    results["env"] = collect_env(str(device))
    results["protocol"] = (f"1 warm-up video per variant excluded; {args.repeats} timed videos per variant, interleaved; "
                           "median; overhead_x is against 'baseline' = the decider on, never pruning (per-block times "
                           "come from its events); bench/overhead.py measures against a generator without a decider")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m")
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    path = args.out / f"throughput_{args.pipeline}_{gpu}_{stamp}.json"
    write_text_atomic(path, json.dumps(results, indent=1, default=str))
    print("wrote", path)
    exec_path.fail_if_fell_back("throughput.py", results["execution_path"], path)


if __name__ == "__main__":
    main()
