"""Monitor-only signal replay (`tokentrim.report.signals`) and the `drift_reference` knob of the rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokentrim.models.wan_causal import patchify_tokens
from tokentrim.report.detector import DetectorConfig
from tokentrim.report.signals import block_tokens, replay, signal_config
from tokentrim.trim import TokenTrim, TokenTrimConfig


def _latents(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(15, 4, 8, 8, generator=g) * 0.3  # [F, C, H, W]: a random walk over 15 latent frames
    return steps.cumsum(0)


def _top_mean(d: torch.Tensor, p: float) -> float:
    k = max(1, round(p * d.numel()))
    return float(d.topk(k).values.mean())


def test_block_tokens_follow_the_start_frames_and_the_token_grid():
    lat = _latents()
    blocks = block_tokens(lat, [0, 3, 6, 9, 12], [4, 4])
    assert [b.shape for b in blocks] == [(3, 16, 16)] * 5
    assert torch.equal(blocks[1], patchify_tokens(lat[3:6], (2, 2)))
    with pytest.raises(ValueError, match="token grid"):
        block_tokens(lat, [0, 3], [3, 3])


def test_replayed_l2_and_first_reference_match_the_formulas():
    lat = _latents(1)
    blocks = block_tokens(lat, [0, 3, 6, 9, 12], [4, 4])
    summaries = [b.mean(0) for b in blocks]  # Z_t [N, c]
    l2 = replay(blocks, signal_config({"p": 0.25}, {}, "l2"))
    first = replay(blocks, signal_config({"p": 0.25}, {"drift_reference": "first"}, "l2_from_first"))
    assert np.isnan(l2["D"][0]) and np.isnan(first["D"][0])
    for t in range(1, 5):
        assert l2["D"][t] == pytest.approx(_top_mean((summaries[t] - summaries[t - 1]).norm(dim=-1), 0.25), rel=1e-5)
        assert first["D"][t] == pytest.approx(_top_mean((summaries[t] - summaries[0]).norm(dim=-1), 0.25), rel=1e-5)
    assert first["D"][1] == pytest.approx(l2["D"][1])  # batch 2: the previous batch is the first
    # warm-up 2: batches 4 and 5 are tested; z and fired follow mu and sigma of the accepted D before them
    d = l2["D"]
    mu, sigma = d[1:3].mean(), d[1:3].std()
    assert np.isnan(l2["z"][:3]).all() and l2["z"][3] == pytest.approx((d[3] - mu) / sigma, rel=1e-4)
    assert l2["fired"][3] == (d[3] > mu + 2.0 * sigma)


def test_drift_reference_first_in_the_rule_compares_with_the_first_accepted_batch():
    rule = TokenTrim(TokenTrimConfig(drift_reference="first", warmup=0, enabled=False))
    base = torch.zeros(1, 4, 2)
    for t, shift in enumerate([0.0, 1.0, 3.0], start=1):
        decision = rule.decide(base + shift)
        if t > 1:
            assert decision.values["D"] == pytest.approx(shift * 2 ** 0.5)  # ||(shift, shift)|| from batch 1
        rule.accept(decision)
    with pytest.raises(ValueError, match="trim.drift_reference"):
        TokenTrimConfig(drift_reference="sink")


def test_signal_configs_refuse_knobs_a_replay_cannot_change():
    with pytest.raises(ValueError, match="report.detector.signals.x has keys \\['scope'\\]"):
        signal_config({}, {"scope": "all"}, "x")
    with pytest.raises(ValueError, match="report.detector.signals.y: trim.drift_metric"):
        signal_config({}, {"drift_metric": "l1"}, "y")
    with pytest.raises(ValueError, match="report.detector.signals"):
        DetectorConfig(signals={"bad": {"p": 2.0}})
    assert signal_config({"p": 0.2, "scope": "all", "enabled": True}, {}, "l2").enabled is False


def _validate(*overrides: str) -> None:
    from hydra import compose, initialize_config_dir

    from tokentrim import cli

    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    cli.validate(cfg, command="score")


def test_experiment_detectors_composes_and_a_bad_signal_is_one_line():
    from tokentrim.config_schema import ConfigError

    _validate("experiment=detectors", "backbone=tiny_drift")
    _validate("experiment=detectors", "trim=none", "trim.drift_source=first_step", "variant=monitor_first_step",
              "baseline=false")
    with pytest.raises(ConfigError) as err:
        _validate("+report.detector.signals.x={p: 3.0}")
    assert str(err.value) == "report.detector.signals.x: trim.p must be in (0, 1], got 3.0"
    with pytest.raises(ConfigError, match="report.detector.permutations must be >= 0"):
        _validate("report.detector.permutations=-1")
