"""Which x0 of a few-step block TokenTrim tests (`trim.drift_source`), as a strategy chosen once from the config.

  final       `FinalX0`: the block's x0 after its last denoising step (the paper).
  first_step  `FirstStepX0`: the x0 of the first step. A block that may still be pruned and regenerated stops after
              that step, so a trigger costs one step instead of all of them; an accepted block continues at step 2
              from where it stopped (bit-identical to an uninterrupted run: nothing is recomputed).

A block's sampler (`pipelines/self_forcing.py`) asks the strategy how many steps to run before the test and which
x0 to test; it runs the remaining steps once the batch is accepted. Rolling Forcing has no such choice (a block's
steps span several windows) and accepts only "final".

Letters: B batch, F frames per block, C, H, W latent channels/height/width, K denoising steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class StepState:
    """A block denoised up to step `steps_done` (1..K): the last step's input x_t and its x0 prediction, and the x0
    of step 1. Each tensor [B, F, C, H, W]."""

    steps_done: int
    x_t: torch.Tensor
    x0: torch.Tensor
    first_x0: torch.Tensor


class DriftSource(Protocol):
    name: str

    def steps_before_test(self, num_steps: int, may_redo: bool) -> int:
        """Steps to run before TokenTrim tests the block (the rest run after acceptance)."""

    def tested(self, state: StepState) -> torch.Tensor:
        """The x0 TokenTrim tests, [B, F, C, H, W]."""


class FinalX0:
    """Test the block's final x0 (the paper)."""

    name = "final"

    def steps_before_test(self, num_steps: int, may_redo: bool) -> int:
        return num_steps

    def tested(self, state: StepState) -> torch.Tensor:
        return state.x0


class FirstStepX0:
    """Test the first step's x0; stop there while the block may still be regenerated."""

    name = "first_step"

    def steps_before_test(self, num_steps: int, may_redo: bool) -> int:
        return 1 if may_redo else num_steps

    def tested(self, state: StepState) -> torch.Tensor:
        return state.first_x0


DRIFT_SOURCES: dict[str, DriftSource] = {source.name: source for source in (FinalX0(), FirstStepX0())}


def drift_source_for(name: str) -> DriftSource:
    """The strategy of `trim.drift_source`."""
    if name not in DRIFT_SOURCES:
        raise ValueError(f"trim.drift_source must be one of {list(DRIFT_SOURCES)}, got {name!r}")
    return DRIFT_SOURCES[name]
