"""TokenTrim's overhead, measured side by side: baseline vs TokenTrim interleaved in one process (A B A B ...).

Variants: TokenTrim at forced trigger rates 0% (every batch tested, none triggers), ~10% (every 10th batch, about
the paper's regime) and 100% (every tested batch), natural triggering with the paper's defaults, and FlowMo on the
first batch. Every round generates the first `--num-prompts` prompts of the config's prompt set with every variant
(a fixed prompt set for natural triggering); `--speed` sets the DiT's execution levers (same syntax as
`official_side_by_side.py --ours-variants`, e.g. compile+cudnn), so the overhead is measured on the fast generator. Any backbone of `conf/backbone` (Hydra overrides after `--`), e.g. on CPU with the embedded model:

    python bench/overhead.py --repeats 5 -- backbone=tiny
    python bench/overhead.py --repeats 5 -- backbone=self_forcing backbone.random_weights=true device=cuda dtype=bfloat16

Protocol: one untimed warm-up video per variant; then `--repeats` rounds, each generating the same prompts/seed with
every variant in turn (A B C ... per prompt); generation wall time (DiT + TokenTrim, no VAE decode) per round summed
over the prompts, median and min/max over rounds; overhead x = median variant / median baseline. Results: bench/results/overhead_<device>_<yyyymm>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helpers)
from official_side_by_side import parse_variant  # noqa: E402
from throughput import ForcedTrim  # noqa: E402

from tokentrim.backbones import build_backbone, make_pipeline  # noqa: E402
from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.generate import DTYPES  # noqa: E402
from tokentrim.init.flowmo import FlowMoConfig  # noqa: E402
from tokentrim.prompts import load_prompts  # noqa: E402
from tokentrim.trim import TokenTrim, TokenTrimConfig  # noqa: E402


def variants() -> dict:
    return {
        "baseline": (TokenTrim(TokenTrimConfig(enabled=False)), None),
        "trim_rate0": (TokenTrim(TokenTrimConfig(lam=float("inf"))), None),
        "trim_rate10": (ForcedTrim(TokenTrimConfig(), period=10), None),
        "trim_rate100": (ForcedTrim(TokenTrimConfig(), period=1), None),
        "trim_natural": (TokenTrim(TokenTrimConfig()), None),
        "flowmo": (TokenTrim(TokenTrimConfig(enabled=False)), FlowMoConfig()),
    }


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/overhead.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--variants", help=f"comma-separated subset of {', '.join(variants())}")
    parser.add_argument("--num-prompts", type=int, help="first N prompts of the config's prompt set")
    parser.add_argument("--speed", help="DiT speed levers, e.g. eager or compile+cudnn (see parse_variant); "
                                        "default: backbone.speed")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the tokentrim config (after --)")
    return with_config_defaults(parser, "overhead")


def main() -> None:
    args = build_parser().parse_args()
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    device, dtype = cfg.device, DTYPES[cfg.dtype]
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True), device=device, dtype=dtype)
    if args.num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {args.num_prompts}")
    prompts = load_prompts(cfg.prompts)[: args.num_prompts]
    if args.speed is not None:  # else the backbone's own `speed` config (set by build_backbone), as users run it
        backbone.model.set_speed(parse_variant(args.speed))
    speed = getattr(backbone.model, "speed", None)
    num_frames = cfg.num_latent_frames or backbone.num_latent_frames
    contexts = [backbone.encode_prompt(p) for p in prompts]
    shape = (1, num_frames, backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    chosen = [v for v in args.variants.split(",") if v]
    if "baseline" not in chosen or set(chosen) - set(variants()):
        raise ValueError(f"--variants must include baseline and name only {sorted(variants())}, got {chosen}")
    pipes = {name: (make_pipeline(backbone, trim=trim, flowmo=flowmo), trim) for name, (trim, flowmo) in variants().items()
             if name in chosen}

    def one_video(pipe, seed: int, context_kv) -> tuple[float, int, int]:
        g = torch.Generator(device=device).manual_seed(seed)
        noise = torch.randn(shape, generator=g, device=device)  # fp32 latents, as in generation
        events: list[dict] = []
        sync()
        start = time.perf_counter()
        pipe(noise, context_kv, noise_source=lambda s: torch.randn(s, generator=g, device=device), on_event=events.append)
        sync()
        tested = sum(bool(e["is_tested"]) for e in events)
        return time.perf_counter() - start, sum(bool(e["triggered"]) for e in events), tested

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for pipe, _ in pipes.values():  # warm-up, excluded
        one_video(pipe, seed=0, context_kv=contexts[0])
    times: dict[str, list[float]] = {name: [] for name in pipes}
    rates: dict[str, tuple[int, int]] = {}
    for r in range(args.repeats):
        round_s = {name: 0.0 for name in pipes}
        round_rates = {name: [0, 0] for name in pipes}
        for context_kv in contexts:
            for name, (pipe, _) in pipes.items():
                wall, triggers, tested = one_video(pipe, seed=1, context_kv=context_kv)  # same prompts and seed every round
                round_s[name] += wall
                round_rates[name][0] += triggers
                round_rates[name][1] += tested
        for name in pipes:
            times[name].append(round_s[name])
            rates[name] = tuple(round_rates[name])
    base = statistics.median(times["baseline"])
    rows = {
        name: {
            "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "overhead_x": statistics.median(ts) / base, "triggers": rates[name][0], "tested_batches": rates[name][1],
        }
        for name, ts in times.items()
    }
    env = collect_env(str(device))
    result = {"backbone": cfg.backbone.name, "prompts": prompts, "latent_frames": num_frames, "repeats": args.repeats,
              "speed": vars(speed) if speed is not None else None,
              "overrides": args.overrides, "variants": rows, "env": env,
              "protocol": __doc__.split("Protocol: ")[1].split("Results:")[0].strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    device_name = (env.get("gpu_name") or "cpu").replace(" ", "_")
    stem = args.out / f"overhead_{cfg.backbone.name}_{device_name}_{time.strftime('%Y%m')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# TokenTrim overhead: {cfg.backbone.name}, {env['device_name']}, {env['date_utc']}", "",
             f"torch {env['torch']}, git {env['git_sha']}; {num_frames} latent frames; {len(prompts)} prompt(s) per round; "
             f"{args.repeats} interleaved rounds; speed levers: {speed}; "
             f"overrides: {' '.join(args.overrides) or '-'}", "",
             "| variant | median s | min s | max s | overhead x | triggers / tested batches |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {r['overhead_x']:.3f} | {r['triggers']} / {r['tested_batches']} |"
              for n, r in rows.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
