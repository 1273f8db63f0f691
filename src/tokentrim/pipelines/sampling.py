"""Flow-matching schedule of Wan / Self Forcing (shift-warped sigmas) and the few-step x0 sampler's two updates.

Self Forcing's scheduler: s_j = linspace(1, 0, 1001)[:-1], sigma_j = shift*s_j / (1 + (shift-1)*s_j),
t_j = 1000*sigma_j (fp32 table). A step list [1000, 750, 500, 250] is "warped" to t = table[1000 - step]
(with t=0 appended), i.e. [1000, 937.5, 833.33, 625.0] at shift 5. Timestep -> sigma by nearest table entry.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def sigma_table(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas, timesteps), both [num_train_timesteps] fp32, decreasing from sigma=1."""
    s = torch.linspace(1.0, 0.0, num_train_timesteps + 1)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    return sigmas, sigmas * num_train_timesteps


def denoising_step_list(steps, warp: bool) -> tuple[float, ...]:
    """`sampler.denoising_steps` checked: non-empty values in (0, 1000]; integers when warped (each one indexes the
    1000-entry schedule), otherwise the timesteps themselves, fractions kept (integral values come back as int)."""
    try:
        values = tuple(float(s) for s in steps)
    except (TypeError, ValueError):
        raise ValueError(f"sampler.denoising_steps must be a list of numbers, got {steps!r}") from None
    if not values or any(not 0 < s <= NUM_TRAIN_TIMESTEPS for s in values):
        raise ValueError(f"sampler.denoising_steps must be non-empty values in (0, 1000], got {list(steps)}")
    if warp and any(s != int(s) for s in values):
        raise ValueError(f"sampler.denoising_steps must be integers when warp_denoising_step is on (each one indexes "
                         f"the 1000-entry schedule), got {list(steps)}")
    return tuple(int(s) if s == int(s) else s for s in values)


def warped_timesteps(step_list: list[int], shift: float, warp: bool = True) -> list[float]:
    """Denoising timesteps actually fed to the model."""
    if not warp:
        return [float(t) for t in step_list]
    _, timesteps = sigma_table(shift)
    table = torch.cat([timesteps, torch.zeros(1)])
    return table[NUM_TRAIN_TIMESTEPS - torch.tensor(step_list, dtype=torch.long)].tolist()


def sigma_of(t: float, shift: float) -> float:
    """sigma at timestep t (nearest table entry; t=0 -> 0)."""
    sigmas, timesteps = sigma_table(shift)
    if t <= 0:
        return 0.0
    return float(sigmas[torch.argmin((timesteps - t).abs())])


def flow_to_x0(flow: torch.Tensor, x_t: torch.Tensor, sigma: float) -> torch.Tensor:
    """x0 = x_t - sigma * v (flow v = noise - x0), in float64 as Self Forcing's wrapper, cast back to the wider of
    the two dtypes (fp32 latents stay fp32 under a bf16 model: a FlowMo step of 1e-3 is below bf16 resolution)."""
    return (x_t.double() - sigma * flow.double()).to(torch.promote_types(flow.dtype, x_t.dtype))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """x_t = (1 - sigma) x0 + sigma * noise, in the wider of the two dtypes."""
    return ((1 - sigma) * x0 + sigma * noise).to(torch.promote_types(x0.dtype, noise.dtype))
