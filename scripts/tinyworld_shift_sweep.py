#!/usr/bin/env python3
"""Sampler-shift sweep of the shipped TinyWorld model inside its training window (how tiny.yaml's shift is chosen).

Generates held-out prompts over the training window (12 latent frames) at each shift and writes the whole-video
TinyWorld scores averaged over prompts. Choose the shift on a prompt set that the reported quality table does not use
(the table uses `prompt_set(heldout, seed=0)`; the default here is seed 1). CPU, deterministic.

    PYTHONPATH=src python scripts/tinyworld_shift_sweep.py --out results/tinyworld/shift_selection.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tokentrim.report.atomic_io import write_text_atomic
from tokentrim.tinyworld.backbone import load_tinyworld
from tokentrim.tinyworld.prompts import prompt_set
from tokentrim.tinyworld.training import generate_latents, score_video, to_uint8_frames


def sweep(shifts: list[float], *, num_prompts: int, prompt_seed: int, noise_seed: int,
          ) -> tuple[int, dict[str, dict[str, float]]]:
    """(latent frames generated = the training window, {shift: {dimension: mean whole-video score over prompts}})."""
    tw = load_tinyworld()
    prompts = prompt_set(split="heldout", count=num_prompts, seed=prompt_seed)
    latent_shape = (tw.latent_channels, tw.latent_height, tw.latent_width)
    out = {}
    for shift in shifts:
        with torch.no_grad():
            latents = generate_latents(tw.model, tw.text_encoder, prompts,
                                       num_latent_frames=tw.train_window_latent_frames,
                                       sampler=dict(tw.sampler) | {"shift": shift}, seed=noise_seed,
                                       latent_shape=latent_shape)
            videos = tw.vae.decode(latents)  # [B, T, 3, H, W]
        sums: dict[str, list[float]] = {}
        for b, prompt in enumerate(prompts):
            for row in score_video(to_uint8_frames(videos[b]), prompt, tw.fps):
                if row["clip"] == -1:
                    sums.setdefault(row["dimension"], []).append(row["score"])
        out[str(shift)] = {k: sum(v) / len(v) for k, v in sums.items()}
        print(shift, {k: round(v, 3) for k, v in out[str(shift)].items()}, flush=True)
    return tw.train_window_latent_frames, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shifts", default="1,2,3,4,5")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-seed", type=int, default=1, help="held-out prompt set (the quality table uses 0)")
    parser.add_argument("--noise-seed", type=int, default=99)
    args = parser.parse_args(argv)
    try:
        shifts = [float(s) for s in args.shifts.split(",")]
    except ValueError:
        parser.error(f"--shifts must be comma-separated numbers, got {args.shifts!r}")
    if args.prompts < 1 or any(s <= 0 for s in shifts):
        parser.error(f"--prompts must be >= 1 and every shift > 0, got {args.prompts} and {shifts}")
    window, scores = sweep(shifts, num_prompts=args.prompts, prompt_seed=args.prompt_seed, noise_seed=args.noise_seed)
    record = {"prompt_split": "heldout", "prompt_seed": args.prompt_seed, "num_prompts": args.prompts,
              "noise_seed": args.noise_seed, "latent_frames": window, "scores": scores}
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
