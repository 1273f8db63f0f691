"""What a user gets from the command line: the real `tokentrim generate` (a subprocess, the user's command) on N
prompts, baseline and TokenTrim, beside the same machine's DiT + decode figure measured in the same call.

Per cell (backbone x video length):
  reference  in this process: the same backbone (`backbone.random_weights=true`, the given device / dtype and Hydra
             overrides), warmed up by `tokentrim.generate.warm_up` (full length), then `--reference-repeats` videos per
             variant timed by `tokentrim.generate.render` -- the CLI's own rollout + decode, synchronised, nothing
             written -- on the CLI's first jobs (same prompts and seeds, so the same trigger pattern). Its figure is
             pixel frames / median(DiT s + decode s) per variant: the bench's end-to-end frames/s. The model is freed
             before the CLI starts.
  cli        `python -m tokentrim.cli generate` with the same overrides, N prompts x seed 0, baseline + TokenTrim
             (interleaved, as users run them), into a temporary directory (deleted after). Two figures:
               process: from spawning the process to its exit (imports, model build, warm-up, every write);
               steady:  from the first timed video's rollout start to the last video's meta written (meta's
                        started_unix / finished_unix), i.e. excluding process start-up and the warm-up video;
             frames/s = pixel frames made / seconds, videos/hour = videos / seconds x 3600.
  ratio      the reference's seconds for the CLI's videos (per-variant medians x count) / the CLI's seconds: 1.0 =
             the command line is as fast as its GPU work (target >= 0.9 steady).
  drain      steady splits into GPU-busy (first rollout start -> the last video's rollout + decode end) and the drain
             after it (the last video's host copy, encode and writes, which nothing overlaps). A job of n videos
             pays the drain once: its steady ratio is about n g / (n g + drain) for g GPU seconds per video, so the
             GPU-busy ratio (reference seconds / GPU-busy seconds) is what a long job approaches.
Also per cell: the CLI's first video's GPU seconds over the median of the rest (a per-process cliff shows as > 1),
and the CLI's median rollout / decode / encode seconds per video.

    python bench/cli_throughput.py --device cuda --dtype bfloat16 --out $OUT                  # both backbones, 81 f + 30 s
    python bench/cli_throughput.py --backbones self_forcing --latent-frames 9 --prompts 2 --device cpu \\
        --dtype float32 --out /tmp/clit -- backbone.model.num_layers=2 ...                     # CPU plumbing (tests)

Results: `--out`/cli_throughput_<device>_<yyyymm>[_<tag>].{json,md}, rewritten after every cell (a cut-off call keeps
the finished cells), with device, versions and date.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402

from tokentrim.env_info import collect_env  # noqa: E402
from tokentrim.report.atomic_io import write_text_atomic  # noqa: E402

# generic text prompts (the random-weight backbones encode a prompt as seeded noise: the text only names the video)
PROMPTS = (
    "a red fox runs through fresh snow in a pine forest",
    "waves roll onto a rocky beach at sunset",
    "a city street at night with cars and neon signs",
    "a hot air balloon drifts over green hills",
    "a chef slices vegetables on a wooden board",
    "a sailboat crosses a calm lake under clouds",
    "a cat jumps onto a sunny windowsill",
    "rain falls on a busy market square",
)
REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[cli_throughput {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def base_overrides(backbone: str, latent_frames: int, args, prompt_file: Path, output_root: Path) -> list[str]:
    """The Hydra overrides of one cell, shared by the CLI and the reference (user overrides after `--` win).
    `scorer=vbench scorer.dimensions=[]`: generation only, so no scorer package or weights are needed (the default
    TinyWorld scorer would hold the prompts to its grammar)."""
    return [f"backbone={backbone}", "backbone.random_weights=true", f"device={args.device}", f"dtype={args.dtype}",
            f"num_latent_frames={latent_frames}", "scorer=vbench", "scorer.dimensions=[]",
            "prompts=file", f"prompts.path={prompt_file}", "prompts.seeds=[0]", f"prompts.limit={args.prompts}",
            f"paths.output_root={output_root}", "experiment_name=cli_throughput", *args.overrides]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference(overrides: list[str], args) -> dict:
    """The same machine's DiT + decode figure: `generate.render` on the CLI's first jobs, per variant, warm-up excluded."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from tokentrim.backbones import build_backbone, make_pipeline
    from tokentrim.cli import baseline_config, validate
    from tokentrim.generate import DTYPES, flowmo_config, jobs_of, render, trim_config, warm_up
    from tokentrim.trim import TokenTrim

    with initialize_config_module("tokentrim.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg, command="generate")
    start = time.perf_counter()
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True), device=cfg.device,
                              dtype=DTYPES[cfg.dtype])
    build_s = time.perf_counter() - start
    frames = cfg.num_latent_frames or backbone.num_latent_frames
    variants = {"baseline": baseline_config(cfg), "tokentrim": cfg}
    pipes = {name: make_pipeline(backbone, trim=TokenTrim(trim_config(c.trim)), flowmo=flowmo_config(c.init))
             for name, c in variants.items()}
    jobs = jobs_of(cfg.prompts, cfg.seed_offset)[: args.reference_repeats]
    warm_up_s = warm_up(backbone, pipes["baseline"], jobs[0].prompt, frames, cfg.device, cfg.video.encoding)
    runs: dict[str, list[dict]] = {name: [] for name in pipes}
    for job in jobs:  # interleaved A B A B, as the CLI runs them
        for name, pipe in pipes.items():
            video = render(job, backbone, pipe, frames, cfg.device)
            runs[name].append({"video": job.name, "dit_s": video.wall_s, "decode_s": video.decode_s,
                               "pixel_frames": int(video.pixels.shape[0]),
                               "triggers": sum(bool(e["triggered"]) for e in video.events)})
            del video
    out = {"build_s": build_s, "warm_up_s": warm_up_s, "latent_frames": frames, "variants": {}}
    for name, rows in runs.items():
        total = statistics.median(r["dit_s"] + r["decode_s"] for r in rows)
        out["variants"][name] = {
            "videos": rows, "pixel_frames": rows[0]["pixel_frames"], "video_s_median": total,
            "dit_s_median": statistics.median(r["dit_s"] for r in rows),
            "decode_s_median": statistics.median(r["decode_s"] for r in rows),
            "fps_end_to_end": rows[0]["pixel_frames"] / total,
        }
    del backbone, pipes
    gc.collect()
    if str(cfg.device).startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def run_cli(overrides: list[str], args, output_root: Path) -> dict:
    """`tokentrim generate` as a subprocess; its process seconds and the meta of every video it made."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "PYTHONPATH": path}  # this checkout's
    cmd = [sys.executable, "-m", "tokentrim.cli", "generate", *overrides]
    log("CLI: " + " ".join(cmd[2:]))
    start = time.time()
    proc = subprocess.run(cmd, cwd=output_root.parent, env=env, capture_output=True, text=True, timeout=args.timeout)
    process_s = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"tokentrim generate failed (rc {proc.returncode}): {proc.stderr[-3000:]}")
    metas = [json.loads(p.read_text()) for p in sorted(output_root.glob("cli_throughput/*/*/meta/*.json"))]
    if not metas:
        raise RuntimeError(f"tokentrim generate wrote no meta under {output_root}: {proc.stderr[-2000:]}")
    return {"spawned_unix": start, "process_s": process_s, "videos": metas,
            "log_tail": [ln for ln in proc.stderr.splitlines() if "warm-up" in ln or "WARNING" in ln][-5:]}


def summarise(ref: dict, cli: dict) -> dict:
    """CLI figures (process / steady), the reference's, their ratios, the first-video cliff."""
    videos = cli["videos"]
    frames = sum(int(v["num_frames"]) for v in videos)
    first_start = min(v["started_unix"] for v in videos)
    steady_s = max(v["finished_unix"] for v in videos) - first_start
    variant_of = {"none": "baseline"}  # meta's trim name -> the reference's variant
    ref_s = sum(ref["variants"][variant_of.get(v["trim"], "tokentrim")]["video_s_median"] for v in videos)
    by_start = sorted(videos, key=lambda v: v["started_unix"])
    gpu_s = [v["wall_s"] + v["decode_s"] for v in by_start]
    gpu_busy_s = max(v["started_unix"] + v["wall_s"] + v["decode_s"] for v in videos) - first_start
    return {
        "videos": len(videos), "pixel_frames": frames,
        "process_s": cli["process_s"], "startup_and_warm_up_s": first_start - cli["spawned_unix"], "steady_s": steady_s,
        "gpu_busy_s": gpu_busy_s, "drain_s": steady_s - gpu_busy_s,
        "fps_process": frames / cli["process_s"], "fps_steady": frames / steady_s,
        "videos_per_hour_process": len(videos) / cli["process_s"] * 3600,
        "videos_per_hour_steady": len(videos) / steady_s * 3600,
        "reference_s_for_these_videos": ref_s, "fps_reference": frames / ref_s,
        "ratio_steady": ref_s / steady_s, "ratio_process": ref_s / cli["process_s"], "ratio_gpu_busy": ref_s / gpu_busy_s,
        "cli_gpu_s_sum": sum(gpu_s),
        "first_video_cliff_x": gpu_s[0] / statistics.median(gpu_s[1:]) if len(gpu_s) > 1 else None,
        "cli_median_s": {key: statistics.median(float(v[key]) for v in videos)
                         for key in ("wall_s", "decode_s", "encode_s")},
        "encoding": sorted({v["encoding"] for v in videos}),
    }


