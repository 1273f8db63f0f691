"""FlowMo first-batch initialisation: loss math, the guided step, config and YAML (CPU, tiny tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

import tokentrim.init as init_pkg
from tokentrim.init import (
    FlowMoConfig,
    flowmo_guide,
    flowmo_loss,
    flowmo_loss_per_sample,
    is_guided_step,
    x0_from_flow,
)

CONF_DIR = Path(init_pkg.__file__).resolve().parent.parent / "conf" / "init"
SHAPE = (1, 3, 4, 3, 4)  # [B, F, C, H, W]: one Self Forcing-like block of 3 latent frames


def _randn(shape: tuple[int, ...], seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


def _hand_loss(pred: Tensor) -> float:
    """The release's loss written with explicit loops, summed over the batch."""
    batch_size, num_frames, channels, height, width = pred.shape
    total = 0.0
    for b in range(batch_size):
        best = -float("inf")
        for h in range(height):
            for w in range(width):
                channel_sum = 0.0
                for c in range(channels):
                    diffs = [
                        abs(pred[b, f, c, h, w].item() - pred[b, f - 1, c, h, w].item()) for f in range(1, num_frames)
                    ]
                    mean = sum(diffs) / len(diffs)
                    channel_sum += sum((d - mean) ** 2 for d in diffs) / len(diffs)  # population variance
                best = max(best, channel_sum / channels)
        total += best
    return total


class LinearPredictor:
    """Toy frozen model at sigma = 1: x0 = A x over the flattened latent, v = (x - x0) / sigma."""

    def __init__(self, shape: tuple[int, ...], seed: int, sigma: float = 1.0) -> None:
        size = shape[1] * shape[2] * shape[3] * shape[4]
        self.matrix = _randn((size, size), seed) / size**0.5
        self.sigma = sigma

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_pred = (x.flatten(1) @ self.matrix).view_as(x)  # [B, F*C*H*W] -> [B, F, C, H, W]
        flow_pred = (x - x0_pred) / self.sigma
        return flow_pred, x0_pred


