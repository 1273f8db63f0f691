"""Training of the embedded TinyWorld model: a tiny Wan VAE, then the causal Wan DiT + grammar text encoder.

Stages (driven by `scripts/train_tinyworld.py`):
1. VAE: diffusers `AutoencoderKLWan` at a tiny config (spatial stride 4, temporal stride 4 like Wan), trained on
   rendered TinyWorld clips with an L1 loss that weights object pixels up (the metrics read object colours) plus a
   small KL term; then per-channel latent statistics are measured, so the DiT sees ~unit-variance latents (Wan's
   `latents_mean` / `latents_std` convention).
2. DiT: `CausalWanModel` trained with *teacher forcing on clean context* (CausVid, arXiv 2412.07772, Sec. 3.2): the
   clip is fed twice, clean (t = 0) then noised, under a mask where the noisy copy of block b sees the clean copies of
   blocks < b and itself. This is exactly what the Self Forcing sampler does at inference, where the cache holds the
   clean x0 of earlier blocks written at `context_noise = 0`. Per-block noise levels are drawn from the sampler's own
   warped timesteps (so the 4-step sampler is trained for) mixed with a continuous shift-warped distribution; the loss
   is flow matching, MSE on v = noise - x0 (Wan's target).

Every random draw of step k comes from generators seeded by (seed, k), so a run cut into chunks (checkpoint, resume)
gives the same parameters as an uninterrupted one.

Letters: B batch, T pixel frames, F latent frames, C latent channels, H, W pixel size, h, w latent size, N tokens per
latent frame, L = F N, D model dim.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tokentrim.models.vae_full_sequence import decode_full_sequence, encode_full_sequence
from tokentrim.models.wan_causal import CausalWanModel, rope_angles, sinusoidal_embedding, unpatchify
from tokentrim.pipelines.sampling import warped_timesteps
from tokentrim.report.atomic_io import atomic_path, write_text_atomic
from tokentrim.tinyworld.prompts import describe, guidance_prompts, sample_scene
from tokentrim.tinyworld.world import render

logger = logging.getLogger(__name__)

#: Temporal stride of the Wan VAE: latent frame 0 <-> pixel frame 0, latent f >= 1 <-> 4 pixel frames.
TEMPORAL_STRIDE = 4


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames T = 1 + 4 (F - 1) of F latent frames (Wan's causal VAE)."""
    return 1 + TEMPORAL_STRIDE * (latent_frames - 1)


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ClipSpec:
    """What a training clip looks like (the shipped model's video format)."""

    height: int = 64
    width: int = 64
    fps: float = 8.0
    max_start_frame: int = 64  # clips start at a random time in [0, max_start_frame) frames (pan phase, bounces)


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one (seed, step, stream): every random draw of a training step comes from these."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63 - 1))
    return g


def render_clips(
    seed: int, index: int, *, batch_size: int, num_frames: int, spec: ClipSpec, device: torch.device | str,
    split: str = "train",
) -> tuple[list[str], torch.Tensor]:
    """A deterministic batch of rendered train-split clips (scenes, layouts and start times from (seed, index)).

    Returns:
        prompts (B canonical prompts) and pixels `[B, T, 3, H, W]` in [-1, 1] on `device`.
    """
    g = step_generator(seed, index, stream=1)
    scenes = [sample_scene(g, split=split) for _ in range(batch_size)]
    start = int(torch.randint(spec.max_start_frame, (), generator=g)) if spec.max_start_frame > 0 else 0
    video = render(scenes, num_frames=num_frames, height=spec.height, width=spec.width, fps=spec.fps,
                   generator=g, start_frame=start, device=device)  # [B, T, 3, H, W] in [0, 1]
    return [describe(s) for s in scenes], video * 2.0 - 1.0


