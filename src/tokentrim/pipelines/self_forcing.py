"""Self Forcing's chunk-wise rollout (arXiv 2506.08009) with TokenTrim between "denoised" and "committed".

Per block of F latent frames (3 by default), starting at absolute latent frame s:
  1. few-step denoising against the cached clean context: for each warped timestep t_i, x0 = x_t - sigma_i v(x_t);
     between steps x_{t_{i+1}} = (1 - sigma_{i+1}) x0 + sigma_{i+1} eps, fresh eps each step (renoise_eta = 1,
     Self Forcing's sampler), or the model's own noise estimate eps_hat = x_t + (1 - sigma_i) v (renoise_eta = 0:
     the Euler step of the flow ODE), or a variance-preserving mix of the two; output = last x0;
  2. TokenTrim (`tokentrim.trim.controller`) decides on the block's x0, or on the first step's x0 (`trim.drift_source`,
     `pipelines/drift_source.py`): accept, or prune S_t from the cache and regenerate the block (same noise by
     default), at most R times; `SelfForcingBlock` is the controller's handle on the block;
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
from tokentrim.pipelines.drift_source import StepState, drift_source_for
from tokentrim.pipelines.sampling import add_noise, denoising_step_list, flow_to_x0, sigma_of, warped_timesteps
from tokentrim.trim import TokenTrim
from tokentrim.trim.controller import EventSink, TrimController

logger = logging.getLogger(__name__)

NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]


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
        trim: a `TokenTrim` decider, run by a `tokentrim.trim.controller.TrimController`; None = no drift
            bookkeeping at all.
        flowmo: a `tokentrim.init.flowmo.FlowMoConfig` or None.
    """

    def __init__(self, model: CausalWanModel, config: SelfForcingConfig, trim: TokenTrim | None = None, flowmo=None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.trim = trim  # sets the controller and the drift source
        self.flowmo = flowmo if (flowmo is not None and flowmo.enabled and flowmo.steps > 0) else None
        self.timesteps = warped_timesteps(list(config.denoising_steps), config.shift, config.warp_denoising_step)
        self.sigmas = [sigma_of(t, config.shift) for t in self.timesteps]

    @property
    def trim(self) -> TokenTrim | None:
        return None if self.controller is None else self.controller.trim

    @trim.setter
    def trim(self, trim: TokenTrim | None) -> None:
        """The decider, its controller and its drift source (None: plain Self Forcing, e.g. for an untimed warm-up)."""
        self.controller = TrimController(trim) if trim is not None else None
        self.drift_source = drift_source_for(trim.cfg.drift_source if trim is not None else "final")

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
            on_event: receives one dict per block (`tokentrim.trim.controller.batch_event`).
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
        if self.controller is not None:
            self.controller.reset()
        output = torch.zeros_like(noise)
        num_blocks = num_frames // cfg.block_frames
        for index in range(num_blocks):
            start = index * cfg.block_frames
            block = SelfForcingBlock(self, noise[:, start : start + cfg.block_frames], context_kv, cache, start,
                                     index == 0, noise_source)
            # 1. Denoise the block (up to the drift source's test point while a trigger could still redo it)
            state = block.sample(may_redo=self.controller is not None and self.controller.may_redo(retries=0))
            # 2. TokenTrim: decide; on a trigger prune the cache and regenerate the block (at most R times)
            if self.controller is not None:
                state = self.controller.step(block, state, on_event)
            # 3. The accepted x0 (remaining steps run now), then its clean K/V; the last block's would never be read
            x0 = block.finish(state)
            output[:, start : start + cfg.block_frames] = x0
            if index < num_blocks - 1:
                self._commit(x0, context_kv, cache, start)
        return output

    # ------------------------------------------------------------------------------------------ steps
    def _denoise(self, block: SelfForcingBlock, steps: range, state: StepState | None = None) -> StepState:
        """Few-step x0 sampling of one block: denoising steps `steps`, from the block's initial noise (steps.start
        = 0) or from `state`, the block denoised up to step steps.start. Each step: x0 = x_t - sigma_i v(x_t); the
        next step's input re-noises it, x_{t_{i+1}} = (1 - sigma_{i+1}) x0 + sigma_{i+1} eps_i (`_next_noise`)."""
        x, x0, first_x0 = (block.noise, None, None) if state is None else (state.x_t, state.x0, state.first_x0)
        batch_size, num_frames = x.shape[:2]
        block.cache.begin_block(block.start_frame, num_frames * block.cache.tokens_per_frame)
        for i in steps:
            if i > 0:  # re-noise the previous step's x0 to this step's level
                x = add_noise(x0, self._next_noise(block.renoise[i - 1], x, x0, self.sigmas[i - 1]), self.sigmas[i])
            t, sigma = self.timesteps[i], self.sigmas[i]
            t_frames = torch.full((batch_size, num_frames), t, device=x.device, dtype=torch.float32)  # [B, F]
            flow = self._flow(x, t_frames, block.context_kv, block.start_frame, block.cache)
            if block.is_first and self.flowmo is not None and i < self.flowmo.steps:
                x, flow = self._flowmo_step(x, flow, t_frames, sigma, block.context_kv, block.cache, block.start_frame)
            x0 = flow_to_x0(flow, x, sigma)
            if i == 0:
                first_x0 = x0
        return StepState(steps.stop, x, x0, first_x0)

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


@dataclass
class SelfForcingBlock:
    """One block of F latent frames being generated: what it is denoised from and against. Also the block's
    `tokentrim.trim.controller.TrimBatch` (the controller's handle to test, prune for and regenerate it).

    Args:
        pipe: the pipeline (its sampler steps and drift source).
        noise: `[B, F, C, H, W]` the block's initial noise.
        context_kv, cache: the prompt's cross-attention K/V and the video's KV cache.
        start_frame: absolute latent frame of the block's first frame.
        is_first: the video's first block (FlowMo guides it).
        noise_source: draws re-noising and fresh retry noise.
    """

    pipe: SelfForcingPipeline
    noise: torch.Tensor
    context_kv: list
    cache: KVCache
    start_frame: int
    is_first: bool
    noise_source: NoiseSource

    def __post_init__(self) -> None:
        self.renoise = self._draw_renoise()  # K-1 x [B, F, C, H, W]: eps_i re-noising step i's x0 for step i+1

    @property
    def num_frames(self) -> int:
        return self.noise.shape[1]

    @property
    def grid(self) -> tuple[int, int]:
        _, ph, pw = self.pipe.model.config.patch_size
        return self.noise.shape[-2] // ph, self.noise.shape[-1] // pw

    def sample(self, may_redo: bool) -> StepState:
        """Denoise from the block's noise up to the drift source's test point."""
        steps = self.pipe.drift_source.steps_before_test(len(self.pipe.timesteps), may_redo)
        return self.pipe._denoise(self, range(steps))

    def finish(self, state: StepState) -> torch.Tensor:
        """The block's final x0 [B, F, C, H, W]: a sample stopped before the last step continues where it stopped."""
        num_steps = len(self.pipe.timesteps)
        if state.steps_done < num_steps:
            state = self.pipe._denoise(self, range(state.steps_done, num_steps), state)
        return state.x0

    # ---------------------------------------------------------------- TrimBatch
    def tokens(self, state: StepState) -> torch.Tensor:
        return self.pipe._tokens(self.pipe.drift_source.tested(state))

    def regenerate(self, fresh_noise: bool, may_redo: bool) -> StepState:
        if fresh_noise:  # new initial noise, then new re-noising draws (the draw order of a first sample)
            self.noise = self.noise_source(tuple(self.noise.shape))
            self.renoise = self._draw_renoise()
        return self.sample(may_redo)

    def event_fields(self) -> dict:
        return {}

    def _draw_renoise(self) -> list[torch.Tensor]:
        return [self.noise_source(tuple(self.noise.shape)) for _ in self.pipe.timesteps[1:]]