class TinyModel(nn.Module):
    """A module with trainable parameters: a 1x1 channel mix per frame, x0 = mix(x), v = x - x0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_pred = self.mix(x.transpose(1, 2)).transpose(1, 2)  # [B, F, C, H, W] -> [B, C, F, H, W] -> back
        return x - x0_pred, x0_pred


def test_loss_equals_hand_computation_with_loops() -> None:
    pred = _randn((2, 3, 4, 3, 5), seed=0)
    assert flowmo_loss(pred).item() == pytest.approx(_hand_loss(pred), rel=1e-5)


def test_loss_per_sample_matches_single_sample_runs() -> None:
    pred = _randn((3, 4, 2, 2, 3), seed=1)
    per_sample = flowmo_loss_per_sample(pred)
    assert per_sample.shape == (3,)
    for b in range(3):
        assert per_sample[b].item() == pytest.approx(_hand_loss(pred[b : b + 1]), rel=1e-5)
    assert flowmo_loss(pred).item() == pytest.approx(per_sample.sum().item(), rel=1e-6)


def test_static_and_constant_motion_have_zero_loss() -> None:
    frame = _randn((1, 1, 4, 3, 3), seed=2)
    static = frame.repeat(1, 3, 1, 1, 1)  # [B, 1, C, H, W] -> [B, 3, C, H, W]
    linear_motion = torch.cat([frame, frame + 0.5, frame + 1.0], dim=1)  # equal steps: |diff| constant over time
    assert flowmo_loss(static).item() == 0.0
    assert flowmo_loss(linear_motion).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("shape", [(1, 1, 4, 3, 3), (3, 4, 3, 3)])
def test_loss_rejects_fewer_than_two_frames_or_wrong_rank(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="pred must"):
        flowmo_loss(torch.zeros(shape))


@pytest.mark.parametrize("target", ["x0", "velocity"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guided_step_decreases_the_loss(target: str, seed: int) -> None:
    x_t = _randn(SHAPE, seed=100 + seed)
    predict = LinearPredictor(SHAPE, seed=seed)
    x_new, info = flowmo_guide(x_t, predict, cfg=FlowMoConfig(target=target), measure_after=True)
    assert info["applied"] and info["iterations"] == 1
    assert info["loss_after"] < info["loss_before"]
    assert info["num_forward"] == 2 and info["num_backward"] == 1
    assert not torch.equal(x_new, x_t)


def test_one_adam_step_equals_sign_step_up_to_eps() -> None:
    x_t = _randn(SHAPE, seed=3)
    predict = LinearPredictor(SHAPE, seed=3)
    x_adam, info = flowmo_guide(x_t, predict, cfg=FlowMoConfig(optimizer="adam"))
    x_sign, _ = flowmo_guide(x_t, predict, cfg=FlowMoConfig(optimizer="sign"))
    # One fresh Adam step moves by lr * g / (|g| + eps): within lr * eps / |g| of lr * sign(g), plus fp32 rounding.
    assert torch.allclose(x_adam, x_sign, rtol=0.0, atol=1e-6)
    assert (x_sign - x_t).abs().max().item() == pytest.approx(1e-3, rel=1e-3)
    assert info["grad_norm"] > 0.0


def test_sign_step_moves_against_the_gradient() -> None:
    x_t = _randn(SHAPE, seed=4)
    predict = LinearPredictor(SHAPE, seed=4)
    x_leaf = x_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flowmo_loss(predict(x_leaf)[1]), [x_leaf])
    x_new, _ = flowmo_guide(x_t, predict, cfg=FlowMoConfig(optimizer="sign", lr=0.01))
    assert torch.allclose(x_new, x_t - 0.01 * grad.sign(), rtol=0.0, atol=1e-7)


@pytest.mark.parametrize("cfg", [FlowMoConfig(enabled=False), FlowMoConfig(steps=0)], ids=["disabled", "steps0"])
def test_flowmo_off_returns_the_input_untouched(cfg: FlowMoConfig) -> None:
    x_t = _randn(SHAPE, seed=5)
    before = x_t.clone()
    calls: list[int] = []

    def predict(x: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(1)
        return x, x

    x_new, info = flowmo_guide(x_t, predict, cfg=cfg)
    assert x_new is x_t and torch.equal(x_t, before)
    assert not info["applied"] and not calls


def test_model_parameters_receive_no_gradient() -> None:
    torch.manual_seed(0)  # nn.Conv3d init draws from the global generator; tests may seed it
    model = TinyModel(channels=SHAPE[2])
    assert all(p.requires_grad for p in model.parameters())
    weights_before = [p.detach().clone() for p in model.parameters()]
    x_new, info = flowmo_guide(_randn(SHAPE, seed=6), model, cfg=FlowMoConfig(iterations=2))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights_before))
    assert info["num_backward"] == 2 and len(info["losses"]) == 2


def test_velocity_and_x0_targets_give_different_updates() -> None:
    x_t = _randn(SHAPE, seed=7)
    predict = LinearPredictor(SHAPE, seed=7)
    x_x0, info_x0 = flowmo_guide(x_t, predict, cfg=FlowMoConfig(target="x0"))
    x_v, info_v = flowmo_guide(x_t, predict, cfg=FlowMoConfig(target="velocity"))
    assert info_x0["loss_before"] != info_v["loss_before"]
    assert not torch.equal(x_x0, x_v)


def test_predictions_before_the_update_are_returned() -> None:
    x_t = _randn(SHAPE, seed=8)
    predict = LinearPredictor(SHAPE, seed=8)
    _, info = flowmo_guide(x_t, predict, cfg=FlowMoConfig())
    flow_pred, x0_pred = predict(x_t)
    assert torch.allclose(info["x0_pred_before"], x0_pred) and torch.allclose(info["flow_pred_before"], flow_pred)
    assert not info["x0_pred_before"].requires_grad


def test_update_keeps_dtype_and_is_computed_in_fp32() -> None:
    x_t = _randn(SHAPE, seed=9).to(torch.bfloat16)
    predict = LinearPredictor(SHAPE, seed=9)

    def predict_bf16(x: Tensor) -> tuple[Tensor, Tensor]:
        assert x.dtype == torch.float32
        flow_pred, x0_pred = predict(x)
        return flow_pred.to(torch.bfloat16), x0_pred.to(torch.bfloat16)

    x_new, info = flowmo_guide(x_t, predict_bf16, cfg=FlowMoConfig(lr=0.05))
    assert x_new.dtype == torch.bfloat16 and x_new.shape == x_t.shape
    assert 0.0 < info["changed_fraction"] <= 1.0


def test_x0_from_flow_inverts_the_wan_flow_convention() -> None:
    x0, noise, sigma = _randn(SHAPE, seed=10), _randn(SHAPE, seed=11), 0.7
    x_t = (1 - sigma) * x0 + sigma * noise
    assert torch.allclose(x0_from_flow(x_t, noise - x0, sigma), x0, atol=1e-6)


def test_only_the_first_steps_of_the_first_batch_are_guided() -> None:
    cfg = FlowMoConfig(steps=2)
    assert is_guided_step(cfg, batch_index=0, step_index=0)
    assert is_guided_step(cfg, batch_index=0, step_index=1)
    assert not is_guided_step(cfg, batch_index=0, step_index=2)
    assert not is_guided_step(cfg, batch_index=1, step_index=0)
    assert not is_guided_step(FlowMoConfig(enabled=False), batch_index=0, step_index=0)


def test_guide_rejects_a_single_frame_block() -> None:
    with pytest.raises(ValueError, match="F >= 2"):
        flowmo_guide(torch.zeros(1, 1, 4, 3, 3), lambda x: (x, x), cfg=FlowMoConfig())


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("steps", -1, ValueError),
        ("target", "eps", ValueError),
        ("lr", 0.0, ValueError),
        ("iterations", 0, ValueError),
        ("optimizer", "sgd", ValueError),
        ("steps", 1.5, TypeError),
        ("enabled", "yes", TypeError),
    ],
)
def test_config_rejects_bad_values_naming_the_key(key: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"init.{key}"):
        FlowMoConfig(**{key: value})


def test_config_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="init.step"):
        FlowMoConfig.from_mapping({"step": 1})


def test_yaml_groups_match_the_config_dataclass() -> None:
    flowmo = FlowMoConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "flowmo.yaml")))
    none = FlowMoConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "none.yaml")))
    assert flowmo == FlowMoConfig()
    assert none == FlowMoConfig(enabled=False)
