"""Rolling Forcing's rolling-window rollout (Liu et al. 2025, `TencentARC/RollingForcing`) with TokenTrim.

Official reference: `pipeline/rolling_forcing_inference.py::CausalInferencePipeline.inference_rolling_forcing`
(@ a1477d0; line numbers below refer to that file). With K warped steps t_0 = 1000 > ... > t_{K-1} (K = 5:
1000, 952.38, 882.35, 769.23, 555.56) and N blocks of F = 3 latent frames:

  * K + N - 1 windows; window w covers blocks max(0, w-K+1) .. min(N-1, w) (l. 170-180): it grows 1 -> K blocks
    (ramp-up), slides, then shrinks (ramp-down). Block b sits at noise level w - b in window w (t_{w-b}): the oldest
    block is the least noisy, and every window advances each of its blocks by one level (l. 189-231).
  * Input of block b: fresh noise if w == b (the newest block of a ramp-up/full window), else the block's re-noised
    state from the previous window (l. 214-221).
  * One denoising call on the whole window (up to K*F = 15 frames) with per-frame timesteps; x0 = x_t - sigma v per
    frame (l. 234-244). Every block not yet at t_{K-1} is re-noised to its next level with fresh noise (l. 247-270);
    the window's first block leaves the window clean when it was at t_{K-1}: that is its final output.
  * One cache-refresh call on the window's first block's x0 at t = context_noise, which writes only that block
    (l. 273-295). What each call attends to is the cache's business (`tokentrim.caches.rolling.RollingKVCache`).

We run the refresh only where something reads it: when the window's first block leaves the window clean and a later
window follows. Upstream also refreshes block 0 in the K-1 ramp-up windows, but the next window starts at block 0 too,
attends only to frames before its start (none) and refreshes block 0 again; and the last window's refresh has no
reader. Same latents, K fewer forwards per video (5 of 22 calls at 21 latent frames, 5 of 88 at 120).

TokenTrim on Rolling Forcing (our adaptation; the paper gives no code): the "batch" of TokenTrim is the block that
becomes clean at a window step (window w >= K-1, block w-K+1), so batches are consecutive clean blocks and drift is
measured between them. The decision sits between the window's denoising call and its re-noising / refresh. On a
trigger the unstable token positions S_t are removed from the cache (every cached frame except the sink by default,
`trim.scope`), and the window step's denoising call is redone on the same input (`trim.regen_noise = "same"`; "fresh"
redraws the window's newest pure-noise block when the window takes one). Pruned positions stay removed as the cache
rolls. The accepted x0 feeds the re-noising and the refresh, as without TokenTrim. The action is Self Forcing's, run
by `tokentrim.trim.controller.TrimController`; `RollingForcingBatch` is its handle on the window step.

FlowMo (arXiv 2506.01144) guides the denoising calls of the first `init.steps` windows (ramp-up windows, which attend
only to themselves): the guided variable is the whole window's noisy input, and the loss is taken over the window's
x0 (or flow) prediction. With the default `steps = 1` this is window 0: block 0 alone, at t = 1000.

Letters: B batch, T latent frames, F frames per block, K window length in blocks (= number of steps), N blocks,
C, H, W latent channels/height/width.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tokentrim.caches.rolling import DENOISE, REFRESH, RollingKVCache
from tokentrim.models.wan_causal import CausalWanModel, patchify_tokens
from tokentrim.pipelines.sampling import add_noise, denoising_step_list, flow_to_x0, sigma_of, warped_timesteps
from tokentrim.trim import TokenTrim
from tokentrim.trim.controller import EventSink, TrimController

logger = logging.getLogger(__name__)

NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]


@dataclass
class RollingForcingConfig:
    """Sampler knobs (`conf/backbone/*.yaml: sampler`). Defaults: `configs/rolling_forcing_dmd.yaml` of the release.

    Args:
        denoising_steps: step list before warping (one noise level per window position).
        warp_denoising_step: map the list through the shift-warped schedule.
        shift: flow schedule shift.
        block_frames: latent frames per block (F); also the attention sink's size.
        window_blocks: window length in blocks (K); equals the number of steps (upstream ties them, l. 171).
        cache_frames: latent frames the KV cache holds (24 in the release).
        max_attention_frames: latent frames one call attends to at most (21 in the release).
        context_noise: timestep of the cache-refresh call.
    """

    denoising_steps: tuple[float, ...] = (1000, 800, 600, 400, 200)
    warp_denoising_step: bool = True
    shift: float = 5.0
    block_frames: int = 3
    window_blocks: int = 5
    cache_frames: int = 24
    max_attention_frames: int = 21
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        self.denoising_steps = denoising_step_list(self.denoising_steps, self.warp_denoising_step)
        check_rolling_config(self)

    @property
    def window_frames(self) -> int:
        return self.window_blocks * self.block_frames


def check_rolling_config(cfg: RollingForcingConfig) -> None:
    """One clear ValueError per bad key (`denoising_steps` already checked by `denoising_step_list`)."""
    if list(cfg.denoising_steps) != sorted(set(cfg.denoising_steps), reverse=True):
        raise ValueError(f"sampler.denoising_steps must be strictly decreasing, got {list(cfg.denoising_steps)}")
    if not isinstance(cfg.warp_denoising_step, bool):
        raise ValueError(f"sampler.warp_denoising_step must be a bool, got {cfg.warp_denoising_step!r}")
    if not cfg.shift > 0:
        raise ValueError(f"sampler.shift must be > 0, got {cfg.shift}")
    if cfg.block_frames < 1:
        raise ValueError(f"sampler.block_frames must be >= 1, got {cfg.block_frames}")
    if cfg.window_blocks != len(cfg.denoising_steps):
        raise ValueError(
            f"sampler.window_blocks must equal len(sampler.denoising_steps)={len(cfg.denoising_steps)} "
            f"(one noise level per window block), got {cfg.window_blocks}"
        )
    min_attention = (cfg.window_blocks + 1) * cfg.block_frames
    if cfg.max_attention_frames < min_attention:
        raise ValueError(
            f"sampler.max_attention_frames must be >= (window_blocks + 1) * block_frames = {min_attention} "
            f"(a full window plus the sink), got {cfg.max_attention_frames}"
        )
    if cfg.cache_frames < cfg.max_attention_frames:
        raise ValueError(
            f"sampler.cache_frames must be >= sampler.max_attention_frames={cfg.max_attention_frames}, got {cfg.cache_frames}"
        )
    if not 0 <= cfg.context_noise <= 1000:
        raise ValueError(f"sampler.context_noise must be in [0, 1000], got {cfg.context_noise}")


@dataclass(frozen=True)
class Window:
    """One window step. Blocks start_block..end_block (inclusive); `levels[j]` = noise level index of block
    start_block + j (0 = t_0 = pure noise, K-1 = last step); `fresh_block` takes fresh noise as input (or None);
    `clean_block` leaves the window clean after this step (or None); `refresh`: a cache-refresh call writes the clean
    block's K/V after this step (only such refreshes are ever read)."""

    index: int
    start_block: int
    end_block: int
    levels: tuple[int, ...]
    fresh_block: int | None
    clean_block: int | None
    refresh: bool

    @property
    def blocks(self) -> range:
        return range(self.start_block, self.end_block + 1)


