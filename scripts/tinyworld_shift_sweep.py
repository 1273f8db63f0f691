#!/usr/bin/env python3
"""Sampler-shift sweep of the shipped TinyWorld model inside its training window (how tiny.yaml's shift is chosen).

Generates held-out prompts over the training window (12 latent frames) at each shift and writes the whole-video
TinyWorld scores averaged over prompts, and the object-count errors behind them (frames with extra or missing
components, `TinyWorldScorer.count_errors`, summed over prompts). Choose the shift on a prompt set that the reported
quality table does not use (the table uses `prompt_set(heldout, seed=0)`; the default here is seed 1). `--steps K`
samples with K evenly spaced denoising steps (the shipped sampler's 4 are [1000, 750, 500, 250]). CPU, deterministic.

    PYTHONPATH=src python scripts/tinyworld_shift_sweep.py --out results/tinyworld/shift_selection.json
    PYTHONPATH=src python scripts/tinyworld_shift_sweep.py --out /tmp/s8.json --shifts 5 --steps 8 --prompt-seed 0
    PYTHONPATH=src python scripts/tinyworld_shift_sweep.py --out /tmp/g.json --shifts 5 --guidance-scale 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tokentrim.env_info import collect_env
from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.tinyworld.backbone import load_tinyworld
from tokentrim.tinyworld.metrics import TinyWorldScorer
from tokentrim.tinyworld.prompts import prompt_set
from tokentrim.tinyworld.training import generate_latents, score_video, to_uint8_frames


def evenly_spaced_steps(num_steps: int) -> list[int]:
    """K denoising steps from 1000 down in equal strides: 4 -> [1000, 750, 500, 250] (the shipped list)."""
    return [round(1000 * (1 - i / num_steps)) for i in range(num_steps)]


def sweep(shifts: list[float], *, num_prompts: int, prompt_seed: int, noise_seed: int, num_steps: int = 4,
          guidance_scale: float | None = None, renoise_eta: float | None = None,
          ) -> tuple[int, dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """(latent frames generated = the training window, {shift: {dimension: mean whole-video score over prompts}},
    {shift: {detected - prompted objects: frames, over all prompts}})."""
    tw = load_tinyworld()
    prompts = prompt_set(split="heldout", count=num_prompts, seed=prompt_seed)
    latent_shape = (tw.latent_channels, tw.latent_height, tw.latent_width)
    scorer = TinyWorldScorer()
    out, errors = {}, {}
    for shift in shifts:
        sampler = dict(tw.sampler) | {"shift": shift, "denoising_steps": evenly_spaced_steps(num_steps)}
        if guidance_scale is not None:
            sampler["guidance_scale"] = guidance_scale
        if renoise_eta is not None:
            sampler["renoise_eta"] = renoise_eta
        with torch.no_grad():
            latents = generate_latents(tw.model, tw.text_encoder, prompts,
                                       num_latent_frames=tw.train_window_latent_frames,
                                       sampler=sampler, seed=noise_seed, latent_shape=latent_shape)
            videos = tw.vae.decode(latents)  # [B, T, 3, H, W]
        sums: dict[str, list[float]] = {}
        histogram: dict[int, int] = {}
        for b, prompt in enumerate(prompts):
            frames = to_uint8_frames(videos[b])
            for row in score_video(frames, prompt, tw.fps):
                if row["clip"] == -1:
                    sums.setdefault(row["dimension"], []).append(row["score"])
            for error, count in scorer.count_errors(frames, prompt).items():
                histogram[error] = histogram.get(error, 0) + count
        out[str(shift)] = {k: sum(v) / len(v) for k, v in sums.items()}
        errors[str(shift)] = {f"{e:+d}": histogram[e] for e in sorted(histogram)}
        print(shift, {k: round(v, 3) for k, v in out[str(shift)].items()}, errors[str(shift)], flush=True)
    return tw.train_window_latent_frames, out, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shifts", default="1,2,3,4,5")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-seed", type=int, default=1, help="held-out prompt set (the quality table uses 0)")
    parser.add_argument("--noise-seed", type=int, default=99)
    parser.add_argument("--steps", type=int, default=4, help="evenly spaced denoising steps (the shipped sampler: 4)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance scale (default: the shipped sampler's)")
    parser.add_argument("--renoise-eta", type=float, default=None,
                        help="fresh-noise share between steps, 1 = Self Forcing's sampler, 0 = Euler (default: shipped)")
    args = parser.parse_args(argv)
    try:
        shifts = [float(s) for s in args.shifts.split(",")]
    except ValueError:
        parser.error(f"--shifts must be comma-separated numbers, got {args.shifts!r}")
    if args.prompts < 1 or args.steps < 1 or any(s <= 0 for s in shifts):
        parser.error(f"--prompts and --steps must be >= 1 and every shift > 0, got {args.prompts}, {args.steps} and "
                     f"{shifts}")
    if args.guidance_scale is not None and args.guidance_scale < 0:
        parser.error(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    if args.renoise_eta is not None and not 0 <= args.renoise_eta <= 1:
        parser.error(f"--renoise-eta must be in [0, 1], got {args.renoise_eta}")
    window, scores, count_errors = sweep(shifts, num_prompts=args.prompts, prompt_seed=args.prompt_seed,
                                         noise_seed=args.noise_seed, num_steps=args.steps,
                                         guidance_scale=args.guidance_scale, renoise_eta=args.renoise_eta)
    record = {"prompt_split": "heldout", "prompt_seed": args.prompt_seed, "num_prompts": args.prompts,
              "noise_seed": args.noise_seed, "latent_frames": window,
              "denoising_steps": evenly_spaced_steps(args.steps), "guidance_scale": args.guidance_scale,
              "renoise_eta": args.renoise_eta, "scores": scores, "count_errors": count_errors, "env": collect_env()}
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
