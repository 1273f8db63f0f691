#!/usr/bin/env python3
"""Train the embedded TinyWorld model (tiny Wan VAE, then causal Wan DiT + grammar text encoder) in resumable chunks.

    PYTHONPATH=src python3 scripts/train_tinyworld.py out_dir=OUT [resume_dir=PREV_OUT] [max_seconds=540] \
        [stages=[vae,dit,eval]] [dit.steps=...] [git_sha=$(git rev-parse HEAD)]

A chunk runs the stages it is allowed to until `max_seconds`, stops at a step boundary and writes its whole state to
`out_dir` (checkpoint shards of < 16 MB, `meta.json`, `losses.csv`). Resuming from that directory gives bit-identical
parameters to an uninterrupted run on the same device (every random draw of step k is seeded by (seed, k)).
`stages=[export] resume_dir=...` writes the shipped weights (fp16 safetensors + config.json) to `export.dir`;
`stages=[eval] resume_dir=... eval.out=FILE` scores held-out prompts in-window and in long rollouts.
Numbers and the exact commands of the shipped model: results/tinyworld/README.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tokentrim.models.vae import WanVAE
from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig
from tokentrim.tinyworld.prompts import drop_prompts, parse, prompt_set
from tokentrim.tinyworld.text_encoder import TinyTextEncoder
from tokentrim.tinyworld.world import render
from tokentrim.tinyworld.training import (
    ClipSpec,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_text,
    code_digest,
    dit_loss,
    generate_latents,
    latent_statistics,
    object_coverage,
    pixel_frames,
    plot_losses,
    render_clips,
    sampler_timesteps_of,
    score_video,
    split_state,
    step_generator,
    teacher_forcing_mask,
    to_uint8_frames,
    vae_loss,
)

log = logging.getLogger("train_tinyworld")
REPO = Path(__file__).resolve().parents[1]
SHARD_BYTES = 16_000_000  # < 16 MiB: the most one file may weigh to come back from the GPU machine
LOSS_COLUMNS = ("stage", "step", "loss", "l1", "kl", "lr", "train_s")
CODE_FILES = (
    "scripts/train_tinyworld.py",
    "src/tokentrim/tinyworld/training.py",
    "src/tokentrim/tinyworld/text_encoder.py",
    "src/tokentrim/tinyworld/world.py",
    "src/tokentrim/tinyworld/prompts.py",
    "src/tokentrim/models/wan_causal.py",
    "src/tokentrim/models/vae.py",
    "src/tokentrim/models/vae_full_sequence.py",
    "src/tokentrim/conf/train_tinyworld.yaml",
)


# ---------------------------------------------------------------------------------------------- state
class Trainer:
    """Everything a chunk needs: networks, optimizers, counters, the loss log; saved/loaded as one checkpoint."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)  # initial weights: VAE, then DiT, then text encoder
        vae_cfg = OmegaConf.to_container(cfg.vae.config, resolve=True)
        z_dim = int(vae_cfg["z_dim"])
        self.vae = WanVAE(**vae_cfg, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim).to(device)
        self.model = CausalWanModel(**OmegaConf.to_container(cfg.dit.model, resolve=True)).to(device)
        self.text_encoder = TinyTextEncoder(**OmegaConf.to_container(cfg.text_encoder, resolve=True)).to(device)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae.lr, weight_decay=cfg.vae.weight_decay)
        self.dit_params = list(self.model.parameters()) + list(self.text_encoder.parameters())
        self.dit_opt = torch.optim.AdamW(self.dit_params, lr=cfg.dit.lr, weight_decay=cfg.dit.weight_decay)
        self.meta: dict = {"vae_step": 0, "dit_step": 0, "latents_mean": None, "latents_std": None,
                           "train_s": {"vae": 0.0, "dit": 0.0}, "running": {}, "eval": {}, "chunks": []}
        self.rows: list[dict] = []
        self.steps_this_chunk = 0

    def vae_total(self) -> int:
        return int(self.meta.get("vae_total", self.cfg.vae.steps))

    def dit_total(self) -> int:
        return int(self.meta.get("dit_total", self.cfg.dit.steps))

    def budget_left(self) -> bool:
        """False once this chunk has taken `chunk_steps` optimizer steps (None = no step cap, only max_seconds)."""
        return self.cfg.chunk_steps is None or self.steps_this_chunk < self.cfg.chunk_steps

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> dict[str, torch.Tensor]:
        flat = {f"vae.{k}": v for k, v in self.vae.autoencoder.state_dict().items()}
        flat |= {f"text.{k}": v for k, v in self.text_encoder.state_dict().items()}
        flat |= {f"dit.{k}": v for k, v in self.model.state_dict().items()}
        groups = {}
        for name, opt, active in (("vae_opt", self.vae_opt, self.meta["vae_step"] < self.vae_total()),
                                  ("dit_opt", self.dit_opt, self.meta["dit_step"] > 0)):
            if not active:
                continue
            sd = opt.state_dict()
            for idx, st in sd["state"].items():
                flat |= {f"{name}.{idx}.{k}": v for k, v in st.items()}
            groups[name] = sd["param_groups"]
        self.meta["param_groups"] = groups
        return flat

    def save(self, out_dir: Path) -> None:
        flat = self.state()
        shards = split_state(flat, SHARD_BYTES)
        for i, shard in enumerate(shards):
            atomic_torch_save({k: v.detach().cpu() for k, v in shard.items()}, out_dir / f"ckpt_{i}.pt")
        for stale in out_dir.glob("ckpt_*.pt"):
            if int(stale.stem.split("_")[1]) >= len(shards):
                stale.unlink()
        self.meta["num_shards"] = len(shards)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(out_dir / "losses.csv", buf.getvalue())
        atomic_write_text(out_dir / "meta.json", json.dumps(self.meta, indent=1))  # last: marks a complete checkpoint
        log.info("checkpoint: %d shards -> %s (vae_step=%d, dit_step=%d)", len(shards), out_dir,
                 self.meta["vae_step"], self.meta["dit_step"])

    def load(self, ckpt_dir: Path) -> None:
        meta_path = ckpt_dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"resume_dir {ckpt_dir} has no meta.json (not a finished checkpoint)")
        self.meta = json.loads(meta_path.read_text())
        flat: dict[str, torch.Tensor] = {}
        for i in range(self.meta["num_shards"]):
            path = ckpt_dir / f"ckpt_{i}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint shard {path} is missing (meta.json lists {self.meta['num_shards']})")
            flat |= torch.load(path, map_location="cpu", weights_only=True)

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}

        self.vae.autoencoder.load_state_dict(part("vae."), strict=True)
        self.text_encoder.load_state_dict(part("text."), strict=True)
        self.model.load_state_dict(part("dit."), strict=True)
        if self.meta["latents_mean"] is not None:
            self.vae.config["latents_mean"] = list(self.meta["latents_mean"])
            self.vae.config["latents_std"] = list(self.meta["latents_std"])
        for name, opt in (("vae_opt", self.vae_opt), ("dit_opt", self.dit_opt)):
            if name not in self.meta["param_groups"]:
                continue
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in part(f"{name}.").items():
                idx, field = key.split(".", 1)
                state.setdefault(int(idx), {})[field] = value
            opt.load_state_dict({"state": state, "param_groups": self.meta["param_groups"][name]})
        rows_path = ckpt_dir / "losses.csv"
        if rows_path.is_file():
            with rows_path.open() as f:
                self.rows = list(csv.DictReader(f))
        log.info("resumed from %s (vae_step=%d, dit_step=%d)", ckpt_dir, self.meta["vae_step"], self.meta["dit_step"])

    def init_from_export(self, folder: Path) -> None:
        """Fine-tune start: networks and latent statistics of an export folder (its architecture must be this
        config's); the VAE stage counts as done, the DiT starts at step 0 with a fresh optimizer."""
        from tokentrim.tinyworld.backbone import load_tinyworld, read_export_config

        exported = read_export_config(folder)
        ours = {"dit": OmegaConf.to_container(self.cfg.dit.model, resolve=True),
                "text_encoder": OmegaConf.to_container(self.cfg.text_encoder, resolve=True)}
        for part, expected in ours.items():
            if exported[part] != expected:
                raise ValueError(f"init_dir {folder}: its {part} config {exported[part]} differs from this run's {expected}")
        tw = load_tinyworld(weights_dir=str(folder))  # the shipped-weights loader: strict, one-line errors, float32
        for ours_module, theirs in ((self.model, tw.model), (self.text_encoder, tw.text_encoder),
                                    (self.vae.autoencoder, tw.vae.autoencoder)):
            ours_module.load_state_dict(theirs.state_dict(), strict=True)
        for key in ("latents_mean", "latents_std"):
            self.vae.config[key] = list(tw.vae.config[key])
            self.meta[key] = list(tw.vae.config[key])
        self.meta["vae_step"] = self.meta["vae_total"] = int(exported["training"]["vae_steps"])
        self.meta["init"] = {"dir": str(folder), "git_sha": exported["git_sha"], "training": exported["training"],
                             "dtype": exported["dtype"], "files": exported["files"]}
        log.info("initialised from export %s (git %s: vae %d steps, dit %d steps)", folder, exported["git_sha"],
                 exported["training"]["vae_steps"], exported["training"]["dit_steps"])

    # ------------------------------------------------------------------ logging
    def record(self, stage: str, step: int, lr: float, values: dict[str, float], train_s: float) -> None:
        """Accumulate per-step values; emit one row per `log_every` steps (windows fixed in step space)."""
        log_every = self.cfg.log_every
        run = self.meta["running"].setdefault(stage, {})
        for k, v in values.items():
            run[k] = run.get(k, 0.0) + float(v)
        run["n"] = run.get("n", 0) + 1
        if (step + 1) % log_every == 0:
            n = run.pop("n")
            row = {"stage": stage, "step": step + 1, "lr": f"{lr:.6g}", "train_s": f"{train_s:.1f}"}
            row |= {k: f"{run[k] / n:.6g}" for k in ("loss", "l1", "kl") if k in run}
            self.rows.append(row)
            self.meta["running"][stage] = {}
            log.info("%s step %d loss %s lr %s (%.0f s)", stage, step + 1, row["loss"], row["lr"], train_s)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cosine_lr(step: int, base: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def wsd_lr(step: int, base: float, warmup: int, total: int, decay_steps: int, min_ratio: float) -> float:
    """Warmup-stable-decay: constant after warmup, linear decay over the last `decay_steps` (a later chunk may
    extend `total` without changing the steps already taken)."""
    if step < warmup:
        return base * (step + 1) / warmup
    start = total - decay_steps
    if step < start:
        return base
    return base * (1.0 - (1.0 - min_ratio) * (step - start) / max(1, decay_steps))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------------------------------- stages
def train_vae(tr: Trainer, deadline: float, out_dir: Path, spec: ClipSpec) -> None:
    cfg, device = tr.cfg, tr.device
    tr.vae.train().requires_grad_(True)
    autoencoder = tr.vae.autoencoder
    num_frames = pixel_frames(cfg.vae.latent_frames)
    last_ckpt = time.time()
    stage_start, steps_at_start = time.time(), tr.meta["vae_step"]
    while tr.meta["vae_step"] < tr.vae_total() and time.time() < deadline and tr.budget_left():
        step = tr.meta["vae_step"]
        if cfg.vae.budget_s and "vae_total" not in tr.meta and step >= cfg.vae.warmup:
            # Fix the cosine horizon from the measured rate, before the decay starts (recorded: a rerun with
            # vae.steps=<vae_total> vae.budget_s=null takes the same steps).
            rate = max(1e-6, (time.time() - stage_start) / max(1, step - steps_at_start))
            tr.meta["vae_total"] = int(min(cfg.vae.steps, step + (cfg.vae.budget_s - (time.time() - stage_start)) / rate))
            log.info("vae: %.3f s/step -> %d steps in total", rate, tr.meta["vae_total"])
        start = time.time()
        _, pixels = render_clips(cfg.seed, step, batch_size=cfg.vae.batch_size, num_frames=num_frames, spec=spec,
                                 device=device)
        lr = cosine_lr(step, cfg.vae.lr, cfg.vae.warmup, tr.vae_total())
        set_lr(tr.vae_opt, lr)
        with autocast(device):
            loss, parts = vae_loss(autoencoder, pixels, kl_weight=cfg.vae.kl_weight, object_weight=cfg.vae.object_weight,
                                   generator=step_generator(cfg.seed, step, stream=2, device=device),
                                   sample_posterior=cfg.vae.sample_posterior)
        tr.vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.vae.parameters(), cfg.vae.grad_clip)
        tr.vae_opt.step()
        tr.steps_this_chunk += 1
        tr.meta["vae_step"] = step + 1
        tr.meta["train_s"]["vae"] += time.time() - start
        tr.record("vae", step, lr, {"loss": float(loss.detach()), **parts}, tr.meta["train_s"]["vae"])
        if time.time() - last_ckpt > cfg.ckpt_every_s:
            tr.save(out_dir)
            last_ckpt = time.time()
    if tr.meta["vae_step"] >= tr.vae_total() and tr.meta["latents_mean"] is None:
        tr.vae.eval()
        _, pixels = render_clips(cfg.seed + 7, 0, batch_size=cfg.vae.stats_batch,
                                 num_frames=pixel_frames(cfg.dit.window_latent_frames), spec=spec, device=device)
        with autocast(device):
            mean, std = latent_statistics(tr.vae.autoencoder, pixels)
        tr.meta["latents_mean"], tr.meta["latents_std"] = mean, std
        tr.vae.config["latents_mean"], tr.vae.config["latents_std"] = list(mean), list(std)
        log.info("latent stats: mean %s std %s", [round(m, 3) for m in mean], [round(s, 3) for s in std])
        if cfg.vae.eval_prompts:
            tr.meta["vae_eval"] = vae_reconstruction_scores(tr, spec, cfg.vae.eval_prompts)
            log.info("vae reconstruction (%d held-out prompts): %s", cfg.vae.eval_prompts,
                     {k: round(v, 3) for k, v in tr.meta["vae_eval"].items()})


