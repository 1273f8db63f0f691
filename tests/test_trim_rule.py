"""The TokenTrim rule (arXiv 2602.00268) on synthetic batches [F, N, c]: latent summaries, per-token drift, the
unstable set S_t = top-pN drifts, the severity D_t, the adaptive threshold mu + lam*sigma over accepted batches,
warm-up and the knobs around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokentrim.trim import TokenTrim, TokenTrimConfig, experiment_key
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
    log = roll(TokenTrim(TokenTrimConfig(warmup=3)), Stream(), 4, spikes=spikes)
    for first, _ in log:
        assert first.is_warmup and not first.is_tested and not first.should_prune
    assert log[2][0].values["D"] > 10 * log[1][0].values["D"]  # batch 3 really spiked
    log = roll(TokenTrim(TokenTrimConfig(warmup=1)), Stream(), 4, spikes=spikes)
    assert [first.should_prune for first, _ in log] == [False, False, True, True]  # same stream, shorter warm-up


@pytest.mark.parametrize("warmup", [0, 1, 2, 3, 4])
def test_warmup_w_makes_batch_w_plus_2_the_first_tested_against_exactly_w_severities(warmup: int):
    """Batch 1 has no D; the first W severities (batches 2..W+1) only feed mu/sigma; batch W+2 is tested first."""
    trim = TokenTrim(TokenTrimConfig(warmup=warmup, lam=float("inf")))  # tests, never prunes: the stream stays put
    log = roll(trim, Stream(), 8)
    tested = [first.t for first, _ in log if first.is_tested]
    assert tested == list(range(warmup + 2, 9))
    first_tested = log[warmup + 1][0]
    d_before = [acc.values["D"] for _, acc in log[1 : warmup + 1]]  # D_2 .. D_{W+1}
    assert len(d_before) == warmup
    assert first_tested.values["mu"] == pytest.approx(float(np.mean(d_before)) if d_before else 0.0, rel=1e-5)
    assert first_tested.values["sigma"] == pytest.approx(float(np.std(d_before)) if d_before else 0.0, rel=1e-4, abs=1e-7)
    assert [first.is_warmup for first, _ in log] == [warmup > 0] + [t < warmup + 2 for t in range(2, 9)]
    assert all(first.values["threshold"] is None for first, _ in log if not first.is_tested)


def test_every_warmup_of_the_ablation_gives_a_different_first_test():
    first_tested = []
    for warmup in (0, 1, 2, 3):
        log = roll(TokenTrim(TokenTrimConfig(warmup=warmup)), Stream(), 8)
        first_tested.append(next(first.t for first, _ in log if first.is_tested))
    assert first_tested == [2, 3, 4, 5]


def test_no_warmup_prunes_on_empty_statistics_and_warmup_1_on_sigma_zero():
    """Degenerate statistics are used as they are: the premature pruning the paper's warm-up ablation measures."""
    log = roll(TokenTrim(TokenTrimConfig(warmup=0)), Stream(), 3)  # no spike anywhere
    batch2 = log[1][0]
    assert batch2.is_tested and (batch2.values["mu"], batch2.values["sigma"], batch2.values["threshold"]) == (0.0, 0.0, 0.0)
    assert batch2.should_prune  # D_2 > 0 = mu + lam * sigma of no values
    for seed in range(6):  # W = 1: batch 3 against sigma = 0 prunes iff D_3 > D_2
        log = roll(TokenTrim(TokenTrimConfig(warmup=1)), Stream(seed, jitter=(0.03, 0.05, 0.04)), 3)
        d2, batch3 = log[1][0].values["D"], log[2][0]
        assert batch3.is_tested and batch3.values["sigma"] == 0.0 and batch3.values["mu"] == pytest.approx(d2)
        assert batch3.should_prune == (batch3.values["D"] > d2)
    log = roll(TokenTrim(TokenTrimConfig(warmup=0, sigma_floor=0.5)), Stream(), 2)
    assert log[1][0].should_prune  # sigma_floor * mu is 0 too with no statistics


def old_rule_triggers(log, warmup: int = 2, min_history: int = 2, lam: float = 2.0) -> list[int]:
    """The rule before issue 19, re-derived from a log's severities with numpy: tested iff t > warmup and at least
    min_history accepted severities; trigger iff D_t > mean + lam * population std of the accepted D of 2..t-1."""
    accepted, fired = [], []
    for first, final in log:
        if first.values["D"] is None:
            continue
        if first.t > warmup and len(accepted) >= min_history:
            if first.values["D"] > np.mean(accepted) + lam * np.std(accepted):
                fired.append(first.t)
        accepted.append(final.values["D"])
    return fired


