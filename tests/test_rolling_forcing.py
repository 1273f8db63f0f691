"""Rolling Forcing rollout and its cache: window schedule, sink, rolling, pruning, TokenTrim redo, determinism.

Tiny model (dim 64, 2 heads, 2 layers) on 8x8 latents = 4x4 tokens per frame, CPU, seeded generators.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokentrim.caches import DENOISE, REFRESH, RollingKVCache
from tokentrim.init.flowmo import FlowMoConfig
from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.pipelines.rolling_forcing import (
    RollingForcingConfig,
    RollingForcingPipeline,
    window_schedule,
)
from tokentrim.trim import TokenTrim, TokenTrimConfig

TOKENS_PER_FRAME = 16  # 8x8 latent, 2x2 patches
HEAD_DIM = 32


def tiny_model(seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    return CausalWanModel(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=8, freq_dim=256)


def make_inputs(model: CausalWanModel, num_frames: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, num_frames, 16, 8, 8), generator=gen)
    context_kv = model.encode_context(torch.randn((1, 8, 32), generator=gen))
    return noise, context_kv


def noise_source(seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=gen)


def tiny_cache(**kwargs) -> RollingKVCache:
    return RollingKVCache(num_layers=1, num_heads=1, head_dim=HEAD_DIM, tokens_per_frame=TOKENS_PER_FRAME, **kwargs)


def run_block(cache: RollingKVCache, start_frame: int, num_frames: int, *, mode: str, commit: bool) -> torch.Tensor:
    """One fake model call: K = frame * 100 + token (un-rotated by the cache where stored as-is)."""
    cache.begin_call(start_frame, num_frames, mode=mode)
    frames = torch.arange(start_frame, start_frame + num_frames).repeat_interleave(TOKENS_PER_FRAME)
    tokens = torch.arange(TOKENS_PER_FRAME).repeat(num_frames)
    value = (frames * 100 + tokens).float()  # [L]
    k = value.view(1, 1, -1, 1).expand(1, 1, -1, HEAD_DIM).clone()  # [B, n, L, d]
    keys, _ = cache.stage(0, k, k.clone())
    if commit:
        cache.commit()
    return keys


def roll(cache: RollingKVCache, num_blocks: int) -> None:
    """The official call pattern of a full rollout: per window, a denoising call and a committed refresh call."""
    for window in window_schedule(num_blocks, 5):
        start = window.start_block * 3
        run_block(cache, start, (window.end_block - window.start_block + 1) * 3, mode=DENOISE, commit=False)
        run_block(cache, start, 3, mode=REFRESH, commit=True)


# ---------------------------------------------------------------------------------------------- schedule
def test_window_schedule_for_7_blocks_matches_the_hand_table():
    # (start_block, end_block, noise level per block oldest->newest, block fed fresh noise, block leaving clean)
    table = [
        (0, 0, (0,), 0, None),
        (0, 1, (1, 0), 1, None),
        (0, 2, (2, 1, 0), 2, None),
        (0, 3, (3, 2, 1, 0), 3, None),
        (0, 4, (4, 3, 2, 1, 0), 4, 0),
        (1, 5, (4, 3, 2, 1, 0), 5, 1),
        (2, 6, (4, 3, 2, 1, 0), 6, 2),
        (3, 6, (4, 3, 2, 1), None, 3),
        (4, 6, (4, 3, 2), None, 4),
        (5, 6, (4, 3), None, 5),
        (6, 6, (4,), None, 6),
    ]
    got = [(w.start_block, w.end_block, w.levels, w.fresh_block, w.clean_block) for w in window_schedule(7, 5)]
    assert got == table


def test_window_timesteps_equal_the_official_shared_timestep_slices():
    pipe = RollingForcingPipeline(tiny_model(), RollingForcingConfig())
    expected_t = [1000.0, 952.381, 882.353, 769.231, 555.556]
    assert pipe.timesteps == pytest.approx(expected_t, abs=1e-3)
    shared = [t for t in reversed(pipe.timesteps) for _ in range(3)]  # [t4 x3, ..., t0 x3], clean -> noisy
    num_blocks = 7
    for window in window_schedule(num_blocks, 5):
        num_frames = (window.end_block - window.start_block + 1) * 3
        if num_frames == 15:
            official = shared
        elif window.start_block == 0:
            official = shared[-num_frames:]
        else:
            assert window.end_block == num_blocks - 1
            official = shared[:num_frames]
        t_frames, sigma = pipe._levels(window, 1, "cpu")
        assert t_frames[0].tolist() == pytest.approx(official, abs=1e-4)
        assert sigma.flatten().tolist() == pytest.approx([t / 1000 for t in official], abs=1e-6)


def test_fewer_than_15_latent_frames_is_a_clear_error():
    model = tiny_model()
    pipe = RollingForcingPipeline(model, RollingForcingConfig())
    noise, context_kv = make_inputs(model, 12)
    with pytest.raises(ValueError, match=r">= window_blocks \* block_frames = 15 latent frames.*got 12"):
        pipe(noise, context_kv, noise_source=noise_source())


@pytest.mark.parametrize(
    "key, value",
    [
        ("denoising_steps", (1000, 0)),
        ("shift", 0.0),
        ("block_frames", 0),
        ("window_blocks", 4),
        ("cache_frames", 20),
        ("max_attention_frames", 15),
        ("context_noise", -1.0),
    ],
)
def test_each_bad_sampler_key_is_named_in_the_error(key, value):
    with pytest.raises(ValueError, match=rf"sampler\.{key}"):
        RollingForcingConfig(**{key: value})


# ---------------------------------------------------------------------------------------------- cache
def test_full_window_attends_sink_plus_one_block_and_refresh_drops_sink_past_21_frames():
    cache = tiny_cache()
    roll(cache, 6)  # blocks 0..5 cached (18 frames)
    plan = cache.begin_call(18, 15, mode=DENOISE)  # a full window starting at block 6
    assert (plan.sink_end // TOKENS_PER_FRAME, plan.span_frames) == (3, 3)  # 3 sink + 3 working + 15 = 21 frames
    assert plan.sink_shift == 12  # sink re-roped to frames 12..14, right before the working block 15..17
    cache.discard_staged()
    run_block(cache, 18, 3, mode=REFRESH, commit=True)  # 21 frames cached: the refresh still sees the sink
    plan = cache.begin_call(21, 3, mode=REFRESH)
    assert plan.span_start > 0 and plan.span_frames == 18  # 24 frames cached: sink excluded from the refresh


def test_cache_rolls_at_24_frames_and_never_evicts_the_sink():
    cache = tiny_cache()
    roll(cache, 12)
    frames = cache.committed_frames()
    assert len(frames) == 24
    assert frames[:3] == [0, 1, 2]
    assert frames[3:] == list(range(15, 36))
    entry_frame, entry_token = cache.positions()
    stored = cache.k[0, 0, 0, : cache.length, 0]  # [length]
    assert torch.equal(stored, (entry_frame * 100 + entry_token).float())  # data moved with its bookkeeping


def test_prune_by_default_spares_the_sink():
    cache = tiny_cache()
    roll(cache, 6)
    removed = cache.prune(torch.tensor([0, 5, 15]))
    assert removed == 3 * 15  # 3 tokens x 15 non-sink frames
    entry_frame, entry_token = cache.positions()
    sink = entry_frame < 3
    assert int(sink.sum()) == 3 * TOKENS_PER_FRAME
    assert not bool(torch.isin(entry_token[~sink], torch.tensor([0, 5, 15])).any())


def test_pruned_positions_stay_removed_as_the_cache_rolls():
    cache = tiny_cache()
    roll(cache, 7)  # frames 0..20
    pruned_tokens = torch.tensor([2, 7, 11])
    cache.prune(pruned_tokens, frames=[9, 10, 11])
    for block in range(7, 10):  # three more blocks: frames 3..8 are evicted, 9..11 stay
        start = block * 3
        run_block(cache, start, 3, mode=DENOISE, commit=False)
        run_block(cache, start, 3, mode=REFRESH, commit=True)
    entry_frame, entry_token = cache.positions()
    assert cache.committed_frames() == [0, 1, 2] + list(range(9, 30))
    for frame in cache.committed_frames():
        tokens = set(entry_token[entry_frame == frame].tolist())
        expected = set(range(TOKENS_PER_FRAME)) - (set(pruned_tokens.tolist()) if frame in (9, 10, 11) else set())
        assert tokens == expected, frame
    stored = cache.k[0, 0, 0, : cache.length, 0]
    assert torch.equal(stored, (entry_frame * 100 + entry_token).float())


def test_pruned_tokens_are_missing_from_the_attended_working_cache():
    cache = tiny_cache()
    roll(cache, 6)
    cache.prune(torch.tensor([3]), frames=[15, 16, 17])
    keys = run_block(cache, 18, 15, mode=DENOISE, commit=False)  # [1, 1, sink + working + window, d]
    assert keys.shape[2] == 3 * 16 + (3 * 16 - 3) + 15 * 16
    working = keys[0, 0, 48 : 48 + 45, 0]
    assert not bool(torch.isin(working, torch.tensor([1503.0, 1603.0, 1703.0])).any())


def test_snapshot_restore_undoes_a_prune():
    cache = tiny_cache()
    roll(cache, 6)
    snap = cache.snapshot()
    before = cache.positions()[0].clone()
    cache.prune(torch.tensor([1, 2]))
    cache.restore(snap)
    assert torch.equal(cache.positions()[0], before)


# ---------------------------------------------------------------------------------------------- pipeline
def test_one_denoising_call_per_window_and_one_refresh_per_clean_block_that_a_later_window_reads():
    model = tiny_model()
    pipe = RollingForcingPipeline(model, RollingForcingConfig())
    noise, context_kv = make_inputs(model, 18)
    pipe(noise, context_kv, noise_source=noise_source())
    windows = window_schedule(6, 5)
    assert [w.index for w in windows if w.refresh] == [4, 5, 6, 7, 8]  # blocks 0..4 leave clean; block 5 is last
    assert pipe.num_model_calls == (6 + 5 - 1) + 5


@pytest.mark.parametrize("trigger", [False, True])
def test_skipped_refreshes_are_never_read(monkeypatch, trigger):
    """Upstream's schedule (a refresh after every window: block 0 in each ramp-up window, the last block after the
    last window) gives the same bits as ours, with and without a TokenTrim prune (24 frames: the cache rolls)."""
    import tokentrim.pipelines.rolling_forcing as rf

    def run():
        noise, context_kv = make_inputs(model, 24)
        trim = TriggerAtBatch(TokenTrimConfig(p=0.2), batch=3) if trigger else None
        pipe = RollingForcingPipeline(model, RollingForcingConfig(), trim=trim)
        return pipe(noise, context_kv, noise_source=noise_source()), pipe.num_model_calls

    model = tiny_model()
    ours, calls = run()
    schedule = rf.window_schedule
    monkeypatch.setattr(rf, "window_schedule", lambda *a: [dataclasses.replace(w, refresh=True) for w in schedule(*a)])
    upstream, upstream_calls = run()
    assert calls == upstream_calls - 5  # 4 ramp-up refreshes of block 0 and the last window's
    assert torch.equal(ours, upstream)


def test_two_runs_with_the_same_seed_are_bit_identical():
    model = tiny_model()
    pipe = RollingForcingPipeline(model, RollingForcingConfig())
    noise, context_kv = make_inputs(model, 18)
    first = pipe(noise, context_kv, noise_source=noise_source(7))
    second = pipe(noise, context_kv, noise_source=noise_source(7))
    assert torch.equal(first, second)


def test_token_major_layout_gives_the_head_major_rollout_with_a_prune():
    """Token-major q/k/v, cache buffers and attended K/V (`speed.token_major`): the same numbers, a trigger
    included (24 frames: the cache rolls)."""
    def run(model):
        noise, context_kv = make_inputs(model, 24)
        pipe = RollingForcingPipeline(model, RollingForcingConfig(), trim=TriggerAtBatch(TokenTrimConfig(p=0.2), batch=3))
        return pipe(noise, context_kv, noise_source=noise_source())

    model = tiny_model()
    reference = run(model)
    model.set_speed({"token_major": True, "gelu_epilogue": True})
    cache = RollingForcingPipeline(model, RollingForcingConfig()).new_cache(height=8, width=8)
    assert cache.token_major and cache.k.stride(3) > cache.k.stride(2)
    torch.testing.assert_close(run(model), reference, rtol=1e-5, atol=1e-5)


def test_disabled_trim_gives_the_no_trim_output():
    model = tiny_model()
    noise, context_kv = make_inputs(model, 18)
    plain = RollingForcingPipeline(model, RollingForcingConfig())(noise, context_kv, noise_source=noise_source())
    trim = TokenTrim(TokenTrimConfig(enabled=False, p=0.5, dynamic_p_max=0.5, lam=0.0, warmup=1))
    events = []
    pipe = RollingForcingPipeline(model, RollingForcingConfig(), trim=trim)
    trimmed = pipe(noise, context_kv, noise_source=noise_source(), on_event=events.append)
    assert torch.equal(plain, trimmed)
    assert [e["t"] for e in events] == list(range(1, 7))  # one batch per clean block
    assert [e["window"] for e in events] == list(range(4, 10))  # block b leaves the window at window b + 4
    assert all(not e["triggered"] and e["num_pruned_entries"] == 0 for e in events)


class TriggerAtBatch(TokenTrim):
    """TokenTrim that reports a trigger at one chosen batch (the real rule picks S_t)."""

    def __init__(self, cfg: TokenTrimConfig, batch: int):
        super().__init__(cfg)
        self.batch = batch

    def decide(self, block_tokens):
        decision = super().decide(block_tokens)
        return dataclasses.replace(decision, should_prune=decision.t == self.batch and decision.unstable is not None)


def test_a_trigger_prunes_non_sink_frames_and_redoes_the_window_step():
    model = tiny_model()
    noise, context_kv = make_inputs(model, 18)
    trim = TriggerAtBatch(TokenTrimConfig(p=0.2), batch=3)  # batch 3 = block 2, decided at window 6
    events = []
    pipe = RollingForcingPipeline(model, RollingForcingConfig(), trim=trim)
    out = pipe(noise, context_kv, noise_source=noise_source(), on_event=events.append)
    assert pipe.num_model_calls == 10 + 5 + 1  # 10 windows, 5 read refreshes, one redone window step
    event = events[2]
    assert (event["t"], event["window"], event["triggered"], event["retries"]) == (3, 6, True, 1)
    # cached at window 6: sink (frames 0..2) and block 1 (frames 3..5); k = round(0.2 * 16) = 3 tokens pruned in frames 3..5 only
    assert event["num_pruned_entries"] == 3 * 3
    assert len(event["pruned_indices"]) == 3
    plain = RollingForcingPipeline(model, RollingForcingConfig())(noise, context_kv, noise_source=noise_source())
    assert torch.equal(out[:, :6], plain[:, :6])  # blocks finished before the trigger are untouched
    assert not torch.equal(out[:, 6:9], plain[:, 6:9])  # the redone step attends to the pruned cache


def test_first_step_drift_source_is_rejected():
    with pytest.raises(ValueError, match=r"trim\.drift_source must be 'final'"):
        RollingForcingPipeline(tiny_model(), RollingForcingConfig(), trim=TokenTrim(TokenTrimConfig(drift_source="first_step")))


def test_flowmo_guides_only_the_first_window():
    model = tiny_model()
    noise, context_kv = make_inputs(model, 15)
    plain = RollingForcingPipeline(model, RollingForcingConfig())(noise, context_kv, noise_source=noise_source())
    pipe = RollingForcingPipeline(model, RollingForcingConfig(), flowmo=FlowMoConfig(steps=1, lr=0.05))
    guided = pipe(noise, context_kv, noise_source=noise_source())
    assert pipe.num_model_calls == 9 + 4 + 1  # 9 windows, 4 read refreshes, one guided forward (with grad) on window 0
    assert not torch.equal(guided, plain)
    with pytest.raises(ValueError, match=r"init\.steps must be <= sampler\.window_blocks=5"):
        RollingForcingPipeline(model, RollingForcingConfig(), flowmo=FlowMoConfig(steps=6))
