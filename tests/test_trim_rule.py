"""The TokenTrim rule (arXiv 2602.00268) on synthetic batches [F, N, c]: latent summaries, per-token drift, the
unstable set S_t = top-pN drifts, the severity D_t, the adaptive threshold mu + lam*sigma over accepted batches,
warm-up and the knobs around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokentrim.trim import TokenTrim, TokenTrimConfig
from tokentrim.trim import drift as drift_ops
from tokentrim.trim.stats import RunningStats

FRAMES, TOKENS, CHANNELS = 3, 1560, 64  # a Wan block: 3 latent frames x 1560 tokens x (16 channels * 2 * 2)
SPIKE_BATCH = 7


class Stream:
    """Batches that wander around a fixed scene, each [F, N, c]. The wander size cycles over three levels, so the
    background severity has a real spread (a constant one would make sigma ~ 0 and any rise a trigger)."""

    def __init__(self, seed: int = 0, jitter: tuple[float, ...] = (0.03, 0.05, 0.07)):
        self.generator = torch.Generator().manual_seed(seed)
        self.scene = torch.randn(TOKENS, CHANNELS, generator=self.generator)  # [N, c]
        self.jitter = jitter
        self.drawn = 0

    def batch(self) -> torch.Tensor:
        noise = torch.randn(FRAMES, TOKENS, CHANNELS, generator=self.generator)
        self.drawn += 1
        return self.scene[None] + self.jitter[self.drawn % len(self.jitter)] * noise  # [F, N, c]


def planted_tokens(seed: int = 1, k: int = 156) -> torch.Tensor:
    return torch.randperm(TOKENS, generator=torch.Generator().manual_seed(seed))[:k]


def with_spike(batch: torch.Tensor, tokens: torch.Tensor, size: float = 3.0) -> torch.Tensor:
    spiked = batch.clone()
    spiked[:, tokens] += size  # a large change at known token positions, every frame and channel
    return spiked


def roll(trim: TokenTrim, stream: Stream, num_batches: int, spikes: dict[int, torch.Tensor] | None = None):
    """Drive the rule as a pipeline does: decide; on a trigger regenerate (a clean batch) and retest; accept.
    Returns [(first decision, accepted decision)] per batch."""
    spikes = spikes or {}
    log = []
    for t in range(1, num_batches + 1):
        batch = stream.batch()
        if t in spikes:
            batch = with_spike(batch, spikes[t])
        first = decision = trim.decide(batch)
        if decision.should_prune:
            decision = trim.retest(stream.batch())  # the regenerated batch, conditioned on the pruned cache
        trim.accept(decision)
        log.append((first, decision))
    return log


def test_p_0_1_of_1560_tokens_prunes_156():
    assert drift_ops.num_unstable(0.1, 1560) == 156
    trim = TokenTrim(TokenTrimConfig(p=0.1))
    stream = Stream()
    trim.accept(trim.decide(stream.batch()))
    assert trim.decide(stream.batch()).unstable.shape == (156,)


def test_planted_spike_triggers_exactly_once_and_prunes_exactly_the_planted_tokens():
    planted = planted_tokens()
    trim = TokenTrim(TokenTrimConfig())  # paper defaults: p=0.1, lam=2, warm-up 2, R=1
    log = roll(trim, Stream(), 12, spikes={SPIKE_BATCH: planted})
    triggered = [first.t for first, _ in log if first.should_prune]
    assert triggered == [SPIKE_BATCH]
    unstable = log[SPIKE_BATCH - 1][0].unstable
    assert sorted(unstable.tolist()) == sorted(planted.tolist())


def test_warmup_batches_never_trigger():
    planted = planted_tokens()
    spikes = {3: planted, 4: planted}
    log = roll(TokenTrim(TokenTrimConfig(warmup=4, min_history=1)), Stream(), 4, spikes=spikes)
    for first, _ in log:
        assert first.is_warmup and not first.is_tested and not first.should_prune
    assert log[2][0].values["D"] > 10 * log[1][0].values["D"]  # batch 3 really spiked
    log = roll(TokenTrim(TokenTrimConfig(warmup=2, min_history=1)), Stream(), 4, spikes=spikes)
    assert [first.should_prune for first, _ in log] == [False, False, True, True]  # same stream, shorter warm-up


def test_stats_update_only_on_accepted_batches():
    """After a trigger, the regenerated batch's D enters mu/sigma, not the rejected one; Z_{t-1} is the accepted one."""
    trim = TokenTrim(TokenTrimConfig())
    log = roll(trim, Stream(), 10, spikes={SPIKE_BATCH: planted_tokens()})
    first, accepted = log[SPIKE_BATCH - 1]
    assert first.should_prune and accepted is not first
    accepted_d = [acc.values["D"] for _, acc in log if acc.values["D"] is not None]
    assert first.values["D"] not in accepted_d
    assert trim.stats.count == len(accepted_d) == 9
    assert trim.stats.mean.item() == pytest.approx(np.mean(accepted_d), rel=1e-5)
    assert trim.stats.std.item() == pytest.approx(np.std(accepted_d), rel=1e-4)
    assert first.values["D"] > 10 * max(accepted_d)
    # the statistics the next batch is tested against exclude the rejected severity
    next_decision = log[SPIKE_BATCH][0]
    assert next_decision.values["mu"] == pytest.approx(np.mean(accepted_d[: SPIKE_BATCH - 1]), rel=1e-5)