def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render_markdown(record: dict) -> str:
    env = record["env"]
    lines = [f"# CLI throughput: `tokentrim generate` vs the same machine's DiT + decode ({record['device_name']}, "
             f"{record['date']})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, git {env.get('git_sha')}; random weights, "
             f"dtype {record['args']['dtype']}; {record['args']['prompts']} prompts x (baseline, TokenTrim) per cell; "
             f"reference: {record['args']['reference_repeats']} timed video(s) per variant after a full-length warm-up. "
             "steady = first timed rollout start -> last meta written (no process start-up, no warm-up); "
             "process = spawn -> exit. ratio = reference seconds for the same videos / CLI seconds (target >= 0.9); "
             "GPU-busy = steady without the drain (the last video's encode and writes, paid once per job).",
             "", "| backbone | latent f | frames/video | videos | CLI fps steady | CLI fps process | bench fps "
             "(DiT+decode) | ratio steady | ratio process | ratio GPU-busy (drain s) | videos/h steady | "
             "videos/h process | start-up+warm-up s | 1st-video cliff x | CLI median DiT / decode / encode s |",
             "|" + "---|" * 15]
    for cell in record["cells"]:
        s = cell.get("summary")
        if s is None:
            lines.append(f"| {cell['backbone']} | {cell['latent_frames']} | failed: {cell.get('error', '?')[:120]} |")
            continue
        med = s["cli_median_s"]
        lines.append(
            f"| {cell['backbone']} | {cell['latent_frames']} | {s['pixel_frames'] // s['videos']} | {s['videos']} | "
            f"{_f(s['fps_steady'])} | {_f(s['fps_process'])} | {_f(s['fps_reference'])} | {_f(s['ratio_steady'])} | "
            f"{_f(s['ratio_process'])} | {_f(s['ratio_gpu_busy'])} ({_f(s['drain_s'], '.1f')}) | "
            f"{_f(s['videos_per_hour_steady'], '.0f')} | "
            f"{_f(s['videos_per_hour_process'], '.0f')} | {_f(s['startup_and_warm_up_s'], '.1f')} | "
            f"{_f(s['first_video_cliff_x'])} | {med['wall_s']:.2f} / {med['decode_s']:.2f} / {med['encode_s']:.2f} |")
    lines += ["", "Reference per variant (median s per video: DiT + decode; frames/s):", ""]
    for cell in record["cells"]:
        for name, row in (cell.get("reference") or {}).get("variants", {}).items():
            lines.append(f"- {cell['backbone']} {cell['latent_frames']} latent, {name}: {row['dit_s_median']:.3f} + "
                         f"{row['decode_s_median']:.3f} s, {row['fps_end_to_end']:.2f} frames/s")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/cli_throughput.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", help="conf/backbone names, comma-separated")
    parser.add_argument("--latent-frames", help="video lengths in latent frames, comma-separated")
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--reference-repeats", type=int)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--tag")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the tokentrim config (after --)")
    return with_config_defaults(parser, "cli_throughput")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    parser.set_defaults(overrides=[])
    args = parser.parse_args(argv)
    backbones = [b for b in args.backbones.split(",") if b]
    lengths = [int(n) for n in str(args.latent_frames).split(",") if n]
    if not 1 <= args.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be in [1, {len(PROMPTS)}], got {args.prompts}")
    if not 1 <= args.reference_repeats <= args.prompts:
        raise SystemExit(f"--reference-repeats must be in [1, --prompts={args.prompts}], got {args.reference_repeats}")
    env = collect_env(args.device)
    device_name = torch.cuda.get_device_name().replace(" ", "_") if args.device.startswith("cuda") else "cpu"
    stamp = time.strftime("%Y%m")
    stem = f"cli_throughput_{device_name}_{stamp}" + (f"_{args.tag}" if args.tag else "")
    record = {"device_name": device_name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "env": env,
              "cells": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for backbone in backbones:
        for latent_frames in lengths:
            cell = {"backbone": backbone, "latent_frames": latent_frames}
            record["cells"].append(cell)
            work = Path(tempfile.mkdtemp(prefix="cli_throughput_"))
            try:
                prompt_file = work / "prompts.txt"
                prompt_file.write_text("\n".join(PROMPTS[: args.prompts]) + "\n")
                overrides = base_overrides(backbone, latent_frames, args, prompt_file, work / "out")
                cell["overrides"] = overrides
                log(f"{backbone} {latent_frames} latent frames: reference")
                cell["reference"] = reference(overrides, args)
                log(f"{backbone} {latent_frames} latent frames: tokentrim generate")
                cli = run_cli(overrides, args, work / "out")
                cell["cli"] = cli
                cell["summary"] = summarise(cell["reference"], cli)
                log(json.dumps(cell["summary"]))
            except Exception as err:  # noqa: BLE001 -- recorded; the next cell still runs
                cell["error"] = f"{type(err).__name__}: {err}"
                log(f"FAILED {backbone} {latent_frames}: {cell['error'][:2000]}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            write_text_atomic(args.out / f"{stem}.json", json.dumps(record, indent=1, default=str))
            write_text_atomic(args.out / f"{stem}.md", render_markdown(record))
    log(f"wrote {args.out / stem}.{{json,md}}")
    return record


if __name__ == "__main__":
    result = main()
    if any("error" in cell for cell in result["cells"]):
        raise SystemExit(1)
