"""Self Forcing rollout with TokenTrim (arXiv 2602.00268) at pipeline level: regeneration budget R, what a trigger
prunes, noise replay, determinism, events, the first-step drift source and long rollouts with a sink.

Tiny random model (2 layers, dim 64), 8x8 latents = 16 tokens per frame, blocks of 3 frames, 4 steps.
"""

from __future__ import annotations

import pytest
import torch

from tokentrim.caches import KVCache
from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline
from tokentrim.trim import Decision, TokenTrim, TokenTrimConfig

TINY = dict(text_len=8, in_dim=16, dim=64, ffn_dim=128, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2)
HEIGHT = WIDTH = 8
TOKENS = 16  # per frame
STEPS = 4
P = 0.25  # k = 4 of 16 tokens
K = 4
EVENT_KEYS = {  # events/<video>.jsonl (common brief), less "video" which the caller adds
    "t", "D", "mu", "sigma", "threshold", "is_warmup", "triggered", "retries", "num_pruned_tokens", "num_pruned_entries",
    "pruned_indices",
    "decision_ms", "drift",
}


def tiny_model(seed: int = 0) -> CausalWanModel:
    """Initialised like the parity fixtures (biases N(0, .05), norm weights 1 + N(0, .1), rest N(0, .1))."""
    model = CausalWanModel(**TINY)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            draw = torch.randn(param.shape, generator=generator)
            param.copy_(0.05 * draw if name.endswith(".bias") else (1 + 0.1 * draw if "norm" in name else 0.1 * draw))
    return model


MODEL = tiny_model()
CONTEXT_KV = MODEL.encode_context(torch.randn(1, 5, TINY["text_dim"], generator=torch.Generator().manual_seed(1)))


class ForcedTrim(TokenTrim):
    """TokenTrim whose decisions on batches `trigger_at` are forced to trigger (at most `budget` times)."""

    def __init__(self, cfg: TokenTrimConfig, trigger_at: set[int], budget: int = 10**9):
        self.trigger_at, self.budget = trigger_at, budget
        super().__init__(cfg)

    def decide(self, block_tokens: torch.Tensor) -> Decision:
        decision = super().decide(block_tokens)
        if decision.t in self.trigger_at and decision.unstable is not None and self.budget > 0:
            decision.should_prune = True
            self.budget -= 1
        return decision


class Recorder:
    """Counts model calls and keeps the cache the pipeline used (seen through the forward's keyword args)."""

    def __init__(self, model: CausalWanModel, max_frames: int | None = None):
        self.calls, self.cache, self.max_frames = 0, None, max_frames
        self.handle = model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output) -> None:
        self.calls += 1
        cache: KVCache | None = kwargs.get("cache")
        if cache is not None:
            self.cache = cache
            if self.max_frames is not None:  # committed frames + the staged block fit the window
                assert len(cache.committed_frames()) + cache.staged // cache.tokens_per_frame <= self.max_frames
                assert cache.length + cache.staged <= cache.capacity


