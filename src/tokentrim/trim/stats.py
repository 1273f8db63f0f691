"""Running mean and population standard deviation of the drift severity over accepted batches (Welford).

The paper keeps "running mean mu_t and standard deviation sigma_t of drift severity scores from accepted batches";
no decay is mentioned, so the statistics are exact (Welford's algorithm), kept as 0-dim tensors on the latents'
device so that updating them needs no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RunningStats:
    count: int = 0
    mean: torch.Tensor | None = None  # []
    m2: torch.Tensor | None = None  # [] sum of squared deviations

    def push(self, value: torch.Tensor) -> None:
        """Add one accepted severity D (0-dim tensor)."""
        value = value.detach().float()
        if self.count == 0:
            self.count, self.mean, self.m2 = 1, value.clone(), torch.zeros_like(value)
            return
        self.count += 1
        delta = value - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (value - self.mean)

    @property
    def std(self) -> torch.Tensor | None:
        """Population std sqrt(M2 / n)."""
        if self.count == 0:
            return None
        return torch.sqrt(self.m2 / self.count)

    def moments(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) as a test uses them, 0-dim tensors like `like`. Degenerate statistics are used as they are:
        one value gives sigma = 0; no value gives Welford's initial state mu = 0, sigma = 0 (so every D > 0 exceeds
        the threshold: a test without warm-up prunes on no evidence, as the paper's ablation describes)."""
        if self.count == 0:
            zero = torch.zeros_like(like, dtype=torch.float32)
            return zero, zero
        return self.mean, self.std

    def snapshot(self) -> "RunningStats":
        return RunningStats(self.count, None if self.mean is None else self.mean.clone(), None if self.m2 is None else self.m2.clone())
