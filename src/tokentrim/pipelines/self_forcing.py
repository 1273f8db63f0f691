"""Self Forcing's chunk-wise rollout (arXiv 2506.08009) with TokenTrim between "denoised" and "committed".

Per block of F latent frames (3 by default), starting at absolute latent frame s:
  1. few-step denoising against the cached clean context: for each warped timestep t_i, x0 = x_t - sigma_i v(x_t);
     between steps x_{t_{i+1}} = (1 - sigma_{i+1}) x0 + sigma_{i+1} eps, fresh eps each step (renoise_eta = 1,
     Self Forcing's sampler), or the model's own noise estimate eps_hat = x_t + (1 - sigma_i) v (renoise_eta = 0:
     the Euler step of the flow ODE), or a variance-preserving mix of the two; output = last x0;
  2. TokenTrim decides on the block's x0 (or on the first step's x0): accept, or prune S_t from the cache and
     regenerate the block (same noise by default), at most R times;
  3. commit: one more forward of the clean x0 at the context noise level (t = 0) writes the block's K/V.
The first block can be motion-stabilised by FlowMo (arXiv 2506.01144) on its first denoising step(s).

Long videos roll the cache: at most `max_frames` latent frames are attended (the block included), the first
`sink_frames` frames are never evicted (Self Forcing's `local_attn_size` / `sink_size`).

Letters: B batch, T latent frames of the video, F frames per block, C, H, W latent channels/height/width,
N tokens per frame, c = 4C channels per token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tokentrim.caches.kv import KVCache
from tokentrim.models.wan_causal import CausalWanModel, patchify_tokens
from tokentrim.pipelines.sampling import add_noise, denoising_step_list, flow_to_x0, sigma_of, warped_timesteps
from tokentrim.trim import Decision, TokenTrim

logger = logging.getLogger(__name__)

NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]
EventSink = Callable[[dict], None]


@dataclass
class SelfForcingConfig:
    """Sampler knobs (`conf/backbone/*.yaml: sampler`). Defaults: `self_forcing_dmd.yaml` of the official release.

    Args:
        denoising_steps: step list before warping.
        warp_denoising_step: map the list through the shift-warped schedule.
        shift: flow schedule shift.
        block_frames: latent frames per block (F).
        context_noise: timestep of the cache-writing pass.
        max_frames: latent frames attended at most, the block included (21 = the released 81-frame window).
        sink_frames: first latent frames never evicted (0 = plain sliding window).
        renoise_eta: the noise that re-noises x0 between steps: eta * fresh + sqrt(1 - eta^2) * eps_hat, with
            eps_hat = x_t + (1 - sigma) v the model's estimate of x_t's noise. 1 = fresh noise (Self Forcing's
            few-step sampler, what its distilled checkpoints expect); 0 = deterministic Euler steps of the flow ODE.
        guidance_scale: classifier-free guidance, v = v_uncond + scale (v_cond - v_uncond); 1 = off (the released
            Self Forcing / Rolling Forcing models are distilled without it). Otherwise `context_kv` holds the
            prompts' rows followed by as many unconditional rows, and each model call runs both as one batch, with
            one cache holding both branches (TinyWorld's generator, trained with prompt dropout).
    """

    denoising_steps: tuple[float, ...] = (1000, 750, 500, 250)
    warp_denoising_step: bool = True
    shift: float = 5.0
    block_frames: int = 3
    context_noise: float = 0.0
    max_frames: int = 21
    sink_frames: int = 0
    renoise_eta: float = 1.0
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        self.denoising_steps = denoising_step_list(self.denoising_steps, self.warp_denoising_step)
        if self.block_frames < 1:
            raise ValueError(f"sampler.block_frames must be >= 1, got {self.block_frames}")
        if self.max_frames < self.block_frames:
            raise ValueError(f"sampler.max_frames must be >= block_frames={self.block_frames}, got {self.max_frames}")
        if not 0 <= self.sink_frames <= self.max_frames - self.block_frames:
            raise ValueError(
                f"sampler.sink_frames must be in [0, max_frames - block_frames] = [0, {self.max_frames - self.block_frames}], got {self.sink_frames}"
            )
        if not 0 <= self.renoise_eta <= 1:
            raise ValueError(f"sampler.renoise_eta must be in [0, 1] (1 = fresh noise each step), got {self.renoise_eta}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"sampler.guidance_scale must be >= 0 (1 = no guidance), got {self.guidance_scale}")

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0


class SelfForcingPipeline:
    """Chunk-wise autoregressive sampler over a `CausalWanModel`.

    Args:
        model: the causal DiT (frozen; put in eval mode and `requires_grad_(False)` here).
        config: `SelfForcingConfig`.
        trim: a `TokenTrim` decider; None = no drift bookkeeping at all.
        flowmo: a `tokentrim.init.flowmo.FlowMoConfig` or None.
    """

    def __init__(self, model: CausalWanModel, config: SelfForcingConfig, trim: TokenTrim | None = None, flowmo=None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.trim = trim
        self.flowmo = flowmo if (flowmo is not None and flowmo.enabled and flowmo.steps > 0) else None
        self.timesteps = warped_timesteps(list(config.denoising_steps), config.shift, config.warp_denoising_step)
        self.sigmas = [sigma_of(t, config.shift) for t in self.timesteps]

    # ------------------------------------------------------------------------------------------ public
    @torch.no_grad()
    def __call__(
        self,
        noise: torch.Tensor,
        context_kv: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        noise_source: NoiseSource,
        on_event: EventSink | None = None,
    ) -> torch.Tensor:
        """Generate a video's latents.

        Args:
            noise: `[B, T, C, H, W]` initial noise; T a multiple of F.
            context_kv: `model.encode_context(text_embeds)`.
            noise_source: draws the per-step re-noising noise (and fresh retry noise), `shape -> Tensor`;
                seeded by the caller, e.g. `lambda s: torch.randn(s, generator=g, device=..., dtype=...)`.
            on_event: receives one dict per block (see `_event`).
        Returns:
            latents `[B, T, C, H, W]`: the accepted x0 of every block.
        """
        batch_size, num_frames, _, height, width = noise.shape
        cfg = self.config
        if num_frames % cfg.block_frames:
            raise ValueError(f"num latent frames must be a multiple of block_frames={cfg.block_frames}, got {num_frames}")
        if self.trim is not None and batch_size != 1:
            raise ValueError(f"TokenTrim decides per video: batch size must be 1, got {batch_size}")
        branches = 2 if cfg.guided else 1  # guided: conditional rows, then unconditional rows, in one batch
        if context_kv[0][0].shape[0] != branches * batch_size:
            raise ValueError(f"context_kv has {context_kv[0][0].shape[0]} rows; {batch_size} video(s) at "
                             f"guidance_scale={cfg.guidance_scale} need {branches * batch_size} (prompts"
                             f"{', then unconditional rows' if cfg.guided else ''})")
        cache = self.model.new_cache(
            height=height, width=width, max_frames=cfg.max_frames, block_frames=cfg.block_frames,
            sink_frames=cfg.sink_frames, batch_size=branches * batch_size,
        )
        if self.trim is not None:
            self.trim.reset()
        output = torch.zeros_like(noise)
        num_blocks = num_frames // cfg.block_frames
        for block in range(num_blocks):
            start = block * cfg.block_frames
            block_noise = noise[:, start : start + cfg.block_frames]
            x0 = self._generate_block(block_noise, context_kv, cache, start, block == 0, noise_source, on_event)
            output[:, start : start + cfg.block_frames] = x0
            if block < num_blocks - 1:  # the last block's K/V would never be read
                self._commit(x0, context_kv, cache, start)
        return output

    # ------------------------------------------------------------------------------------------ steps
    def _generate_block(
        self,
        block_noise: torch.Tensor,
        context_kv: list,
        cache: KVCache,
        start: int,
        is_first_block: bool,
        noise_source: NoiseSource,
        on_event: EventSink | None,
    ) -> torch.Tensor:
        """Denoise one block, let TokenTrim decide, regenerate on a trigger. Returns the accepted x0 [B, F, C, H, W]."""
        cfg_trim = self.trim.cfg if self.trim is not None else None
        shape = tuple(block_noise.shape)
        renoise = [noise_source(shape) for _ in self.timesteps[1:]]
        first_step_only = cfg_trim is not None and cfg_trim.drift_source == "first_step"
        x0, first_step = self._denoise(block_noise, renoise, context_kv, cache, start, is_first_block, first_step_only)
        if self.trim is None:
            return x0

        decision = self.trim.decide(self._tokens(first_step[0] if first_step_only else x0))
        first = decision
        retries, num_pruned, pruned = 0, 0, []
        while decision.should_prune and retries < cfg_trim.max_retries:
            cache.discard_staged()
            num_pruned += cache.prune(decision.unstable, frames=self._prune_frames(cache, start))
            pruned.append(decision.unstable)
            retries += 1
            if cfg_trim.regen_noise == "fresh":
                block_noise = noise_source(shape)
                renoise = [noise_source(shape) for _ in self.timesteps[1:]]
            # with first-step tests, a regeneration that may be re-tested and retried stops after step 1 too
            may_retry = first_step_only and cfg_trim.retest and retries < cfg_trim.max_retries
            x0, first_step = self._denoise(block_noise, renoise, context_kv, cache, start, is_first_block, may_retry)
            decision = self.trim.retest(self._tokens(first_step[0] if first_step_only else x0))
            if not cfg_trim.retest:
                break
        if first_step_only and x0 is None:  # accepted on the first step: finish the remaining steps (no redo of step 1)
            x0, _ = self._denoise(block_noise, renoise, context_kv, cache, start, is_first_block, False,
                                  resume=first_step)
        self.trim.accept(decision)
        if on_event is not None:
            on_event(self._event(first, decision, retries, num_pruned, pruned, start, block_noise.shape[-2:]))
        return x0

    def _denoise(self, x, renoise, context_kv, cache, start, is_first_block, first_step_only, resume=None):
        """Few-step x0 sampling of one block. Returns (final x0 or None if stopped after step 1, first step), the
        first step being (its x0, the x_t it denoised) [B, F, C, H, W] each.

        `resume`: the first step of a call stopped after step 1; sampling resumes at step 2 from it.
        """
        batch_size, num_frames = x.shape[:2]
        cache.begin_block(start, num_frames * cache.tokens_per_frame)
        x0, first_step, first_index = None, resume, 0
        if resume is not None:
            first_index = 1
            if len(self.timesteps) > 1:
                noise = self._next_noise(renoise[0], resume[1], resume[0], self.sigmas[0])
                x = add_noise(resume[0], noise, self.sigmas[1])
        for i in range(first_index, len(self.timesteps)):
            t, sigma = self.timesteps[i], self.sigmas[i]
            t_frames = torch.full((batch_size, num_frames), t, device=x.device, dtype=torch.float32)  # [B, F]
            flow = self._flow(x, t_frames, context_kv, start, cache)
            if is_first_block and self.flowmo is not None and i < self.flowmo.steps:
                x, flow = self._flowmo_step(x, flow, t_frames, sigma, context_kv, cache, start)
            x0 = flow_to_x0(flow, x, sigma)
            if i == 0:
                first_step = (x0, x)
                if first_step_only:
                    return None, first_step
            if i < len(self.timesteps) - 1:
                x = add_noise(x0, self._next_noise(renoise[i], x, x0, sigma), self.sigmas[i + 1])
        return x0, first_step

    def _next_noise(self, fresh: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, sigma: float) -> torch.Tensor:
        """The noise that re-noises x0 for the next step: fresh (eta = 1), the model's estimate of x_t's noise
        eps_hat = (x_t - (1 - sigma) x0) / sigma (eta = 0: an Euler step of the flow ODE), or eta * fresh +
        sqrt(1 - eta^2) * eps_hat."""
        eta = self.config.renoise_eta
        if eta == 1.0:
            return fresh
        eps_hat = (x_t - (1 - sigma) * x0) / sigma  # sigma > 0 before the last step
        return eps_hat if eta == 0.0 else eta * fresh + math.sqrt(1 - eta * eta) * eps_hat

    def _flowmo_step(self, x, flow, t_frames, sigma, context_kv, cache, start):
        """FlowMo on the first block: move x_t by one guided step; the cache is empty, so the guided forward
        runs without it (same attention: the block only sees itself)."""
        from tokentrim.init.flowmo import flowmo_guide

        if cache.length != 0:
            raise RuntimeError("FlowMo guidance expects an empty cache (first block)")

        def predict(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            v = self._flow(z, t_frames, context_kv, start, None)
            return v, flow_to_x0(v, z, sigma)

        with torch.enable_grad():
            x_new, info = flowmo_guide(x, predict, cfg=self.flowmo)
        logger.debug("FlowMo step: %s", info)
        if self.flowmo.recompute:
            flow = self._flow(x_new, t_frames, context_kv, start, cache)
        return x_new.detach(), flow

    def _flow(self, x, t_frames, context_kv, start, cache) -> torch.Tensor:
        """The model's flow for x [B, F, C, H, W] at t_frames [B, F]; with guidance, both branches in one call
        ([x; x] against [prompt rows; unconditional rows]) combined as v_u + scale (v_c - v_u)."""
        if not self.config.guided:
            return self.model(x, t_frames, context_kv, start_frame=start, cache=cache)
        both = self.model(torch.cat([x, x]), torch.cat([t_frames, t_frames]), context_kv, start_frame=start, cache=cache)
        cond, uncond = both.chunk(2)  # 2 x [B, F, C, H, W]
        return uncond + self.config.guidance_scale * (cond - uncond)

    def _commit(self, x0: torch.Tensor, context_kv: list, cache: KVCache, start: int) -> None:
        """Write the block's clean K/V: one forward of x0 at the context noise level (Self Forcing's cache refresh)."""
        batch_size, num_frames = x0.shape[:2]
        t_frames = torch.full((batch_size, num_frames), self.config.context_noise, device=x0.device, dtype=torch.float32)
        if cache.staged == 0:
            cache.begin_block(start, num_frames * cache.tokens_per_frame)
        if self.config.guided:  # both branches' caches see the same accepted block
            x0, t_frames = torch.cat([x0, x0]), torch.cat([t_frames, t_frames])
        self.model(x0, t_frames, context_kv, start_frame=start, cache=cache, kv_only=True)
        cache.commit()

    # ------------------------------------------------------------------------------------------ helpers
    def _tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """The block on the cache's token grid: [1, F, C, H, W] -> [F, N, 4C]."""
        return patchify_tokens(x0[0], self.model.config.patch_size[1:])

    def _prune_frames(self, cache: KVCache, start: int) -> list[int] | None:
        scope = self.trim.cfg.scope
        if scope == "all_but_sink":
            return None
        if scope == "last_batch":
            return list(range(max(0, start - self.config.block_frames), start))
        return cache.committed_frames()  # "all"

    @staticmethod
    def _event(first: Decision, final: Decision, retries: int, num_pruned: int, pruned: list, start: int, hw) -> dict:
        """The per-batch record written to events/<video>.jsonl (floats already on the host)."""
        height, width = hw
        pruned_idx = torch.cat(pruned).tolist() if pruned else []
        return {
            "t": first.t,
            "start_frame": start,
            "D": first.values["D"],
            "mu": first.values["mu"],
            "sigma": first.values["sigma"],
            "threshold": first.values["threshold"],
            "is_warmup": first.is_warmup,
            "is_tested": first.is_tested,
            "triggered": first.should_prune,
            "retries": retries,
            "D_accepted": final.values["D"],
            "num_pruned": num_pruned,
            "pruned_indices": pruned_idx,
            "decision_ms": first.decision_ms,
            "grid": [height // 2, width // 2],
            "drift": None if first.drift is None else first.drift.tolist(),
        }