def run(
    trim: TokenTrim | None,
    *,
    num_blocks: int = 3,
    max_frames: int = 21,
    sink_frames: int = 0,
    seed: int = 0,
    check_window: bool = False,
    renoise_seed: int | None = None,
    **sampler,
):
    """One video; returns (latents, events, recorder, number of noise draws). `renoise_seed`: draw the steps'
    re-noising from its own generator (default: the initial noise's)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 3 * num_blocks, 16, HEIGHT, WIDTH, generator=generator)
    if renoise_seed is not None:
        generator = torch.Generator().manual_seed(renoise_seed)
    draws = [0]

    def noise_source(shape: tuple[int, ...]) -> torch.Tensor:
        draws[0] += 1
        return torch.randn(shape, generator=generator)

    config = SelfForcingConfig(max_frames=max_frames, sink_frames=sink_frames, **sampler)
    pipe = SelfForcingPipeline(MODEL, config, trim=trim)
    events: list[dict] = []
    recorder = Recorder(MODEL, max_frames if check_window else None)
    try:
        latents = pipe(noise, CONTEXT_KV, noise_source=noise_source, on_event=events.append)
    finally:
        recorder.handle.remove()
    return latents, events, recorder, draws[0]


def base_calls(num_blocks: int = 3) -> int:
    return STEPS * num_blocks + (num_blocks - 1)  # the last block is not committed


@pytest.mark.parametrize(
    ("max_retries", "retest", "budget", "expected_retries"),
    [(0, False, 10**9, 0), (1, False, 10**9, 1), (3, False, 10**9, 1), (3, True, 10**9, 3), (3, True, 2, 1 + 1)],
)
def test_R_bounds_retries(max_retries: int, retest: bool, budget: int, expected_retries: int):
    """R=0: no regeneration; R=1: exactly one; R=3 with retest: retry while the regenerated batch still triggers."""
    cfg = TokenTrimConfig(p=P, max_retries=max_retries, retest=retest)
    _, events, recorder, _ = run(ForcedTrim(cfg, trigger_at={2}, budget=budget))
    assert [e["retries"] for e in events] == [0, expected_retries, 0]
    assert [e["triggered"] for e in events] == [False, True, False]
    assert recorder.calls == base_calls() + STEPS * expected_retries


@pytest.mark.parametrize(
    ("scope", "pruned_frames"), [("all_but_sink", [3, 4, 5]), ("last_batch", [3, 4, 5]), ("all", [0, 1, 2, 3, 4, 5])]
)
def test_a_trigger_prunes_k_tokens_in_every_targeted_cached_frame(scope: str, pruned_frames: list[int]):
    """Batch 3 triggers with frames 0..5 cached and a 3-frame sink: k tokens go from each targeted frame, all layers."""
    cfg = TokenTrimConfig(p=P, scope=scope)
    _, events, recorder, _ = run(ForcedTrim(cfg, trigger_at={3}), num_blocks=4, sink_frames=3)
    event = events[2]
    assert event["triggered"] and event["retries"] == 1
    assert event["num_pruned_entries"] == K * len(pruned_frames)
    assert len(event["pruned_indices"]) == K == len(set(event["pruned_indices"]))
    assert [e["num_pruned_entries"] for e in events if e is not event] == [0, 0, 0]
    cache = recorder.cache  # final state: frames 0..8 committed, the last block (9..11) not
    assert cache.committed_frames() == list(range(9))
    assert cache.length == 9 * TOKENS - K * len(pruned_frames)
    frames, tokens = cache.positions()
    held = set(zip(frames.tolist(), tokens.tolist()))
    gone = {(f, i) for f in pruned_frames for i in event["pruned_indices"]}
    assert held == {(f, i) for f in range(9) for i in range(TOKENS)} - gone


def test_regen_noise_same_replays_the_same_noise():
    """A trigger whose pruning removes nothing (only sink frames cached) regenerates the identical batch."""
    reference, _, _, reference_draws = run(None, sink_frames=3, max_frames=9)
    cfg = TokenTrimConfig(p=P, regen_noise="same")
    latents, events, recorder, draws = run(ForcedTrim(cfg, trigger_at={2}), sink_frames=3, max_frames=9)
    assert events[1]["triggered"] and events[1]["retries"] == 1 and events[1]["num_pruned_entries"] == 0
    assert recorder.calls == base_calls() + STEPS  # it really regenerated
    assert draws == reference_draws
    assert torch.equal(latents, reference)

    cfg = TokenTrimConfig(p=P, regen_noise="fresh")
    fresh, _, _, fresh_draws = run(ForcedTrim(cfg, trigger_at={2}), sink_frames=3, max_frames=9)
    assert fresh_draws == reference_draws + STEPS  # new initial noise + 3 re-noise draws
    assert torch.equal(fresh[:, :3], reference[:, :3])
    assert not torch.allclose(fresh[:, 3:6], reference[:, 3:6])


def test_trim_disabled_is_bit_identical_to_no_trim():
    reference, no_events, reference_recorder, _ = run(None)
    cfg = TokenTrimConfig(enabled=False, lam=0.0, warmup=1)  # would trigger if enabled
    latents, events, recorder, _ = run(TokenTrim(cfg))
    assert torch.equal(latents, reference)
    assert no_events == [] and len(events) == 3
    assert events[2]["is_tested"] and not any(e["triggered"] for e in events)
    assert recorder.calls == reference_recorder.calls


def test_same_seed_gives_bit_identical_latents_and_events():
    def trim() -> TokenTrim:
        return TokenTrim(TokenTrimConfig(p=P, lam=0.0, warmup=1))  # real triggers, real pruning

    first, first_events, _, _ = run(trim(), num_blocks=5, max_frames=9, sink_frames=3)
    second, second_events, _, _ = run(trim(), num_blocks=5, max_frames=9, sink_frames=3)
    assert any(e["triggered"] for e in first_events)
    assert torch.equal(first, second)
    def without_timing(events: list[dict]) -> list[dict]:
        return [{key: value for key, value in e.items() if key != "decision_ms"} for e in events]

    assert without_timing(first_events) == without_timing(second_events)
    other, _, _, _ = run(trim(), num_blocks=5, max_frames=9, sink_frames=3, seed=1)
    assert not torch.allclose(other, first)


def test_events_have_the_documented_keys():
    _, events, _, _ = run(TokenTrim(TokenTrimConfig(p=P, warmup=1)))
    assert [e["t"] for e in events] == [1, 2, 3]
    for event in events:
        assert EVENT_KEYS <= set(event)
    assert [e["start_frame"] for e in events] == [0, 3, 6]
    first, second, third = events
    assert first["D"] is None and first["drift"] is None and first["mu"] is None and first["threshold"] is None
    assert second["D"] is not None and second["mu"] is None  # no statistics yet
    assert third["threshold"] is not None and len(third["drift"]) == TOKENS
    assert all(isinstance(v, float) for v in third["drift"])
    assert [e["is_warmup"] for e in events] == [True, True, False]  # warm-up 1: D_2 only feeds mu


def test_first_step_drift_source_aborts_after_one_step_on_a_trigger():
    """drift_source=first_step decides on the first step's x0: a trigger costs one step before the regeneration,
    an accepted batch finishes its remaining steps without recomputing the first."""
    cfg = TokenTrimConfig(p=P, drift_source="first_step")
    _, _, quiet, _ = run(ForcedTrim(cfg, trigger_at=set()))
    assert quiet.calls == base_calls()
    _, events, triggered, _ = run(ForcedTrim(cfg, trigger_at={2}))
    assert events[1]["triggered"] and events[1]["retries"] == 1
    assert triggered.calls == base_calls() + 1  # 1 aborted step + 4 regenerated steps instead of 4
    _, _, final_source, _ = run(ForcedTrim(TokenTrimConfig(p=P), trigger_at={2}))
    assert final_source.calls == base_calls() + STEPS


def test_first_step_drift_source_without_regeneration_equals_no_trim():
    """Resuming an accepted batch after its first step gives exactly the uninterrupted rollout (also when it
    triggered but R = 0)."""
    reference, _, _, _ = run(None)
    latents, _, _, _ = run(TokenTrim(TokenTrimConfig(p=P, drift_source="first_step", enabled=False)))
    assert torch.equal(latents, reference)
    cfg = TokenTrimConfig(p=P, drift_source="first_step", max_retries=0)
    latents, events, recorder, _ = run(ForcedTrim(cfg, trigger_at={2}))
    assert events[1]["triggered"] and events[1]["retries"] == 0
    assert recorder.calls == base_calls()
    assert torch.equal(latents, reference)


def test_renoise_eta_zero_is_deterministic_euler_and_eta_mixes_variance_preserving():
    """renoise_eta = 0 re-noises with the model's own noise estimate (the flow ODE's Euler steps): the rollout
    ignores the fresh draws, and the first-step drift source resumes it exactly. eta = 1 (Self Forcing) uses them."""
    euler, _, _, _ = run(None, renoise_eta=0.0)
    assert torch.equal(run(None, renoise_eta=0.0, renoise_seed=7)[0], euler)
    assert not torch.equal(run(None, renoise_seed=7)[0], run(None)[0])
    assert not torch.equal(run(None, renoise_eta=0.5, renoise_seed=7)[0], run(None, renoise_eta=0.5)[0])
    cfg = TokenTrimConfig(p=P, drift_source="first_step", max_retries=0)
    latents, events, _, _ = run(ForcedTrim(cfg, trigger_at={2}), renoise_eta=0.0)
    assert events[1]["triggered"] and torch.equal(latents, euler)

    pipe = SelfForcingPipeline(MODEL, SelfForcingConfig(renoise_eta=0.6))
    generator = torch.Generator().manual_seed(2)
    x0, eps, fresh = (torch.randn(1, 3, 16, HEIGHT, WIDTH, generator=generator, dtype=torch.float64) for _ in range(3))
    x_t = 0.3 * x0 + 0.7 * eps  # sigma = 0.7
    torch.testing.assert_close(pipe._next_noise(fresh, x_t, x0, 0.7), 0.6 * fresh + 0.8 * eps)
    pipe.config.renoise_eta = 0.0
    torch.testing.assert_close(pipe._next_noise(fresh, x_t, x0, 0.7), eps)
    with pytest.raises(ValueError, match=r"sampler.renoise_eta must be in \[0, 1\]"):
        SelfForcingConfig(renoise_eta=1.5)


def test_denoising_steps_keep_fractional_timesteps_unwarped_and_must_be_integers_warped():
    """An unwarped list is the timesteps themselves: 937.5 stays 937.5 (it was once truncated to 937); a warped list
    indexes the 1000-entry schedule, so a fraction there is an error (Self Forcing and Rolling Forcing alike)."""
    from tokentrim.pipelines.rolling_forcing import RollingForcingConfig

    unwarped = SelfForcingConfig(denoising_steps=[1000, 937.5, 833.3333, 625.0], warp_denoising_step=False)
    assert unwarped.denoising_steps == (1000, 937.5, 833.3333, 625)
    assert SelfForcingPipeline(MODEL, unwarped).timesteps == [1000.0, 937.5, 833.3333, 625.0]
    assert SelfForcingConfig(denoising_steps=[1000.0, 750.0]).denoising_steps == (1000, 750)
    for config_cls in (SelfForcingConfig, RollingForcingConfig):
        with pytest.raises(ValueError, match=r"must be integers when warp_denoising_step is on .* got \[1000, 937.5\]"):
            config_cls(denoising_steps=[1000, 937.5])
        with pytest.raises(ValueError, match=r"must be non-empty values in \(0, 1000\]"):
            config_cls(denoising_steps=[1200, 500])
    with pytest.raises(ValueError, match="must be a list of numbers"):
        SelfForcingConfig(denoising_steps=["high", "low"])


def test_long_rollout_past_max_frames_with_sink_keeps_the_window():
    """8 blocks (24 frames) through a 9-frame window with a 3-frame sink, pruning on: the cache never holds more
    than max_frames frames, the sink is never evicted, and only the newest frames are kept besides it."""
    trim = TokenTrim(TokenTrimConfig(p=P, lam=0.0, warmup=1))
    latents, events, recorder, _ = run(trim, num_blocks=8, max_frames=9, sink_frames=3, check_window=True)
    assert any(e["triggered"] for e in events)
    assert torch.isfinite(latents).all()
    assert recorder.cache.committed_frames() == [0, 1, 2, 18, 19, 20]  # last block (21..23) not committed
    frames, _ = recorder.cache.positions()
    assert int((frames < 3).sum()) == 3 * TOKENS  # the sink is never pruned under all_but_sink


def test_trim_needs_batch_size_one():
    pipe = SelfForcingPipeline(MODEL, SelfForcingConfig(), trim=TokenTrim(TokenTrimConfig()))
    with pytest.raises(ValueError, match="batch size"):
        pipe(torch.zeros(2, 3, 16, HEIGHT, WIDTH), CONTEXT_KV, noise_source=torch.randn)


def test_first_step_retests_cost_one_step_per_retry_until_accepted():
    """With drift_source=first_step, retest and R = 3, a batch that triggers on its first test and on its first
    retest, then passes, costs 1 (first test) + 1 (first retest) + 1 (second retest) + 3 (finish) = 6 calls instead
    of 4 (without the early stop of re-tested regenerations it would be 1 + 4 + 4 = 9)."""
    cfg = TokenTrimConfig(p=P, drift_source="first_step", retest=True, max_retries=3)
    _, events, rec, _ = run(ForcedTrim(cfg, trigger_at={2}, budget=2))
    assert events[1]["triggered"] and events[1]["retries"] == 2
    assert rec.calls == base_calls() + 2


def _guided_rollout(context_kv, guidance_scale: float, trim: TokenTrim | None = None, on_event=None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 12, 16, HEIGHT, WIDTH, generator=generator)  # 4 blocks: the 4th evicts frames 3..5
    pipe = SelfForcingPipeline(MODEL, SelfForcingConfig(max_frames=9, sink_frames=3, guidance_scale=guidance_scale),
                               trim=trim)
    return pipe(noise, context_kv, noise_source=lambda shape: torch.randn(shape, generator=generator),
                on_event=on_event)


def test_classifier_free_guidance_combines_two_branches_with_their_own_caches():
    """guidance_scale s: v = v_u + s (v_c - v_u), each branch attending to its own cached context (eviction
    included). s = 0 is the unconditional rollout alone; identical branches give the unguided rollout."""
    uncond_kv = MODEL.encode_context(torch.zeros(1, 5, TINY["text_dim"]))
    both = [(torch.cat([kc, ku]), torch.cat([vc, vu])) for (kc, vc), (ku, vu) in zip(CONTEXT_KV, uncond_kv)]
    unconditional = _guided_rollout(uncond_kv, 1.0)
    torch.testing.assert_close(_guided_rollout(both, 0.0), unconditional, rtol=1e-5, atol=1e-5)
    same = [(torch.cat([k, k]), torch.cat([v, v])) for k, v in CONTEXT_KV]
    torch.testing.assert_close(_guided_rollout(same, 3.0), _guided_rollout(CONTEXT_KV, 1.0), rtol=1e-5, atol=1e-5)
    events: list[dict] = []
    guided = _guided_rollout(both, 3.0, trim=ForcedTrim(TokenTrimConfig(p=P), trigger_at={3}), on_event=events.append)
    assert [e["num_pruned_entries"] for e in events] == [0, 0, K * 3, 0]  # batch 3: k tokens of frames 3..5, both branches
    assert guided.shape == unconditional.shape and torch.isfinite(guided).all()
    assert not torch.allclose(guided, _guided_rollout(CONTEXT_KV, 1.0), atol=1e-3)
    with pytest.raises(ValueError, match=r"context_kv has 1 rows; 1 video\(s\) at guidance_scale=3.0 need 2"):
        _guided_rollout(CONTEXT_KV, 3.0)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        SelfForcingConfig(guidance_scale=-1.0)
