#!/usr/bin/env python3
"""Frame strips of the shipped TinyWorld model (results/tinyworld/samples.png): per held-out prompt, four rows —
the renderer, the VAE reconstruction of the render, the generated first training window, and the last window of the
5x rollout (rolling cache + sink, the drift regime). CPU, deterministic.

    PYTHONPATH=src python scripts/tinyworld_samples.py --out results/tinyworld/samples.png [--prompts 3] [--shift 3.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tokentrim.report.atomic_io import atomic_path
from tokentrim.tinyworld.backbone import load_tinyworld
from tokentrim.tinyworld.prompts import parse, prompt_set
from tokentrim.tinyworld.training import generate_latents, pixel_frames
from tokentrim.tinyworld.world import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=3, help="first N held-out prompts (prompt_set seed 0)")
    parser.add_argument("--shift", type=float, default=None, help="sampler shift (default: the shipped sampler's)")
    parser.add_argument("--columns", type=int, default=8, help="frames shown per row")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    tw = load_tinyworld()
    sampler = dict(tw.sampler) | ({"shift": args.shift} if args.shift is not None else {})
    window = tw.train_window_latent_frames
    prompts = prompt_set(split="heldout", count=args.prompts, seed=0)
    latent_shape = (tw.latent_channels, tw.latent_height, tw.latent_width)
    with torch.no_grad():
        truth = render([parse(p) for p in prompts], num_frames=pixel_frames(window), height=tw.height,
                       width=tw.width, fps=tw.fps, seed=args.seed) * 2.0 - 1.0  # [B, T, 3, H, W]
        recon = tw.vae.decode(tw.vae.encode(truth))
        latents = generate_latents(tw.model, tw.text_encoder, prompts, num_latent_frames=5 * window, sampler=sampler,
                                   seed=args.seed, latent_shape=latent_shape)
        video = tw.vae.decode(latents)  # [B, T_long, 3, H, W]
    span = pixel_frames(window)
    rows = {"render": truth, "VAE reconstruction": recon, "generated, first window": video[:, :span],
            f"generated, last window (of {video.shape[1]} frames)": video[:, -span:]}
    picks = torch.linspace(0, span - 1, args.columns).round().long()
    fig, axes = plt.subplots(len(prompts) * len(rows), args.columns,
                             figsize=(1.1 * args.columns, 1.15 * len(prompts) * len(rows)))
    for b, prompt in enumerate(prompts):
        for r, (name, frames) in enumerate(rows.items()):
            for c, f in enumerate(picks.tolist()):
                ax = axes[b * len(rows) + r, c]
                ax.imshow((frames[b, f].permute(1, 2, 0).float().clamp(-1, 1) * 0.5 + 0.5).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(name, fontsize=5, rotation=0, ha="right", va="center")
            if r == 0:
                axes[b * len(rows), 0].set_title(prompt, fontsize=5, loc="left")
    fig.tight_layout(pad=0.2)
    try:
        with atomic_path(args.out) as tmp:
            fig.savefig(tmp, dpi=130)
    finally:
        plt.close(fig)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