def test_decide_does_not_change_state_until_accept():
    trim = TokenTrim(TokenTrimConfig())
    stream = Stream()
    roll(trim, stream, 4)
    t, count, prev = trim.t, trim.stats.count, trim.prev_summary
    trim.decide(stream.batch())
    trim.retest(stream.batch())
    assert (trim.t, trim.stats.count) == (t, count) and trim.prev_summary is prev
    with pytest.raises(RuntimeError, match="expected"):
        trim.accept(roll(TokenTrim(TokenTrimConfig()), Stream(), 1)[0][1])  # a batch-1 decision at batch 5


@pytest.mark.parametrize("lam", [1e12, float("inf")])
def test_lambda_to_infinity_never_triggers(lam: float):
    trim = TokenTrim(TokenTrimConfig(lam=lam, warmup=0))
    log = roll(trim, Stream(), 10, spikes={5: planted_tokens(), SPIKE_BATCH: planted_tokens(2)})
    assert not any(first.should_prune for first, _ in log)
    assert sum(first.is_tested for first, _ in log) == 7  # batches 4..10 were tested


def test_no_test_before_min_history_accepted_severities():
    """Batch 1 has no D; batch 2's D is the first in the statistics; with min_history=2 batch 4 is the first tested."""
    spikes = {t: planted_tokens(t) for t in range(2, 7)}  # every batch would trigger with lam=0 once tested
    log = roll(TokenTrim(TokenTrimConfig(lam=0.0, warmup=0, min_history=2)), Stream(), 6, spikes=dict(spikes))
    assert [first.is_tested for first, _ in log] == [False, False, False, True, True, True]
    assert [first.values["mu"] is None for first, _ in log] == [True, True, True, False, False, False]
    log = roll(TokenTrim(TokenTrimConfig(lam=0.0, warmup=0, min_history=1)), Stream(), 6, spikes=dict(spikes))
    assert [first.is_tested for first, _ in log] == [False, False, True, True, True, True]


def test_welford_mean_and_std_equal_numpy_population_mean_and_std():
    values = np.random.default_rng(0).gamma(2.0, 3.0, size=200)
    stats = RunningStats()
    assert stats.std is None
    for value in values:
        stats.push(torch.tensor(value, dtype=torch.float64))
    assert stats.count == 200
    assert stats.mean.item() == pytest.approx(values.mean(), rel=1e-6)
    assert stats.std.item() == pytest.approx(values.std(ddof=0), rel=1e-5)
    copy = stats.snapshot()
    stats.push(torch.tensor(1e3))
    assert copy.count == 200 and copy.mean.item() == pytest.approx(values.mean(), rel=1e-6)


def uniform_drift_trim(cfg: TokenTrimConfig, history: list[float], drift: float) -> tuple[TokenTrim, torch.Tensor]:
    """A rule at batch len(history)+2 whose statistics hold `history`, and a batch with d_i = drift for every token."""
    trim = TokenTrim(cfg)
    trim.t = len(history) + 1
    for value in history:
        trim.stats.push(torch.tensor(value))
    trim.prev_summary = torch.zeros(TOKENS, CHANNELS)
    batch = torch.zeros(FRAMES, TOKENS, CHANNELS)
    batch[..., 0] = drift  # ||Z_t(i) - 0|| = drift for every i
    return trim, batch


def test_sigma_floor_bounds_sigma_below():
    history = [1.0, 1.0, 1.0]  # sigma = 0: any rise would trigger
    trim, batch = uniform_drift_trim(TokenTrimConfig(lam=1.0, warmup=0), history, drift=1.05)
    decision = trim.decide(batch)
    assert decision.values["sigma"] == 0.0 and decision.should_prune
    trim, batch = uniform_drift_trim(TokenTrimConfig(lam=1.0, warmup=0, sigma_floor=0.1), history, drift=1.05)
    decision = trim.decide(batch)
    assert decision.values["sigma"] == pytest.approx(0.1)
    assert decision.values["threshold"] == pytest.approx(1.1)
    assert not decision.should_prune


