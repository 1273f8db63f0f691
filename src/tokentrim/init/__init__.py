"""First-batch initialisation of a rollout (group `init`: none | flowmo)."""

from tokentrim.init.flowmo import (
    FlowMoConfig,
    check_flowmo_config,
    flowmo_guide,
    flowmo_loss,
    flowmo_loss_per_sample,
    is_guided_step,
    x0_from_flow,
)

__all__ = [
    "FlowMoConfig",
    "check_flowmo_config",
    "flowmo_guide",
    "flowmo_loss",
    "flowmo_loss_per_sample",
    "is_guided_step",
    "x0_from_flow",
]