@torch.no_grad()
def build_pool(tr: Trainer, pool_index: int, spec: ClipSpec) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """`pool_size` rendered clips, VAE-encoded to normalised latents `[P, F, C, h, w]`, with their object coverage
    `[P, F, h, w]` (`object_coverage`, for `dit.object_weight`) and prompts (deterministic per index)."""
    cfg, device = tr.cfg, tr.device
    tr.vae.eval()
    chunk = min(64, cfg.dit.pool_size)
    latents, coverage, prompts = [], [], []
    for i in range(math.ceil(cfg.dit.pool_size / chunk)):
        batch_prompts, pixels = render_clips(cfg.seed + 1, pool_index * 100_000 + i, batch_size=chunk,
                                             num_frames=pixel_frames(cfg.dit.window_latent_frames), spec=spec,
                                             device=device)
        with autocast(device):
            latents.append(tr.vae.encode(pixels, full_sequence=True).float())  # [chunk, F, C, h, w]
        coverage.append(object_coverage(pixels, temporal_stride=tr.vae.temporal_factor,
                                        spatial_stride=tr.vae.spatial_factor).half())  # [chunk, F, h, w]
        prompts += batch_prompts
    size = cfg.dit.pool_size
    return torch.cat(latents)[:size], torch.cat(coverage)[:size], prompts[:size]