def test_severity_is_the_mean_or_the_max_of_the_top_k_drifts():
    drift = torch.arange(10, dtype=torch.float32)  # [N=10]
    unstable = drift_ops.unstable_set(drift, 3)
    assert unstable.tolist() == [9, 8, 7]  # largest first
    assert drift_ops.severity(drift, unstable, "mean").item() == pytest.approx(8.0)
    assert drift_ops.severity(drift, unstable, "max").item() == 9.0
    stream = Stream()
    first, second = stream.batch(), with_spike(stream.batch(), planted_tokens())
    severities = {}
    for how in ("mean", "max"):
        trim = TokenTrim(TokenTrimConfig(severity=how))
        trim.accept(trim.decide(first))
        decision = trim.decide(second)
        severities[how] = decision.values["D"]
        assert decision.severity.item() == pytest.approx(getattr(decision.drift[decision.unstable], how)().item())
    assert severities["max"] > severities["mean"]


def test_latent_summary_and_l2_drift_follow_the_paper():
    stream = Stream()
    current, previous = stream.batch(), stream.batch()
    summary = drift_ops.latent_summary(current)
    torch.testing.assert_close(summary, current.mean(dim=0))  # Z_t(i) = (1/F) sum_f z_{t,f}(i)
    drift = drift_ops.token_drift(summary, drift_ops.latent_summary(previous))
    expected = torch.sqrt(((summary - previous.mean(dim=0)) ** 2).sum(dim=-1))  # ||Z_t(i) - Z_{t-1}(i)||_2
    torch.testing.assert_close(drift, expected)


def test_cosine_metric_is_one_minus_cosine_and_ignores_scale():
    generator = torch.Generator().manual_seed(0)
    current, previous = torch.randn(2, TOKENS, CHANNELS, generator=generator)
    drift = drift_ops.token_drift(current, previous, "cosine")
    expected = 1 - (current * previous).sum(-1) / (current.norm(dim=-1) * previous.norm(dim=-1))
    torch.testing.assert_close(drift, expected, rtol=1e-5, atol=1e-6)
    assert drift_ops.token_drift(2.0 * previous, previous, "cosine").abs().max() < 1e-6
    assert drift_ops.token_drift(2.0 * previous, previous, "l2").min() > 1.0
    with pytest.raises(ValueError, match="drift metric"):
        drift_ops.token_drift(current, previous, "l1")


def test_dynamic_p_scales_k_by_severity_over_threshold():
    history = [1.0, 2.0, 1.0, 2.0]  # mu = 1.5, sigma = 0.5 -> threshold = 1.5 + 2 * 0.5 = 2.5
    trim, batch = uniform_drift_trim(TokenTrimConfig(warmup=0, dynamic_p=True, dynamic_p_max=0.5), history, drift=3.0)
    batch[:, :780, 0] = 3.5  # half the tokens drift more: D = 3.5 (mean of the top 10 %)
    decision = trim.decide(batch)
    assert decision.should_prune and decision.values["threshold"] == pytest.approx(2.5)
    assert decision.unstable.numel() == round(0.1 * 3.5 / 2.5 * TOKENS) == 218  # p * D / threshold
    assert set(decision.unstable.tolist()) <= set(range(780))
    trim, batch = uniform_drift_trim(TokenTrimConfig(warmup=0, dynamic_p=True, dynamic_p_max=0.12), history, drift=30.0)
    assert trim.decide(batch).unstable.numel() == round(0.12 * TOKENS)  # capped at dynamic_p_max
    trim, batch = uniform_drift_trim(TokenTrimConfig(warmup=0), history, drift=3.0)
    assert trim.decide(batch).unstable.numel() == 156  # off: k = pN


def test_disabled_rule_measures_drift_but_never_prunes():
    trim = TokenTrim(TokenTrimConfig(enabled=False))
    log = roll(trim, Stream(), 10, spikes={SPIKE_BATCH: planted_tokens()})
    spiked = log[SPIKE_BATCH - 1][0]
    assert spiked.is_tested and not spiked.should_prune
    assert spiked.values["D"] > spiked.values["threshold"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("p", 0.0), ("p", 1.5), ("p", -0.1), ("lam", -1.0), ("warmup", -1), ("max_retries", -1), ("min_history", 0),
        ("sigma_floor", -0.5), ("severity", "median"), ("drift_metric", "l1"), ("scope", "sink"),
        ("regen_noise", "other"), ("drift_source", "middle"),
    ],
)
def test_bad_config_raises_value_error_naming_the_key(key: str, value):
    with pytest.raises(ValueError, match=rf"^trim\.{key} "):
        TokenTrimConfig(**{key: value})


def test_dynamic_p_max_below_p_is_rejected():
    with pytest.raises(ValueError, match=r"^trim\.dynamic_p_max "):
        TokenTrimConfig(p=0.2, dynamic_p=True, dynamic_p_max=0.1)


def test_p_equal_one_is_allowed_and_selects_every_token():
    assert drift_ops.num_unstable(1.0, TOKENS) == TOKENS
    assert drift_ops.num_unstable(1e-6, TOKENS) == 1  # at least one token
