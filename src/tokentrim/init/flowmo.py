"""FlowMo first-batch initialisation: variance-based motion-coherence guidance of the first block.

FlowMo (Shaulov et al., arXiv 2506.01144) lowers the temporal variance of frame-to-frame motion in the model's own
prediction by taking gradient steps on the noisy latent at the first denoising steps. The model stays frozen.
TokenTrim (arXiv 2602.00268) uses it as a "motion-stabilised initialisation" of the first batch only.

Letters used in shapes throughout this module:
    B  batch size
    F  latent frames of the block (Self Forcing: 3)
    C  latent channels (Wan: 16)
    H, W  latent height and width (Wan 832x480: 60 x 104); one (h, w) is one 8x8-pixel patch

Numerics checked against the official release (`arielshaulov/FlowMo@main`, commit 5bf0c14):
- Loss (`motion_optimizer.py`, `MotionVarianceOptimizer.calculate_motion_variance`): absolute differences of
  consecutive latent frames, population variance over the difference axis, mean over channels, max over the
  spatial locations.
- Update (`MotionVarianceOptimizer.optimize_noise_prediction`): a fresh `torch.optim.Adam([x_t], lr=1e-3)` at every
  guided timestep, one iteration (`generate.py`: `iterations=1`). The model parameters get `requires_grad_(False)`.
  The sample returned is the post-step latent of the iteration with the lowest pre-step loss. One fresh Adam step moves
  each element by `lr * g / (|g| + eps)`, which is `lr * sign(g)` up to eps.
- Target: the release differentiates the CFG-combined velocity (`wan/text2video.py`); the paper and the `metrics_opt`
  branch use the predicted clean latent x0. Both are offered (`target`), with x0 as default, since the distilled causal
  generators return x0 directly.
- Solver quirk (`wan/text2video.py`): the scheduler is stepped with the velocity predicted *before* the update and the
  *updated* sample. UniPC's `convert_model_output` then forms `x0 = x_t' - sigma_t * v(x_t)`, i.e. the pre-update x0
  shifted by the latent update. `x0_from_flow` gives that quantity for samplers that consume x0 directly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

TARGETS = ("x0", "velocity")
OPTIMIZERS = ("adam", "sign")

# Predictor contract: x [B, F, C, H, W] -> (flow_pred, x0_pred), both [B, F, C, H, W], differentiable w.r.t. x.
Predictor = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class FlowMoConfig:
    """FlowMo settings for the first batch; mirrors `conf/init/flowmo.yaml` (group `init`).

    Args:
        enabled: apply FlowMo at all. `conf/init/none.yaml` sets False.
        steps: number of first denoising steps of the first batch that are guided (0 disables guidance).
            The release guides the first 12 of 50 UniPC steps (t in [946, 999]); for 4-step distilled generators this
            fraction of the noise schedule is the first step only.
        target: "x0" (predicted clean latent, as in the paper) or "velocity" (flow prediction, as in the release).
        recompute: False: the solver uses the prediction made before the update (release behaviour);
            True: the caller re-predicts at the updated latent. The caller acts on it; `flowmo_guide` does not.
        lr: Adam learning rate (release default 1e-3).
        iterations: optimiser steps per guided step, each with one forward and one backward (release: 1). A fresh
            optimiser is made at each guided step.
        optimizer: "adam" (`torch.optim.Adam`, as in the release) or "sign" (`x -= lr * sign(grad)`, the closed form
            of one fresh Adam step without eps).
    """

    enabled: bool = True
    steps: int = 1
    target: str = "x0"
    recompute: bool = False
    lr: float = 1e-3
    iterations: int = 1
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        check_flowmo_config(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FlowMoConfig:
        """Builds a config from a plain mapping (e.g. `OmegaConf.to_container(cfg.init)`), rejecting unknown keys."""
        known = {field.name for field in dataclasses.fields(cls)}
        for key in mapping:
            if key not in known:
                raise ValueError(f"init.{key}: unknown FlowMo key; expected one of {sorted(known)}")
        return cls(**dict(mapping))


def check_flowmo_config(cfg: FlowMoConfig) -> None:
    """Validates every key of `cfg`; raises one ValueError/TypeError naming the key, the rule and the value."""
    if not isinstance(cfg.enabled, bool):
        raise TypeError(f"init.enabled must be a bool, got {cfg.enabled!r}")
    if not isinstance(cfg.recompute, bool):
        raise TypeError(f"init.recompute must be a bool, got {cfg.recompute!r}")
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int):
        raise TypeError(f"init.steps must be an int, got {cfg.steps!r}")
    if cfg.steps < 0:
        raise ValueError(f"init.steps must be >= 0, got {cfg.steps}")
    if cfg.target not in TARGETS:
        raise ValueError(f"init.target must be one of {TARGETS}, got {cfg.target!r}")
    if isinstance(cfg.lr, bool) or not isinstance(cfg.lr, (int, float)):
        raise TypeError(f"init.lr must be a float, got {cfg.lr!r}")
    if not cfg.lr > 0:
        raise ValueError(f"init.lr must be > 0, got {cfg.lr}")
    if isinstance(cfg.iterations, bool) or not isinstance(cfg.iterations, int):
        raise TypeError(f"init.iterations must be an int, got {cfg.iterations!r}")
    if cfg.iterations < 1:
        raise ValueError(f"init.iterations must be >= 1, got {cfg.iterations}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"init.optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def is_guided_step(cfg: FlowMoConfig, *, batch_index: int, step_index: int) -> bool:
    """True when FlowMo guides denoising step `step_index` (0-based) of batch `batch_index` (0-based).

    Only the first batch (first block / first window) is guided, on its first `cfg.steps` denoising steps.
    """
    return cfg.enabled and batch_index == 0 and step_index < cfg.steps


def flowmo_loss_per_sample(pred: Tensor) -> Tensor:
    """FlowMo motion-variance loss of each sample: [B, F, C, H, W] -> [B].

    For each sample: M_f = |P_f - P_{f-1}| for f = 1..F-1, V = population variance of M over f, v = mean of V over
    channels, loss = max of v over the H x W latent locations (FlowMo release, `calculate_motion_variance`).
    The release takes one sample laid out [C, F, H, W]; this is the same quantity in our [B, F, C, H, W] layout.
    """
    if pred.ndim != 5:
        raise ValueError(f"pred must be [B, F, C, H, W] (5-D), got shape {tuple(pred.shape)}")
    batch_size, num_frames, channels, height, width = pred.shape
    if num_frames < 2:
        raise ValueError(f"pred must have at least 2 latent frames (F >= 2) for frame differences, got F={num_frames}")
    # fp32 island: the variance of small differences loses most bits in bf16.
    pred = pred.float()
    motion = (pred[:, 1:] - pred[:, :-1]).abs()  # [B, F, C, H, W] -> [B, F-1, C, H, W]
    variance = motion.var(dim=1, unbiased=False)  # [B, F-1, C, H, W] -> [B, C, H, W]
    per_location = variance.mean(dim=1)  # [B, C, H, W] -> [B, H, W]
    # amax splits the gradient evenly among exact ties (the release's torch.max without dim does the same).
    return per_location.flatten(1).amax(dim=1)  # [B, H, W] -> [B, H*W] -> [B]


def flowmo_loss(pred: Tensor) -> Tensor:
    """FlowMo loss summed over the batch: [B, F, C, H, W] -> scalar (fp32).

    The sum (not the mean) keeps each sample's gradient equal to the gradient of its own loss, as if each video were
    optimised alone (the release runs one video at a time). See `flowmo_loss_per_sample` for the per-sample math.
    """
    return flowmo_loss_per_sample(pred).sum()


def x0_from_flow(x_t: Tensor, flow_pred: Tensor, sigma_t: float | Tensor) -> Tensor:
    """Clean-latent estimate from a flow prediction: x0 = x_t - sigma_t * v, all [B, F, C, H, W].

    With the Wan flow convention x_t = (1 - sigma) x0 + sigma eps and v = eps - x0. Called with the updated latent and
    the pre-update velocity it reproduces what the release's UniPC step sees (`convert_model_output`), i.e. the
    `recompute=False` behaviour for samplers that re-noise x0 (Self Forcing, Rolling Forcing).
    """
    return x_t - sigma_t * flow_pred


def _select_target(flow_pred: Tensor, x0_pred: Tensor, *, target: str) -> Tensor:
    """Returns the prediction the loss is computed on: x0_pred for "x0", flow_pred for "velocity"."""
    return x0_pred if target == "x0" else flow_pred


def _sync(x: Tensor) -> None:
    """Waits for queued device work so wall times are honest on CUDA."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def flowmo_guide(
    x_t: Tensor,
    predict: Predictor,
    *,
    cfg: FlowMoConfig,
    measure_after: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """One FlowMo guided step on the block's noisy latent.

    Args:
        x_t: the block's noisy latent at the current denoising step, [B, F, C, H, W]; F >= 2.
        predict: `predict(x) -> (flow_pred, x0_pred)`, both [B, F, C, H, W]. It must be differentiable w.r.t. x:
            the caller runs the frozen model (parameters `requires_grad_(False)` to save memory) and this function
            enables grad around the call. x arrives as an fp32 leaf; the caller casts it to the model's dtype.
            Gradients are taken w.r.t. x only (`torch.autograd.grad`), so no parameter `.grad` is ever written.
        cfg: FlowMo settings. If `cfg.enabled` is False or `cfg.steps == 0`, `x_t` itself is returned untouched.
            Whether this step is guided at all is the caller's decision (`is_guided_step`).
        measure_after: run one extra no-grad forward at the returned latent to report `loss_after`.

    The latent is optimised in fp32 (a 1e-3 step is below bf16 resolution for |x| >= 0.5) and cast back to
    x_t's dtype; `changed_fraction` reports how many elements the cast kept changed.

    Returns:
        (x_t_updated, info). x_t_updated has x_t's shape, dtype and device. info holds:
            applied (bool), loss_before (float, loss at x_t, batch sum), loss_per_sample_before (list of B floats),
            loss_after (float or None), losses (pre-step loss of each iteration), best_iteration (int),
            grad_norm (float, L2 norm of the gradient at x_t), iterations (int), num_forward, num_backward (int),
            changed_fraction (float), wall_ms (float), flow_pred_before / x0_pred_before (detached predictions at
            x_t from the first forward, [B, F, C, H, W]; a `recompute=False` caller can use them instead of its own
            forward).
    """
    check_flowmo_config(cfg)
    if not cfg.enabled or cfg.steps == 0:
        disabled_info = {"applied": False, "loss_before": None, "loss_after": None, "grad_norm": None, "iterations": 0}
        return x_t, disabled_info
    if x_t.ndim != 5:
        raise ValueError(f"x_t must be [B, F, C, H, W] (5-D), got shape {tuple(x_t.shape)}")
    batch_size, num_frames, channels, height, width = x_t.shape
    if num_frames < 2:
        raise ValueError(f"x_t must have at least 2 latent frames (F >= 2) for FlowMo, got F={num_frames}")

    _sync(x_t)
    start_s = time.perf_counter()

    # 1. The optimised variable: an fp32 leaf copy of the noisy latent (the model is frozen).
    x_opt = x_t.detach().to(dtype=torch.float32, copy=True).requires_grad_(True)
    optimizer = torch.optim.Adam([x_opt], lr=cfg.lr) if cfg.optimizer == "adam" else None

    losses: list[float] = []
    info: dict[str, Any] = {"applied": True, "iterations": cfg.iterations}
    best_loss = float("inf")
    best_x = x_opt.detach().clone()
    best_iteration = -1

    # 2. Iterations: forward with grad on x only, loss, gradient, one optimiser step.
    for iteration in range(cfg.iterations):
        with torch.enable_grad():
            flow_pred, x0_pred = predict(x_opt)
            loss_per_sample = flowmo_loss_per_sample(_select_target(flow_pred, x0_pred, target=cfg.target))
            loss = loss_per_sample.sum()
            if not loss.requires_grad:
                raise ValueError("predict(x) output does not depend differentiably on x; run the model on x with grad")
            (grad,) = torch.autograd.grad(loss, [x_opt])
        loss_value = float(loss.detach())
        losses.append(loss_value)
        if iteration == 0:
            info["loss_before"] = loss_value
            info["loss_per_sample_before"] = [float(v) for v in loss_per_sample.detach()]
            info["grad_norm"] = float(grad.norm())
            info["flow_pred_before"] = flow_pred.detach()
            info["x0_pred_before"] = x0_pred.detach()
        del flow_pred, x0_pred, loss, loss_per_sample

        if not bool(grad.any()):
            logger.warning("FlowMo gradient is all zero at iteration %d; latent left unchanged", iteration)
        with torch.no_grad():
            if optimizer is not None:
                x_opt.grad = grad
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                x_opt.sub_(cfg.lr * grad.sign())
        # Release: keep the post-step latent of the iteration whose pre-step loss is lowest.
        if loss_value < best_loss:
            best_loss = loss_value
            best_x = x_opt.detach().clone()
            best_iteration = iteration
    del optimizer
    if best_iteration < 0:
        logger.warning("FlowMo loss was not finite (%s); latent left unchanged", losses)

    # 3. Back to the caller's dtype; report how much of the update survived the cast.
    x_t_updated = best_x.to(dtype=x_t.dtype)
    changed = (x_t_updated != x_t.detach()).float().mean()
    info["changed_fraction"] = float(changed)
    if x_t.dtype in (torch.float16, torch.bfloat16) and float(changed) < 0.5:
        logger.warning(
            "FlowMo update mostly lost in the cast to %s (changed_fraction=%.3f); pass an fp32 x_t",
            x_t.dtype,
            float(changed),
        )
    info["losses"] = losses
    info["best_iteration"] = best_iteration
    info["num_forward"] = cfg.iterations
    info["num_backward"] = cfg.iterations
    info["loss_after"] = None
    if measure_after:
        with torch.no_grad():
            flow_after, x0_after = predict(x_t_updated)
            info["loss_after"] = float(flowmo_loss(_select_target(flow_after, x0_after, target=cfg.target)))
        info["num_forward"] += 1

    _sync(x_t)
    info["wall_ms"] = (time.perf_counter() - start_s) * 1e3
    logger.debug(
        "FlowMo guided step: loss %.6g -> %s, grad_norm %.3g, %.1f ms",
        info["loss_before"],
        info["loss_after"],
        info["grad_norm"],
        info["wall_ms"],
    )
    return x_t_updated, info