def window_schedule(num_blocks: int, window_blocks: int) -> list[Window]:
    """The rolling windows of a video of `num_blocks` blocks (upstream l. 170-231).

    Block b is at level w - b in window w. `refresh`: the window's first block is cached after the window (it leaves
    clean and a later window reads it; see the module docstring). Requires num_blocks >= window_blocks: with fewer
    blocks upstream's timestep slicing (l. 224-231) gives a window both the ramp-up and ramp-down slice and re-injects
    noise.
    """
    if num_blocks < window_blocks:
        raise ValueError(f"num_blocks must be >= window_blocks={window_blocks}, got {num_blocks}")
    windows = []
    num_windows = num_blocks + window_blocks - 1
    for w in range(num_windows):
        start, end = max(0, w - window_blocks + 1), min(num_blocks - 1, w)
        levels = tuple(w - b for b in range(start, end + 1))
        fresh = end if w == end else None
        clean = start if w - start == window_blocks - 1 else None
        windows.append(Window(w, start, end, levels, fresh, clean, refresh=clean is not None and w < num_windows - 1))
    return windows


class RollingForcingPipeline:
    """Rolling-window sampler over a `CausalWanModel`.

    Args:
        model: the causal DiT (frozen; put in eval mode and `requires_grad_(False)` here).
        config: `RollingForcingConfig`.
        trim: a `TokenTrim` decider, run by a `tokentrim.trim.controller.TrimController`; None = no drift
            bookkeeping at all. `trim.drift_source` must be "final".
        flowmo: a `tokentrim.init.flowmo.FlowMoConfig` or None; `steps` <= window_blocks.
    """

    def __init__(self, model: CausalWanModel, config: RollingForcingConfig, trim: TokenTrim | None = None, flowmo=None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.trim = trim  # checks it and sets the controller
        self.flowmo = flowmo if (flowmo is not None and flowmo.enabled and flowmo.steps > 0) else None
        if self.flowmo is not None and self.flowmo.steps > config.window_blocks:
            raise ValueError(
                f"init.steps must be <= sampler.window_blocks={config.window_blocks} for Rolling Forcing "
                f"(only ramp-up windows run without the cache), got {self.flowmo.steps}"
            )
        self.timesteps = warped_timesteps(list(config.denoising_steps), config.shift, config.warp_denoising_step)
        self.sigmas = [sigma_of(t, config.shift) for t in self.timesteps]
        self.num_model_calls = 0  # forwards of the last video (denoising + refresh + FlowMo), for tests/benchmarks

    @property
    def trim(self) -> TokenTrim | None:
        return None if self.controller is None else self.controller.trim

    @trim.setter
    def trim(self, trim: TokenTrim | None) -> None:
        """The decider and its controller (None: plain Rolling Forcing, e.g. for an untimed warm-up)."""
        if trim is not None and trim.cfg.drift_source != "final":
            raise ValueError(
                f"trim.drift_source must be 'final' for Rolling Forcing (a block's steps span {self.config.window_blocks} "
                f"windows, so there is no early first-step abort), got {trim.cfg.drift_source!r}"
            )
        self.controller = TrimController(trim) if trim is not None else None

    def new_cache(self, *, height: int, width: int, batch_size: int = 1) -> RollingKVCache:
        """An empty Rolling Forcing cache sized from the model and the latent size (N = (H/2)(W/2) tokens per frame)."""
        cfg, model_cfg = self.config, self.model.config
        param = self.model.patch_embedding.weight
        return RollingKVCache(
            num_layers=model_cfg.num_layers,
            num_heads=model_cfg.num_heads,
            head_dim=self.model.head_dim,
            tokens_per_frame=self.model.tokens_per_frame(height, width),
            block_frames=cfg.block_frames,
            cache_frames=cfg.cache_frames,
            max_attention_frames=cfg.max_attention_frames,
            batch_size=batch_size,
            device=param.device,
            dtype=param.dtype,
            token_major=self.model.speed.token_major,
        )

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
            noise: `[B, T, C, H, W]` initial noise; T a multiple of F and >= K*F (15). Block b's fresh noise is
                noise[:, bF:(b+1)F].
            context_kv: `model.encode_context(text_embeds)`.
            noise_source: draws the re-noising noise, one `[B, F, C, H, W]` tensor per re-noised block, in window
                order then block order (upstream draws a whole-window `randn_like` per block and keeps the block's
                slice, l. 262-270; values differ from upstream's RNG stream, the order does not).
            on_event: receives one dict per clean block (`tokentrim.trim.controller.batch_event`, plus "window").
        Returns:
            latents `[B, T, C, H, W]`: each block's x0 from its last (t_{K-1}) pass.
        """
        batch_size, num_frames, _, height, width = noise.shape
        cfg = self.config
        if num_frames % cfg.block_frames:
            raise ValueError(f"num latent frames must be a multiple of sampler.block_frames={cfg.block_frames}, got {num_frames}")
        if num_frames < cfg.window_frames:
            raise ValueError(
                f"Rolling Forcing needs >= window_blocks * block_frames = {cfg.window_frames} latent frames "
                f"(one full window), got {num_frames}"
            )
        if self.trim is not None and batch_size != 1:
            raise ValueError(f"TokenTrim decides per video: batch size must be 1, got {batch_size}")
        cache = self.new_cache(height=height, width=width, batch_size=batch_size)
        if self.controller is not None:
            self.controller.reset()
        self.num_model_calls = 0
        output = torch.zeros_like(noise)
        noisy = torch.zeros_like(noise)  # each block's input for its next window (upstream `noisy_cache`)
        fb = cfg.block_frames
        for window in window_schedule(num_frames // fb, cfg.window_blocks):
            start, end = window.start_block * fb, (window.end_block + 1) * fb
            # 1. Input: re-noised blocks, then fresh noise for the newest block of a ramp-up/full window
            x = noisy[:, start:end].clone()
            if window.fresh_block is not None:
                x[:, -fb:] = noise[:, end - fb : end]
            # 2. Denoising call; TokenTrim on the block that becomes clean (may prune and redo the call)
            x0 = self._denoise_window(x, window, context_kv, cache)
            if window.clean_block is not None and self.controller is not None:
                batch = RollingForcingBatch(self, x, window, context_kv, cache, noise_source)
                x0 = self.controller.step(batch, x0, on_event)
            output[:, start:end] = x0
            # 3. Re-noise every block that is not final to its next level (block order, as upstream)
            for j, level in enumerate(window.levels):
                if level < cfg.window_blocks - 1:
                    block = slice(j * fb, (j + 1) * fb)
                    eps = noise_source(tuple(x0[:, block].shape))
                    noisy[:, start + j * fb : start + (j + 1) * fb] = add_noise(x0[:, block], eps, self.sigmas[level + 1])
            # 4. Cache refresh: the clean block at the context noise level, when a later window reads it
            if window.refresh:
                self._refresh(x0[:, :fb], context_kv, cache, start)
        return output

    # ------------------------------------------------------------------------------------------ steps
    def _denoise_window(self, x: torch.Tensor, window: Window, context_kv: list, cache: RollingKVCache) -> torch.Tensor:
        """One denoising call on the window. x: `[B, F_w, C, H, W]` -> x0 of the same shape."""
        batch_size, num_frames = x.shape[:2]
        start = window.start_block * self.config.block_frames
        t_frames, sigma = self._levels(window, batch_size, x.device)  # [B, F_w], [1, F_w, 1, 1, 1]
        cache.begin_call(start, num_frames, mode=DENOISE)
        flow = self._forward(x, t_frames, context_kv, start, cache)
        if self.flowmo is not None and window.index < self.flowmo.steps:
            x, flow = self._flowmo_step(x, flow, t_frames, sigma, context_kv, cache, start)
        return flow_to_x0(flow, x, sigma)

    def _refresh(self, x0_block: torch.Tensor, context_kv: list, cache: RollingKVCache, start: int) -> None:
        """Write the block's clean K/V: one forward of its x0 at the context noise level (upstream l. 273-295).
        Its prediction is discarded (upstream too), so the call stops once the last layer has staged its K/V
        (`kv_only`: no last-layer attention, FFN or head; the same cache entries)."""
        batch_size, num_frames = x0_block.shape[:2]
        t_frames = torch.full((batch_size, num_frames), self.config.context_noise, device=x0_block.device, dtype=torch.float32)
        cache.begin_call(start, num_frames, mode=REFRESH)
        self.num_model_calls += 1
        self.model(x0_block, t_frames, context_kv, start_frame=start, cache=cache, kv_only=True)
        cache.commit()

    def _flowmo_step(self, x, flow, t_frames, sigma, context_kv, cache, start):
        """FlowMo on a ramp-up window: one guided step on the whole window's noisy input. Ramp-up windows attend only
        to themselves, so the guided forward runs without the cache (same attention)."""
        from tokentrim.init.flowmo import flowmo_guide

        if start != 0:
            raise RuntimeError("FlowMo guidance expects a ramp-up window (start frame 0)")

        def predict(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.num_model_calls += 1
            v = self.model(z, t_frames, context_kv, start_frame=start, cache=None)
            return v, flow_to_x0(v, z, sigma)

        with torch.enable_grad():
            x_new, info = flowmo_guide(x, predict, cfg=self.flowmo)
        logger.debug("FlowMo step: %s", {k: v for k, v in info.items() if not torch.is_tensor(v)})
        if self.flowmo.recompute:
            cache.begin_call(start, x.shape[1], mode=DENOISE)
            flow = self._forward(x_new, t_frames, context_kv, start, cache)
        return x_new.detach(), flow

    # ------------------------------------------------------------------------------------------ helpers
    def _forward(self, x, t_frames, context_kv, start, cache) -> torch.Tensor:
        self.num_model_calls += 1
        return self.model(x, t_frames, context_kv, start_frame=start, cache=cache)

    def _levels(self, window: Window, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame timesteps `[B, F_w]` (fp32, as upstream) and sigmas `[1, F_w, 1, 1, 1]` (fp64, as upstream's
        x0 conversion) of a window."""
        fb = self.config.block_frames
        t = torch.tensor([self.timesteps[lv] for lv in window.levels], dtype=torch.float32, device=device)  # [blocks]
        s = torch.tensor([self.sigmas[lv] for lv in window.levels], dtype=torch.float64, device=device)  # [blocks]
        t_frames = t.repeat_interleave(fb).expand(batch_size, -1)  # [blocks] -> [B, F_w]
        sigma = s.repeat_interleave(fb).view(1, -1, 1, 1, 1)  # [blocks] -> [1, F_w, 1, 1, 1]
        return t_frames, sigma

    def _tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """The block on the cache's token grid: [1, F, C, H, W] -> [F, N, 4C]."""
        return patchify_tokens(x0[0], self.model.config.patch_size[1:])


@dataclass
class RollingForcingBatch:
    """TokenTrim's batch at a window step: the block that leaves the window clean (the window's first block). The
    `tokentrim.trim.controller.TrimBatch` of the window step: its tokens are the clean block's x0, and regenerating
    redoes the window's denoising call.

    Args:
        pipe: the pipeline (its denoising call).
        x: `[B, F_w, C, H, W]` the window's input.
        window: the window step.
        context_kv, cache: the prompt's cross-attention K/V and the video's Rolling Forcing cache.
        noise_source: draws fresh noise for a "fresh" regeneration.
    """

    pipe: RollingForcingPipeline
    x: torch.Tensor
    window: Window
    context_kv: list
    cache: RollingKVCache
    noise_source: NoiseSource

    @property
    def num_frames(self) -> int:
        return self.pipe.config.block_frames

    @property
    def start_frame(self) -> int:
        return self.window.start_block * self.num_frames

    @property
    def grid(self) -> tuple[int, int]:
        _, ph, pw = self.pipe.model.config.patch_size
        return self.x.shape[-2] // ph, self.x.shape[-1] // pw

    def tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """The clean block of the window's x0 [B, F_w, C, H, W] on the token grid, [F, N, c]."""
        return self.pipe._tokens(x0[:, : self.num_frames])

    def regenerate(self, fresh_noise: bool, may_redo: bool) -> torch.Tensor:
        """Redo the window's denoising call on the same input; "fresh" redraws the newest block's pure noise when the
        window takes one (the other blocks' inputs are earlier windows' results)."""
        fb = self.num_frames
        if fresh_noise and self.window.fresh_block is not None:
            self.x = self.x.clone()
            self.x[:, -fb:] = self.noise_source(tuple(self.x[:, -fb:].shape))
        return self.pipe._denoise_window(self.x, self.window, self.context_kv, self.cache)

    def event_fields(self) -> dict:
        return {"window": self.window.index}