def train_dit(tr: Trainer, deadline: float, out_dir: Path, spec: ClipSpec) -> None:
    cfg, device = tr.cfg, tr.device
    tr.model.train().requires_grad_(True)
    tr.text_encoder.train().requires_grad_(True)
    tr.vae.requires_grad_(False)
    window = cfg.dit.window_latent_frames
    latent_hw = (spec.height // tr.vae.spatial_factor, spec.width // tr.vae.spatial_factor)
    tokens = tr.model.tokens_per_frame(*latent_hw)
    mask = teacher_forcing_mask(window, tokens, cfg.sampler.block_frames, device=device)
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    sampler_t = sorted({t for shift in cfg.dit.discrete_shifts for t in sampler_timesteps_of(sampler | {"shift": shift})})
    pool, pool_coverage, pool_prompts, pool_index = None, None, [], -1
    last_ckpt = time.time()
    stage_start, steps_at_start = time.time(), tr.meta["dit_step"]
    pool_s, last_pool_s = 0.0, 0.0
    compiled = set_compiled(tr.model, bool(cfg.dit.compile))
    while tr.meta["dit_step"] < tr.dit_total() and time.time() < deadline and tr.budget_left():
        step = tr.meta["dit_step"]
        done = step - steps_at_start
        if done == 3:  # the rate is measured from here: the first steps carry compilation and allocator warm-up
            stage_start, pool_s = time.time(), 0.0
        if cfg.dit.auto_steps and "dit_total" not in tr.meta and done >= 23 and (
                time.time() - stage_start > 45 or step >= cfg.dit.warmup):
            # Fit the run to this chunk's deadline (+ later_chunks_s of DiT training in the chunks that resume it):
            # total steps from the measured rate, the last decay_frac of them
            # decaying (recorded: a rerun with dit.steps=<dit_total> dit.decay_steps=<dit_decay_steps>
            # dit.auto_steps=false takes the same steps, since the lr before the decay does not depend on them).
            # per step: the optimizer steps so far (pool builds excluded) + the amortized cost of a pool build
            rate = max(1e-6, (time.time() - stage_start - pool_s) / (done - 3) + last_pool_s / cfg.dit.pool_steps)
            seconds = deadline - time.time() + cfg.dit.later_chunks_s  # this chunk's rest + the chunks planned after it
            total = int(step + 0.85 * seconds / rate)  # margin: pool builds slow down
            tr.meta["dit_total"] = min(cfg.dit.steps, total)
            tr.meta["dit_decay_steps"] = int(cfg.dit.decay_frac * tr.meta["dit_total"])
            log.info("dit: %.3f s/step -> %d steps in total, the last %d decaying", rate, tr.meta["dit_total"],
                     tr.meta["dit_decay_steps"])
        start = time.time()
        if step // cfg.dit.pool_steps != pool_index:
            pool_index = step // cfg.dit.pool_steps
            pool_start = time.time()
            pool, pool_coverage, pool_prompts = build_pool(tr, pool_index, spec)
            last_pool_s = time.time() - pool_start
            pool_s += last_pool_s
            log.info("dit: pool %d built in %.1f s", pool_index, last_pool_s)
        lr = wsd_lr(step, cfg.dit.lr, cfg.dit.warmup, tr.dit_total(), tr.meta.get("dit_decay_steps", cfg.dit.decay_steps),
                    cfg.dit.min_lr_ratio)
        set_lr(tr.dit_opt, lr)

        def forward_backward() -> torch.Tensor:
            g = step_generator(cfg.seed, step, stream=3)
            g_noise = step_generator(cfg.seed, step, stream=4, device=device)
            idx = torch.randint(len(pool_prompts), (cfg.dit.batch_size,), generator=g)
            latents, coverage = pool[idx.to(device)], pool_coverage[idx.to(device)]
            prompts = drop_prompts([pool_prompts[i] for i in idx.tolist()], cfg.dit.text_dropout, g)
            with autocast(device):
                loss = dit_loss(tr.model, tr.text_encoder, latents, prompts, mask,
                                block_frames=cfg.sampler.block_frames, sampler_timesteps=sampler_t,
                                discrete_prob=cfg.dit.discrete_prob, train_shift=cfg.dit.train_shift,
                                context_corruption=cfg.dit.context_corruption, generator=g, noise_generator=g_noise,
                                coverage=coverage, object_weight=cfg.dit.object_weight)
            tr.dit_opt.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        try:
            loss = forward_backward()
        except Exception as exc:  # torch.compile unusable on this machine: the same step again, eager
            if not compiled:
                raise
            log.warning("dit.compile failed (%s: %s); continuing eager", type(exc).__name__, str(exc).splitlines()[0])
            compiled = set_compiled(tr.model, False)
            loss = forward_backward()
        torch.nn.utils.clip_grad_norm_(tr.dit_params, cfg.dit.grad_clip)
        tr.dit_opt.step()
        tr.steps_this_chunk += 1
        tr.meta["dit_step"] = step + 1
        tr.meta["train_s"]["dit"] += time.time() - start
        tr.record("dit", step, lr, {"loss": float(loss.detach())}, tr.meta["train_s"]["dit"])
        if time.time() - last_ckpt > cfg.ckpt_every_s:
            tr.save(out_dir)
            last_ckpt = time.time()
    tr.meta.setdefault("dit_compiled", []).append(compiled)
    set_compiled(tr.model, False)  # eval / export run eager (the sampler's cached calls change shape every block)


def set_compiled(model: CausalWanModel, enabled: bool) -> bool:
    """Compile the fixed-shape regions of every block (`WanSpeedConfig.compile_blocks`: identical blocks share one
    graph; the masked attention between them stays eager), or undo it. Returns whether they are now compiled."""
    model.set_speed(WanSpeedConfig(compile_blocks=enabled))
    return enabled


def mean_scores(videos: torch.Tensor, prompts: list[str], fps: float) -> dict[str, float]:
    """Whole-video TinyWorld scores of decoded videos `[B, T, 3, H, W]` in [-1, 1], averaged over the batch."""
    sums: dict[str, list[float]] = {}
    for b, prompt in enumerate(prompts):
        for row in score_video(to_uint8_frames(videos[b]), prompt, fps):
            if row["clip"] == -1:
                sums.setdefault(row["dimension"], []).append(row["score"])
    return {k: sum(v) / len(v) for k, v in sums.items()}


@torch.no_grad()
def vae_reconstruction_scores(tr: Trainer, spec: ClipSpec, num_prompts: int) -> dict[str, float]:
    """TinyWorld scores of VAE reconstructions of held-out prompts rendered over the training window (the ceiling
    of what the DiT can reach through this VAE)."""
    cfg, device = tr.cfg, tr.device
    prompts = prompt_set(split="heldout", count=num_prompts, seed=cfg.eval.prompt_seed)
    truth = render([parse(p) for p in prompts], num_frames=pixel_frames(cfg.dit.window_latent_frames),
                   height=spec.height, width=spec.width, fps=spec.fps, seed=cfg.eval.seed,
                   device=device) * 2.0 - 1.0  # [B, T, 3, H, W]
    was_training = tr.vae.training
    tr.vae.eval()
    with autocast(device):
        recon = tr.vae.decode(tr.vae.encode(truth)).float()
    tr.vae.train(was_training)
    return mean_scores(recon, prompts, spec.fps)


def evaluate(tr: Trainer, spec: ClipSpec) -> dict:
    """Held-out prompts: count/colour (and the other TinyWorld dimensions) in-window per sampler shift, and the
    metric drop of long rollouts (long_factor x window, rolling cache with sink) between the first window and the end."""
    cfg, device = tr.cfg, tr.device
    window = cfg.dit.window_latent_frames
    latent_shape = (tr.vae.config["z_dim"], spec.height // tr.vae.spatial_factor, spec.width // tr.vae.spatial_factor)
    prompts = prompt_set(split="heldout", count=cfg.eval.num_prompts, seed=cfg.eval.prompt_seed)
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    result: dict = {"dit_step": tr.meta["dit_step"], "in_window": {}, "long": {}}
    tr.vae.eval()
    # Upper bounds: the renderer itself and its VAE reconstruction, scored on the same held-out prompts.
    scenes = [parse(p) for p in prompts]
    truth = render(scenes, num_frames=pixel_frames(window), height=spec.height, width=spec.width, fps=spec.fps,
                   seed=cfg.eval.seed, device=device) * 2.0 - 1.0  # [B, T, 3, H, W]
    with torch.no_grad():
        recon = tr.vae.decode(tr.vae.encode(truth))
    for name, video in (("ground_truth", truth), ("vae_reconstruction", recon)):
        result[name] = mean_scores(video, prompts, spec.fps)
        log.info("eval %s: %s", name, {k: round(v, 3) for k, v in result[name].items()})
    settings = [(float(shift), float(sampler["guidance_scale"]), str(shift)) for shift in cfg.eval.shifts]
    settings += [(float(shift), float(scale), f"{shift}@cfg{scale}") for shift in cfg.eval.shifts
                 for scale in cfg.eval.guidance_scales]
    for shift, scale, key in settings:
        start = time.time()
        latents = generate_latents(tr.model, tr.text_encoder, prompts, num_latent_frames=window,
                                   sampler=sampler | {"shift": shift, "guidance_scale": scale}, seed=cfg.eval.seed,
                                   latent_shape=latent_shape, device=device)
        pixels = tr.vae.decode(latents)  # [B, T, 3, H, W]
        result["in_window"][key] = mean_scores(pixels, prompts, spec.fps)
        log.info("eval in-window %s (%d prompts, %.0f s): %s", key, len(prompts), time.time() - start,
                 {k: round(v, 3) for k, v in result["in_window"][key].items()})
    long_frames = window * cfg.eval.long_factor
    long_prompts = prompts[: cfg.eval.long_prompts]
    latents = generate_latents(tr.model, tr.text_encoder, long_prompts, num_latent_frames=long_frames, sampler=sampler,
                               seed=cfg.eval.seed + 1, latent_shape=latent_shape, device=device)
    pixels = tr.vae.decode(latents)
    window_px = pixel_frames(window)
    per_clip: dict[str, dict[str, list[float]]] = {"first_window": {}, "last_window": {}}
    for b, prompt in enumerate(long_prompts):
        rows = [r for r in score_video(to_uint8_frames(pixels[b]), prompt, spec.fps) if r["clip"] >= 0]
        for r in rows:
            where = "first_window" if r["end_frame"] <= window_px else (
                "last_window" if r["start_frame"] >= pixels.shape[1] - window_px else None)
            if where:
                per_clip[where].setdefault(r["dimension"], []).append(r["score"])
    result["long"] = {w: {k: sum(v) / len(v) for k, v in d.items()} for w, d in per_clip.items()}
    result["long"]["latent_frames"] = long_frames
    log.info("eval long (%d latent frames): first window %s | last window %s", long_frames,
             {k: round(v, 3) for k, v in result["long"]["first_window"].items()},
             {k: round(v, 3) for k, v in result["long"]["last_window"].items()})
    tr.model.train().requires_grad_(True)
    return result


def export(tr: Trainer, export_dir: Path, dtype: torch.dtype) -> None:
    """Shipped weights: dit / text_encoder / vae safetensors in `dtype` + config.json (+ sha256 of each file)."""
    cfg = tr.cfg
    if tr.meta["latents_mean"] is None or tr.meta["dit_step"] == 0:
        raise ValueError(f"nothing to export: vae_step={tr.meta['vae_step']}, dit_step={tr.meta['dit_step']}")
    files = {
        "dit.safetensors": tr.model.state_dict(),
        "text_encoder.safetensors": tr.text_encoder.state_dict(),
        "vae.safetensors": tr.vae.autoencoder.state_dict(),
    }
    digests = {}
    for name, sd in files.items():
        path = export_dir / name
        atomic_save_safetensors({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, path)
        digests[name] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    spec = cfg.clip
    config = {
        "format": "tokentrim-tinyworld-v1",
        "git_sha": str(cfg.git_sha),
        "code_sha256": code_digest([REPO / p for p in CODE_FILES]),
        "code_files": list(CODE_FILES),
        # the recipe's own command if given, else the resolved command of every chunk that trained these weights
        "command": str(cfg.command) or " && ".join(chunk["command"] for chunk in tr.meta["chunks"]),
        "video": {"height": spec.height, "width": spec.width, "fps": spec.fps},
        "train_window_latent_frames": cfg.dit.window_latent_frames,
        "dit": OmegaConf.to_container(cfg.dit.model, resolve=True),
        "text_encoder": OmegaConf.to_container(cfg.text_encoder, resolve=True),
        "vae": dict(tr.vae.config),
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "training": {"vae_steps": tr.meta["vae_step"], "dit_steps": tr.meta["dit_step"],
                     "train_s": tr.meta["train_s"], "chunks": tr.meta["chunks"], "seed": cfg.seed,
                     **({"fine_tuned_from": tr.meta["init"]} if "init" in tr.meta else {})},
        "dtype": str(dtype).replace("torch.", ""),
        "files": digests,
    }
    atomic_write_text(export_dir / "config.json", json.dumps(config, indent=1) + "\n")
    log.info("exported %s", {n: round((export_dir / n).stat().st_size / 1e6, 2) for n in files})
    if cfg.export.results_dir:
        results = Path(cfg.export.results_dir)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(tr.rows)
        atomic_write_text(results / "losses.csv", buf.getvalue())
        plot_losses(tr.rows, results / "loss_curves.png")
        atomic_write_text(results / "training_meta.json", json.dumps(
            {k: tr.meta[k] for k in ("vae_step", "dit_step", "vae_total", "dit_total", "dit_decay_steps", "train_s",
                                     "chunks", "eval", "vae_eval", "latents_mean", "latents_std", "init")
             if k in tr.meta},
            indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- main
@hydra.main(config_path="../src/tokentrim/conf", config_name="train_tinyworld", version_base=None)
def main(cfg: DictConfig) -> None:
    wall0 = time.time()
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = ClipSpec(**OmegaConf.to_container(cfg.clip, resolve=True))
    tr = Trainer(cfg, device)
    if cfg.resume_dir:
        tr.load(Path(cfg.resume_dir))
    elif cfg.init_dir:
        tr.init_from_export(Path(cfg.init_dir))
    stages = list(cfg.stages)
    unknown = set(stages) - {"vae", "dit", "eval", "export"}
    if unknown:
        raise ValueError(f"stages must be a subset of [vae, dit, eval, export], got unknown {sorted(unknown)}")
    if cfg.dit.later_chunks_s < 0:
        raise ValueError(f"dit.later_chunks_s must be >= 0 seconds, got {cfg.dit.later_chunks_s}")
    if cfg.dit.object_weight < 0:
        raise ValueError(f"dit.object_weight must be >= 0, got {cfg.dit.object_weight}")
    if not 0 <= cfg.dit.text_dropout < 1:
        raise ValueError(f"dit.text_dropout must be in [0, 1), got {cfg.dit.text_dropout}")
    eval_reserve = 60.0 if "eval" in stages else 0.0
    deadline = wall0 + cfg.max_seconds - eval_reserve
    log.info("device %s; dit params %.2fM, text %.2fM, vae %.2fM", device,
             sum(p.numel() for p in tr.model.parameters()) / 1e6,
             sum(p.numel() for p in tr.text_encoder.parameters()) / 1e6,
             sum(p.numel() for p in tr.vae.parameters()) / 1e6)
    trained = False
    chunk = {"start": {"vae": tr.meta["vae_step"], "dit": tr.meta["dit_step"]}, "device": str(device)}
    if device.type == "cuda":
        chunk["device_name"] = torch.cuda.get_device_name()
    if "vae" in stages and (tr.meta["vae_step"] < tr.vae_total() or tr.meta["latents_mean"] is None):
        train_vae(tr, deadline, out_dir, spec)
        trained = True
    if "dit" in stages and tr.meta["latents_mean"] is not None and tr.meta["dit_step"] < tr.dit_total():
        train_dit(tr, deadline, out_dir, spec)
        trained = True
    if trained:
        chunk["end"] = {"vae": tr.meta["vae_step"], "dit": tr.meta["dit_step"]}
        chunk["wall_s"] = round(time.time() - wall0, 1)
        chunk["command"] = " ".join(sys.argv)
        tr.meta["chunks"].append(chunk)
        tr.save(out_dir)
    if "eval" in stages and tr.meta["dit_step"] > 0:
        result = evaluate(tr, spec)
        tr.meta["eval"][str(tr.meta["dit_step"])] = result
        if cfg.eval.get("out"):
            atomic_write_text(Path(cfg.eval.out), json.dumps(result, indent=1) + "\n")
        if trained:
            atomic_write_text(out_dir / "meta.json", json.dumps(tr.meta, indent=1))
    if "export" in stages:
        export(tr, Path(cfg.export.dir), getattr(torch, cfg.export.dtype))
    log.info("done in %.0f s", time.time() - wall0)


if __name__ == "__main__":
    main()