@pytest.mark.parametrize("seed", range(4))
def test_paper_defaults_keep_the_trigger_set_of_the_rule_before_issue_19(seed: int):
    """W = 2 with the severity-counted warm-up tests from batch 4 against 2 values, as warm-up 2 + min_history 2 did."""
    spikes = {t: planted_tokens(seed * 10 + t) for t in (4, 7, 9) if (t + seed) % 2 == 0 or t == 7}
    log = roll(TokenTrim(TokenTrimConfig()), Stream(seed), 14, spikes=spikes)
    fired = [first.t for first, _ in log if first.should_prune]
    assert 7 in fired
    assert fired == old_rule_triggers(log)
    assert min(first.t for first, _ in log if first.is_tested) == 4


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
    trim = TokenTrim(TokenTrimConfig(lam=lam, warmup=2))  # sigma > 0 from 2 values on (warm-up 0 tests against 0)
    log = roll(trim, Stream(), 10, spikes={5: planted_tokens(), SPIKE_BATCH: planted_tokens(2)})
    assert not any(first.should_prune for first, _ in log)
    assert sum(first.is_tested for first, _ in log) == 7  # batches 4..10 were tested


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
        ("p", 0.0), ("p", 1.5), ("p", -0.1), ("lam", -1.0), ("warmup", -1), ("warmup", 1.5), ("warmup", True), ("max_retries", -1), ("max_retries", 0.5),
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


def test_experiment_key_drops_only_knobs_that_cannot_matter():
    paper = TokenTrimConfig()
    key = experiment_key
    assert len({key(TokenTrimConfig(warmup=w)) for w in (0, 1, 2, 3, 4)}) == 5  # every warm-up is its own experiment
    assert key(TokenTrimConfig(lam=2)) == key(paper)  # 2 == 2.0
    # disabled / lam = inf: a monitor; lam, warm-up and the pruning knobs cannot matter, the measurement knobs do
    monitors = [TokenTrimConfig(enabled=False), TokenTrimConfig(enabled=False, lam=0.5, warmup=0, scope="all"),
                TokenTrimConfig(lam=float("inf"), max_retries=3, retest=True)]
    assert len({key(c) for c in monitors}) == 1
    assert key(TokenTrimConfig(enabled=False, p=0.2)) != key(monitors[0])
    assert key(TokenTrimConfig(enabled=False, drift_source="first_step")) != key(monitors[0])
    assert key(paper) != key(monitors[0])
    # knobs that only act under another knob
    assert key(TokenTrimConfig(dynamic_p_max=0.5)) == key(paper)
    assert key(TokenTrimConfig(dynamic_p=True, dynamic_p_max=0.5)) != key(TokenTrimConfig(dynamic_p=True))
    assert key(TokenTrimConfig(retest=True)) == key(paper)  # R = 1
    assert key(TokenTrimConfig(max_retries=2, retest=True)) != key(TokenTrimConfig(max_retries=2))
    assert key(TokenTrimConfig(lam=0.0, sigma_floor=0.3)) == key(TokenTrimConfig(lam=0.0))
    assert key(TokenTrimConfig(sigma_floor=0.3)) != key(paper)
    # R = 0 logs triggers but never prunes: where it would prune cannot matter, when it would trigger can
    assert key(TokenTrimConfig(max_retries=0, scope="all")) == key(TokenTrimConfig(max_retries=0))
    assert key(TokenTrimConfig(max_retries=0, lam=1.0)) != key(TokenTrimConfig(max_retries=0))
    # a warm-up that leaves no tested batch in a video of 5 batches is a monitor there
    assert key(TokenTrimConfig(warmup=3), num_batches=5) != key(TokenTrimConfig(warmup=4), num_batches=5)
    assert key(TokenTrimConfig(warmup=4), num_batches=5) == key(TokenTrimConfig(warmup=9), num_batches=5)
    assert key(TokenTrimConfig(warmup=4), num_batches=5) == key(TokenTrimConfig(enabled=False), num_batches=5)


def test_experiment_key_matches_what_the_rule_does():
    """Configs with one key give the same measurements and decisions on the same stream; warm-ups 0 and 2 do not."""
    def decisions(cfg: TokenTrimConfig) -> list[tuple]:
        log = roll(TokenTrim(cfg), Stream(3), 9, spikes={6: planted_tokens()})
        return [(first.values["D"], first.should_prune, tuple(first.unstable.tolist()) if first.unstable is not None
                 else None) for first, _ in log]

    same = [TokenTrimConfig(enabled=False, lam=0.0), TokenTrimConfig(lam=float("inf"), warmup=0, dynamic_p=True)]
    assert experiment_key(same[0]) == experiment_key(same[1])
    assert [d[:2] for d in decisions(same[0])] == [d[:2] for d in decisions(same[1])]
    assert [d[1] for d in decisions(TokenTrimConfig(warmup=0))][:2] == [False, True]  # prunes on no statistics
    assert [d[1] for d in decisions(TokenTrimConfig(warmup=2))][:4] == [False] * 4