# ---------------------------------------------------------------------------------------------- VAE
def is_object(pixels: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Object pixels of `pixels` in [-1, 1]: max channel > 0.55 in [0, 1], the TinyWorld metrics' foreground rule
    (`metrics.detect`'s `fg_threshold`). Bool, `channel_dim` reduced."""
    return (pixels.amax(dim=channel_dim) + 1.0) / 2.0 > 0.55


def vae_loss(autoencoder, pixels: torch.Tensor, *, kl_weight: float, object_weight: float,
             generator: torch.Generator | None = None, sample_posterior: bool = True,
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction loss of a diffusers `AutoencoderKLWan` on pixels `[B, T, 3, H, W]` in [-1, 1] (T = 1 + 4k).

    L1 per pixel, weighted by (1 + object_weight) where the target is an object (max channel > 0.55 in [0, 1], the
    metrics' foreground rule), plus `kl_weight` x the mean KL of the posterior. `sample_posterior=False` decodes the
    posterior mean (a deterministic autoencoder, the KL acting as a small L2 on the latents): at initialisation the
    posterior std is ~1, as large as the means, and a tiny KL weight takes thousands of steps to shrink it, while the
    DiT and the decoder at inference only ever see the means. Encoder and decoder run over the whole clip in one pass
    (`vae_full_sequence`: the numbers of diffusers' chunk loop, without its launch-bound serial chunks).
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    x = pixels.transpose(1, 2)  # [B, T, 3, H, W] -> [B, 3, T, H, W]
    posterior = DiagonalGaussianDistribution(encode_full_sequence(autoencoder, x))  # = autoencoder._encode(x)
    z = posterior.mean
    if sample_posterior:
        z = z + posterior.std * torch.randn(posterior.mean.shape, generator=generator, device=x.device,
                                            dtype=posterior.mean.dtype)
    recon = decode_full_sequence(autoencoder, z)  # [B, 3, T, H, W], = autoencoder._decode(z).sample
    foreground = is_object(x, channel_dim=1).unsqueeze(1).to(recon.dtype)  # [B, 1, T, H, W]
    l1 = ((recon.float() - x.float()).abs() * (1.0 + object_weight * foreground)).mean()
    kl = 0.5 * (posterior.mean.float().pow(2) + posterior.var.float() - 1.0 - posterior.logvar.float()).mean()
    loss = l1 + kl_weight * kl
    return loss, {"l1": float(l1.detach()), "kl": float(kl.detach())}


def object_coverage(pixels: torch.Tensor, *, temporal_stride: int, spatial_stride: int) -> torch.Tensor:
    """Fraction of object pixels under each latent pixel: pixels `[B, T, 3, H, W]` in [-1, 1] (T = 1 + s k) ->
    `[B, F, H / s', W / s']` in [0, 1] (F = 1 + k).

    Objects are the metrics' foreground (max channel > 0.55 in [0, 1]). Latent frame 0 covers pixel frame 0 alone,
    latent frame f > 0 covers frames s (f - 1) + 1 ... s f, as in the causal VAE.
    """
    batch_size, num_frames, _, height, width = pixels.shape
    if (num_frames - 1) % temporal_stride:
        raise ValueError(f"pixels need 1 + {temporal_stride}k frames, got {num_frames}")
    foreground = is_object(pixels, channel_dim=2).float()  # [B, T, H, W]
    first = foreground[:, :1].expand(-1, temporal_stride, -1, -1)  # frame 0 alone: repeated to a full group
    grouped = torch.cat([first, foreground[:, 1:]], dim=1)  # [B, s F, H, W]
    grouped = grouped.unflatten(1, (-1, temporal_stride)).mean(dim=2)  # [B, F, H, W]
    return F.avg_pool2d(grouped, spatial_stride)  # [B, F, H / s', W / s']


@torch.no_grad()
def latent_statistics(autoencoder, pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of `pixels` `[B, T, 3, H, W]` (for `WanVAE.normalize`)."""
    h = encode_full_sequence(autoencoder, pixels.transpose(1, 2))  # [B, 2C, F, h, w]
    mu = h[:, : h.shape[1] // 2].float()  # [B, C, F, h, w]
    mean = mu.mean(dim=(0, 2, 3, 4))
    std = mu.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------------------------------------- DiT
def teacher_forcing_mask(num_frames: int, tokens_per_frame: int, block_frames: int, device=None) -> torch.Tensor:
    """`[2L, 2L]` bool mask (True = attend) over [clean copy, noisy copy] of a clip.

    Clean tokens of block b see clean blocks <= b (the cache-writing pass); noisy tokens of block b see clean blocks
    < b and the noisy block b itself (one denoising call against the committed cache).
    """
    block = torch.arange(num_frames, device=device) // block_frames  # [F]
    block = block.repeat_interleave(tokens_per_frame)  # [L]
    clean_clean = block[None, :] <= block[:, None]  # [L, L]
    noisy_clean = block[None, :] < block[:, None]
    noisy_noisy = block[None, :] == block[:, None]
    top = torch.cat([clean_clean, torch.zeros_like(clean_clean)], dim=1)  # [L, 2L]
    bottom = torch.cat([noisy_clean, noisy_noisy], dim=1)  # [L, 2L]
    return torch.cat([top, bottom], dim=0)  # [2L, 2L]


def teacher_forcing_flow(
    model: CausalWanModel,
    clean: torch.Tensor,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    context_kv: list[tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor,
    *,
    context_timestep: float = 0.0,
) -> torch.Tensor:
    """Flow prediction for the noisy copy of a clip whose earlier blocks are given clean (one forward for all blocks).

    Uses the model's own modules step by step as `CausalWanModel.forward`, with the two copies at the *same*
    absolute frame positions for RoPE (forward would number them 0..2F-1).

    Args:
        clean, noisy: `[B, F, C, h, w]`.
        timesteps: `[B, F]` noise level of each noisy frame, in [0, 1000].
        mask: `teacher_forcing_mask(F, N, block_frames)`.
    Returns:
        flow `[B, F, C, h, w]` of the noisy copy.
    """
    batch_size, num_frames, _, height, width = noisy.shape
    cfg = model.config
    _, ph, pw = cfg.patch_size
    grid_h, grid_w = height // ph, width // pw
    dtype = model.patch_embedding.weight.dtype
    latents = torch.cat([clean, noisy], dim=1)  # [B, 2F, C, h, w]
    t = torch.cat([torch.full_like(timesteps, context_timestep), timesteps], dim=1)  # [B, 2F]

    x = model.patch_embedding(latents.to(dtype).transpose(1, 2))  # [B, D, 2F, gh, gw]
    x = x.flatten(2).transpose(1, 2)  # -> [B, 2F*N, D]
    e = model.time_embedding(sinusoidal_embedding(cfg.freq_dim, t.flatten()).to(dtype))  # [B*2F, D]
    e0 = model.time_projection(e).unflatten(1, (6, cfg.dim)).unflatten(0, (batch_size, 2 * num_frames))  # [B, 2F, 6, D]
    frames = torch.arange(num_frames, device=noisy.device).repeat(2)  # [2F]: both copies at frames 0..F-1
    angles = rope_angles(model.head_dim, frames, grid_h, grid_w)  # [2F*N, d/2]
    cos, sin = angles.cos().float(), angles.sin().float()
    for layer, block in enumerate(model.blocks):
        x = block(x, e0, cos, sin, context_kv[layer], None, layer, mask)
    out = model.head(x, e.unflatten(0, (batch_size, 2 * num_frames)).unsqueeze(2))  # [B, 2F, N, p*C]
    flow = unpatchify(out, (grid_h, grid_w), cfg.patch_size, cfg.out_dim)  # [B, 2F, C, h, w]
    return flow[:, num_frames:]


def sample_block_timesteps(
    batch_size: int, num_frames: int, block_frames: int, *, sampler_timesteps: Sequence[float], discrete_prob: float,
    train_shift: float, generator: torch.Generator, device: torch.device | str,
) -> torch.Tensor:
    """`[B, F]` timesteps, constant within each block: with probability `discrete_prob` one of the sampler's warped
    timesteps, else sigma = shift u / (1 + (shift - 1) u), u ~ U(0, 1), t = 1000 sigma (Wan's shifted schedule)."""
    num_blocks = math.ceil(num_frames / block_frames)
    shape = (batch_size, num_blocks)
    u = torch.rand(shape, generator=generator)
    continuous = 1000.0 * train_shift * u / (1.0 + (train_shift - 1.0) * u)
    table = torch.tensor(list(sampler_timesteps), dtype=torch.float32)
    discrete = table[torch.randint(len(table), shape, generator=generator)]
    pick = torch.rand(shape, generator=generator) < discrete_prob
    t = torch.where(pick, discrete, continuous).clamp(1.0, 1000.0)  # [B, num_blocks]
    return t.repeat_interleave(block_frames, dim=1)[:, :num_frames].to(device)  # [B, F]


def dit_loss(
    model: CausalWanModel,
    text_encoder,
    latents: torch.Tensor,
    prompts: Sequence[str],
    mask: torch.Tensor,
    *,
    block_frames: int,
    sampler_timesteps: Sequence[float],
    discrete_prob: float,
    train_shift: float,
    context_corruption: float,
    generator: torch.Generator,
    noise_generator: torch.Generator | None = None,
    coverage: torch.Tensor | None = None,
    object_weight: float = 0.0,
) -> torch.Tensor:
    """Flow-matching loss of one teacher-forced batch. latents: `[B, F, C, h, w]` (normalised clean latents).

    `coverage` `[B, F, h, w]` (`object_coverage` of the clips) with `object_weight` > 0 weights each latent pixel's
    squared error by 1 + object_weight x coverage (normalised by the mean weight): an object covers 2-6 of a frame's
    64 tokens, so with a uniform loss the background dominates the gradient. `object_weight = 0` is the plain MSE.

    `context_corruption`: half of the clips get their clean context mixed with noise at sigma ~ U(0, value) (still
    labelled t = 0), so the model tolerates its own imperfect blocks in the cache a little.
    `generator` (CPU) draws the small per-clip choices, `noise_generator` (on the latents' device; default
    `generator`) the Gaussian noise.
    """
    batch_size, num_frames = latents.shape[:2]
    device = latents.device
    t = sample_block_timesteps(batch_size, num_frames, block_frames, sampler_timesteps=sampler_timesteps,
                               discrete_prob=discrete_prob, train_shift=train_shift, generator=generator,
                               device=device)  # [B, F]
    noise_generator = generator if noise_generator is None else noise_generator

    def gaussian() -> torch.Tensor:  # [B, F, C, h, w] on the latents' device
        return torch.randn(latents.shape, generator=noise_generator, device=noise_generator.device).to(device)

    noise = gaussian()
    sigma = (t / 1000.0).view(batch_size, num_frames, 1, 1, 1)
    noisy = (1.0 - sigma) * latents + sigma * noise
    clean = latents
    if context_corruption > 0:
        amount = torch.rand(batch_size, generator=generator) * context_corruption  # [B]
        amount = amount * (torch.rand(batch_size, generator=generator) < 0.5)
        amount = amount.to(device).view(batch_size, 1, 1, 1, 1)
        clean = (1.0 - amount) * latents + amount * gaussian()
    ids, key_mask = text_encoder.tokenizer(list(prompts))
    text = text_encoder(ids.to(device), key_mask.to(device))  # [B, S, text_dim]
    context_kv = model.encode_context(text)
    flow = teacher_forcing_flow(model, clean, noisy, t, context_kv, mask)
    squared = (flow.float() - (noise - latents).float()).pow(2)  # [B, F, C, h, w]
    if object_weight == 0.0:
        return squared.mean()
    if coverage is None:
        raise ValueError("dit_loss: object_weight > 0 needs the clips' coverage")
    weight = 1.0 + object_weight * coverage.to(squared.device, torch.float32).unsqueeze(2)  # [B, F, 1, h, w]
    return (squared * weight).mean() / weight.mean()


def sampler_timesteps_of(sampler: dict) -> list[float]:
    """The warped timesteps a `SelfForcingConfig`-kwargs dict feeds the model."""
    return warped_timesteps(list(sampler["denoising_steps"]), float(sampler["shift"]),
                            bool(sampler.get("warp_denoising_step", True)))


# ---------------------------------------------------------------------------------------------- files
def atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def split_state(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Cut a flat tensor dict into shards of at most `max_bytes` each (a single larger tensor gets its own shard)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    return shards


def code_digest(paths: Sequence[Path]) -> str:
    """sha256 over the given source files (name + bytes), to tie shipped weights to the code that trained them."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------- generation / eval
@torch.no_grad()
def generate_latents(
    model: CausalWanModel, text_encoder, prompts: Sequence[str], *, num_latent_frames: int, sampler: dict, seed: int,
    latent_shape: tuple[int, int, int], device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Roll out the Self Forcing sampler (no TokenTrim) for a batch of prompts.

    Noise comes from one CPU generator seeded with `seed` (initial noise first, then the re-noising draws), so a
    rollout is reproducible on any device. Returns latents `[B, F, C, h, w]`. Leaves `model` in eval mode with
    `requires_grad` off (the pipeline freezes it).
    """
    from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline

    config = SelfForcingConfig(**sampler)
    pipe = SelfForcingPipeline(model, config)
    g = torch.Generator().manual_seed(seed)
    channels, height, width = latent_shape
    dtype = model.patch_embedding.weight.dtype
    noise = torch.randn((len(prompts), num_latent_frames, channels, height, width), generator=g).to(device, dtype)
    context_kv = model.encode_context(text_encoder.encode(guidance_prompts(prompts, config.guided)))
    return pipe(noise, context_kv, noise_source=lambda shape: torch.randn(shape, generator=g).to(device, dtype))


def to_uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded video `[T, 3, H, W]` in [-1, 1] -> `[T, H, W, 3]` uint8 (the file / scorer layout)."""
    return ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def score_video(frames: torch.Tensor, prompt: str, fps: float) -> list[dict]:
    """TinyWorld ground-truth rows (every dimension, every 2-s clip and the whole-video mean)."""
    from tokentrim.tinyworld.metrics import TinyWorldScorer

    return TinyWorldScorer(clip_seconds=2.0).score_frames(frames.cpu(), prompt, fps)


def plot_losses(rows: Sequence[dict], path: Path) -> None:
    """Loss curves (one panel per stage, log scale) from `losses.csv` rows, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in ("vae", "dit") if any(r["stage"] == s for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5 * max(1, len(stages)), 3.5))
    axes = [axes] if len(stages) <= 1 else list(axes)
    titles = {"vae": "VAE: weighted L1 + KL", "dit": "DiT: flow-matching MSE (teacher forcing)"}
    for ax, stage in zip(axes, stages):
        steps = [int(r["step"]) for r in rows if r["stage"] == stage]
        ax.plot(steps, [float(r["loss"]) for r in rows if r["stage"] == stage], lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(titles[stage], fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
