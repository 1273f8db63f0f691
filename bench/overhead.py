"""TokenTrim's overhead against a generator WITHOUT a decider, interleaved in one process (A B C ... per prompt).

Variants (`--variants`, comma-separated; `no_decider` is the reference and is required):
  no_decider      the pipeline with trim=None: no summaries, drift, top-k or host sync at all;
  monitor         the decider on, never pruning (trim.enabled=false): the monitoring cost alone (the report's paired
                  baseline runs exactly this);
  paper           TokenTrim at the paper's defaults, natural triggers (p=0.1, lam=2, warm-up 2, R=1);
  forced_everyK   the paper's rule with a trigger forced on every K-th tested batch (e.g. forced_every10 ~ the
                  paper's regime, forced_every1 = every tested batch): the pruning cost at a known rate;
  flowmo          FlowMo on the first batch, no decider.
Each row gives x vs no_decider (the full cost) and, for the pruning variants, x vs monitor (the pruning cost on top
of monitoring). Any backbone of `conf/backbone` (Hydra overrides after `--`); `--speed` sets the DiT's levers (same
syntax as `official_side_by_side.py --ours-variants`, e.g. compile+cudnn), default the backbone's `speed` block:

    python bench/overhead.py --repeats 5 -- backbone=tiny
    python bench/overhead.py --repeats 5 -- backbone=self_forcing backbone.random_weights=true device=cuda dtype=bfloat16

Protocol: one untimed warm-up video per variant; then `--repeats` rounds, each generating the same prompts/seed with
every variant in turn (A B C ... per prompt); generation wall time (DiT + TokenTrim, no VAE decode) per round summed
over the prompts, median and min/max over rounds; x = median variant / median reference. The execution path that
actually ran (bench/exec_path.py) is recorded; a requested lever that fell back fails the bench (exit 3, one line)
after the results are written. Results: bench/results/overhead_<backbone>_<device>_<yyyymm>.{json,md}.
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
import exec_path  # noqa: E402  (bench-only helpers)
from bench_config import with_config_defaults  # noqa: E402
from official_side_by_side import parse_variant  # noqa: E402
from throughput import ForcedTrim  # noqa: E402

from tokentrim.backbones import build_backbone, make_pipeline  # noqa: E402
from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.generate import DTYPES  # noqa: E402
from tokentrim.init.flowmo import FlowMoConfig  # noqa: E402
from tokentrim.prompts import load_prompts  # noqa: E402
from tokentrim.trim import TokenTrim, TokenTrimConfig  # noqa: E402


REFERENCE = "no_decider"
PRUNING = "paper"  # and every forced_everyK


def make_variant(name: str):
    """(decider or None, FlowMo config or None) of a variant name (see the module docstring)."""
    if name == "no_decider":
        return None, None
    if name == "monitor":
        return TokenTrim(TokenTrimConfig(enabled=False)), None
    if name == "paper":
        return TokenTrim(TokenTrimConfig()), None
    if name.startswith("forced_every") and name[len("forced_every"):].isdigit() and int(name[len("forced_every"):]) > 0:
        return ForcedTrim(TokenTrimConfig(), period=int(name[len("forced_every"):])), None
    if name == "flowmo":
        return None, FlowMoConfig()
    raise ValueError(f"--variants: unknown variant {name!r} (no_decider, monitor, paper, forced_everyK with K >= 1, flowmo)")


def is_pruning(name: str) -> bool:
    return name == PRUNING or name.startswith("forced_every")


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/overhead.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--variants", help="comma-separated: no_decider (required), monitor, paper, forced_everyK, flowmo")
    parser.add_argument("--num-prompts", type=int, help="first N prompts of the config's prompt set")
    parser.add_argument("--speed", help="DiT speed levers, e.g. eager or compile+cudnn (see parse_variant); "
                                        "default: backbone.speed")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the tokentrim config (after --)")
    return with_config_defaults(parser, "overhead")


def main() -> None:
    args = build_parser().parse_args()
    compile_counts = exec_path.start()
    chosen = [v for v in args.variants.split(",") if v]
    if REFERENCE not in chosen or len(set(chosen)) != len(chosen):
        raise SystemExit(f"overhead.py: --variants must include {REFERENCE} once, got {args.variants!r}")
    try:
        made = {name: make_variant(name) for name in chosen}
    except ValueError as err:
        raise SystemExit(f"overhead.py: {err}") from None
    if args.num_prompts < 1:
        raise SystemExit(f"overhead.py: --num-prompts must be >= 1, got {args.num_prompts}")
    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    device, dtype = cfg.device, DTYPES[cfg.dtype]
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True), device=device, dtype=dtype)
    prompts = load_prompts(cfg.prompts)[: args.num_prompts]
    if args.speed is not None:  # else the backbone's own `speed` config (set by build_backbone), as users run it
        backbone.model.set_speed(parse_variant(args.speed))
    speed = getattr(backbone.model, "speed", None)
    num_frames = cfg.num_latent_frames or backbone.num_latent_frames
    contexts = [backbone.encode_prompt(p) for p in prompts]
    shape = (1, num_frames, backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    pipes = {name: (make_pipeline(backbone, trim=trim, flowmo=flowmo), trim) for name, (trim, flowmo) in made.items()}

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
        exec_path.sync(device)

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
    reference = statistics.median(times[REFERENCE])
    monitor = statistics.median(times["monitor"]) if "monitor" in times else None
    rows = {
        name: {
            "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "x_vs_no_decider": statistics.median(ts) / reference,
            "x_vs_monitor": statistics.median(ts) / monitor if monitor and is_pruning(name) else None,
            "triggers": rates[name][0], "tested_batches": rates[name][1],
        }
        for name, ts in times.items()
    }
    path = exec_path.observe(backbone.model, compile_counts)
    env = collect_env(str(device))
    result = {"backbone": cfg.backbone.name, "prompts": prompts, "latent_frames": num_frames, "repeats": args.repeats,
              "reference": REFERENCE, "speed": vars(speed) if speed is not None else None,
              "execution_path": path, "overrides": args.overrides, "variants": rows, "env": env,
              "protocol": __doc__.split("Protocol: ")[1].split("Results:")[0].strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    device_name = (env.get("gpu_name") or "cpu").replace(" ", "_")
    stem = args.out / f"overhead_{cfg.backbone.name}_{device_name}_{time.strftime('%Y%m')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    lines = [f"# TokenTrim overhead: {cfg.backbone.name}, {env['device_name']}, {env['date_utc']}", "",
             f"torch {env['torch']}, git {env['git_sha']}; {num_frames} latent frames; {len(prompts)} prompt(s) per round; "
             f"{args.repeats} interleaved rounds; speed levers: {speed}; "
             f"overrides: {' '.join(args.overrides) or '-'}; execution path fell back: "
             f"{'; '.join(path['fell_back']) or 'no'}", "",
             "x vs no_decider = the full cost against the generator without a decider (trim=None); x vs monitor = the "
             "pruning cost on top of monitoring (monitor = decider on, never prunes: trim.enabled=false, as the "
             "report's paired baseline).", "",
             "| variant | median s | min s | max s | x vs no_decider | x vs monitor | triggers / tested batches |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {fmt(r['x_vs_no_decider'])} | "
              f"{fmt(r['x_vs_monitor'])} | {r['triggers']} / {r['tested_batches']} |" for n, r in rows.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    exec_path.fail_if_fell_back("overhead.py", path, stem.with_suffix(".json"))


if __name__ == "__main__":
    main()
