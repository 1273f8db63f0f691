"""TokenTrim's controller (`tokentrim.trim.controller`): one action for both backbones.

The same scripted decisions drive Self Forcing and Rolling Forcing through the same sequence of actions: prune with
S_t in the scope's cached frames, regenerate with the noise policy, retest only with R > 1 and `retest`, accept once
per batch, one event per batch. Real pipelines on a tiny random model (8x8 latents = 16 tokens per frame, blocks of
3 frames, 6 blocks: no eviction in either cache, the first block is the sink in both).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tokentrim.caches import CachedEntries, KVCache, PrunableCache, RollingKVCache
from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.pipelines.drift_source import FinalX0, FirstStepX0, drift_source_for
from tokentrim.pipelines.rolling_forcing import RollingForcingBatch, RollingForcingConfig, RollingForcingPipeline
from tokentrim.pipelines.self_forcing import SelfForcingBlock, SelfForcingConfig, SelfForcingPipeline
from tokentrim.trim import Decision, TokenTrim, TokenTrimConfig
from tokentrim.trim.controller import TrimController

NUM_BLOCKS, BLOCK, TOKENS = 6, 3, 16
P, K = 0.25, 4  # |S_t| = 4 of 16 tokens

MODEL = CausalWanModel(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=8, freq_dim=256)
torch.manual_seed(0)
for _param in MODEL.parameters():
    torch.nn.init.normal_(_param, std=0.1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops: one intra-op thread (on a shared 2-core machine two threads made a rollout 100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ScriptedTrim(TokenTrim):
    """The real rule (S_t, D_t, statistics), with `should_prune` of the n-th decision on batch t taken from
    `script[t][n]` (False when absent); logs every decide and accept in `actions`."""

    def __init__(self, cfg: TokenTrimConfig, script: dict[int, list[bool]], actions: list):
        self.script, self.actions, self.tests = script, actions, {}
        super().__init__(cfg)

    def decide(self, block_tokens: torch.Tensor) -> Decision:
        decision = super().decide(block_tokens)
        n = self.tests.get(decision.t, 0)
        self.tests[decision.t] = n + 1
        plan = self.script.get(decision.t, [])
        decision.should_prune = n < len(plan) and plan[n]
        unstable = None if decision.unstable is None else decision.unstable.tolist()
        self.actions.append(("decide", decision.t, decision.should_prune, unstable))
        return decision

    def accept(self, decision: Decision) -> None:
        self.actions.append(("accept", decision.t))
        super().accept(decision)


@pytest.fixture
def actions(monkeypatch) -> list:
    """Every prune (on either cache) and every regeneration (by either pipeline's batch adapter), in call order."""
    log: list = []
    real_prune = CachedEntries.prune_positions

    def prune_positions(self, tokens, frames):
        log.append(("prune", tokens.tolist(), list(frames)))
        return real_prune(self, tokens, frames)

    monkeypatch.setattr(CachedEntries, "prune_positions", prune_positions)
    for adapter in (SelfForcingBlock, RollingForcingBatch):
        def regenerate(self, fresh_noise, may_redo, real=adapter.regenerate):
            log.append(("regenerate", fresh_noise, may_redo))
            return real(self, fresh_noise, may_redo)

        monkeypatch.setattr(adapter, "regenerate", regenerate)
    return log


def rollout(backbone: str, cfg: TokenTrimConfig, script: dict[int, list[bool]], actions: list) -> list[dict]:
    """One video of 6 blocks; returns its events (the actions land in `actions`)."""
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(1, NUM_BLOCKS * BLOCK, 16, 8, 8, generator=gen)
    context_kv = MODEL.encode_context(torch.randn(1, 8, 32, generator=gen))
    trim = ScriptedTrim(cfg, script, actions)
    if backbone == "self_forcing":
        pipe = SelfForcingPipeline(MODEL, SelfForcingConfig(sink_frames=BLOCK), trim=trim)
    else:
        pipe = RollingForcingPipeline(MODEL, RollingForcingConfig(), trim=trim)
    events: list[dict] = []
    pipe(noise, context_kv, noise_source=lambda shape: torch.randn(shape, generator=gen), on_event=events.append)
    return events


def normalised(actions: list) -> list[tuple]:
    """The action sequence without the backbone-specific S_t values, after checking that every prune removes the
    S_t of the decision just before it."""
    out, unstable = [], None
    for action in actions:
        if action[0] == "decide":
            unstable = action[3]
            out.append(action[:3])
        elif action[0] == "prune":
            assert action[1] == unstable, "prune must remove the S_t of the triggering decision"
            out.append(("prune", action[2]))
        else:
            out.append(action)
    return out


def quiet(t: int) -> list[tuple]:
    return [("decide", t, False), ("accept", t)]


SCENARIOS = {
    # R = 1 (paper): one regeneration with the same noise, accepted without a further test's consequence
    "R1_same_all_but_sink": (
        TokenTrimConfig(p=P), {3: [True]},
        [*quiet(1), *quiet(2),
         ("decide", 3, True), ("prune", [3, 4, 5]), ("regenerate", False, False), ("decide", 3, False), ("accept", 3),
         *quiet(4), *quiet(5), *quiet(6)],
    ),
    # R = 3 with retest: retry while the regenerated batch still triggers; fresh noise; the previous batch's frames
    "R3_retest_fresh_last_batch": (
        TokenTrimConfig(p=P, max_retries=3, retest=True, regen_noise="fresh", scope="last_batch"), {4: [True, True]},
        [*quiet(1), *quiet(2), *quiet(3),
         ("decide", 4, True), ("prune", [6, 7, 8]), ("regenerate", True, True),
         ("decide", 4, True), ("prune", [6, 7, 8]), ("regenerate", True, True),
         ("decide", 4, False), ("accept", 4),
         *quiet(5), *quiet(6)],
    ),
    # R = 3 without retest: a regenerated batch that would trigger again is accepted (no second regeneration)
    "R3_no_retest_all": (
        TokenTrimConfig(p=P, max_retries=3, scope="all"), {2: [True, True]},
        [*quiet(1),
         ("decide", 2, True), ("prune", [0, 1, 2]), ("regenerate", False, False), ("decide", 2, True), ("accept", 2),
         *quiet(3), *quiet(4), *quiet(5), *quiet(6)],
    ),
    # R = 3 with retest, budget spent: the third regeneration is the last (may_redo False), accepted as it is
    "R3_retest_budget_spent": (
        TokenTrimConfig(p=P, max_retries=3, retest=True), {5: [True, True, True, True]},
        [*quiet(1), *quiet(2), *quiet(3), *quiet(4),
         ("decide", 5, True), ("prune", list(range(3, 12))), ("regenerate", False, True),
         ("decide", 5, True), ("prune", list(range(3, 12))), ("regenerate", False, True),
         ("decide", 5, True), ("prune", list(range(3, 12))), ("regenerate", False, False),
         ("decide", 5, True), ("accept", 5),
         *quiet(6)],
    ),
    # R = 0: a trigger is logged, nothing is pruned or regenerated
    "R0": (
        TokenTrimConfig(p=P, max_retries=0), {2: [True]},
        [*quiet(1), ("decide", 2, True), ("accept", 2), *quiet(3), *quiet(4), *quiet(5), *quiet(6)],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scripted_decisions_drive_both_pipelines_to_the_same_actions(scenario: str, actions: list):
    cfg, script, expected = SCENARIOS[scenario]
    sequences, all_events = {}, {}
    for backbone in ("self_forcing", "rolling_forcing"):
        actions.clear()
        all_events[backbone] = rollout(backbone, cfg, script, actions)
        sequences[backbone] = normalised(actions)
    assert sequences["self_forcing"] == expected
    assert sequences["rolling_forcing"] == expected
    sf_events, rf_events = all_events["self_forcing"], all_events["rolling_forcing"]
    for events in (sf_events, rf_events):  # one event per batch, in order, with the retries the script caused
        assert [e["t"] for e in events] == list(range(1, NUM_BLOCKS + 1))
        assert [e["start_frame"] for e in events] == [BLOCK * b for b in range(NUM_BLOCKS)]
        assert [e["retries"] for e in events] == retries_per_batch(expected)
        assert [e["triggered"] for e in events] == [bool(script.get(t, [False])[0]) for t in range(1, NUM_BLOCKS + 1)]
    assert all(set(rf) - set(sf) == {"window"} and set(sf) <= set(rf) for sf, rf in zip(sf_events, rf_events))


def retries_per_batch(sequence: list[tuple]) -> list[int]:
    """Regenerations of each batch t = 1..6 in an action sequence."""
    counts, t = {}, None
    for action in sequence:
        t = action[1] if action[0] == "decide" else t
        counts[t] = counts.get(t, 0) + (action[0] == "regenerate")
    return [counts[t] for t in range(1, NUM_BLOCKS + 1)]


@pytest.mark.parametrize("backbone", ["self_forcing", "rolling_forcing"])
def test_events_count_pruned_tokens_and_cache_entries_separately(backbone: str, actions: list):
    """Two prunes of the same batch in 3 cached frames: num_pruned_tokens counts the distinct token positions each
    prune removed (a position removed by the first prune is not removed again), num_pruned_entries the (frame,
    token) slots (3 per position here), and pruned_indices lists S_t of each regeneration."""
    cfg = TokenTrimConfig(p=P, max_retries=2, retest=True, scope="last_batch")
    events = rollout(backbone, cfg, {3: [True, True]}, actions)
    first, second = [a[1] for a in actions if a[0] == "prune"]
    removed = len(first) + len(set(second) - set(first))
    event = events[2]
    assert event["retries"] == 2 and len(first) == len(second) == K
    assert event["num_pruned_tokens"] == removed
    assert event["num_pruned_entries"] == 3 * removed
    assert event["pruned_indices"] == first + second
    assert all(e["num_pruned_tokens"] == e["num_pruned_entries"] == 0 for e in events if e is not event)


def test_prune_positions_reports_entries_and_distinct_tokens():
    """4 frames cached (2 of them sink), 4 tokens each: pruning tokens {1, 2} in frames 2, 3 removes 4 entries and
    2 positions; pruning {2, 3} again removes only token 3 (token 2 is already gone): 2 entries, 1 position."""
    cache = KVCache(num_layers=2, num_heads=1, head_dim=4, tokens_per_frame=4, max_frames=6, block_frames=2,
                    sink_frames=2)
    for start in (0, 2):
        cache.begin_block(start, 8)
        for layer in range(2):
            cache.stage(layer, torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 8, 4))
        cache.commit()
    assert tuple(cache.prune_positions(torch.tensor([1, 2]), [2, 3])) == (4, 2)
    assert tuple(cache.prune_positions(torch.tensor([2, 3]), [2, 3])) == (2, 1)
    assert tuple(cache.prune_positions(torch.tensor([0]), [])) == (0, 0)
    assert cache.length == 16 - 6


def test_may_redo_follows_R_and_retest():
    """The first candidate may be redone while R > 0; a regenerated one only with retest, while retries < R."""
    def table(**kw) -> list[bool]:
        return [TrimController(TokenTrim(TokenTrimConfig(**kw))).may_redo(r) for r in range(4)]

    assert table(max_retries=0) == [False, False, False, False]
    assert table(max_retries=1) == [True, False, False, False]
    assert table(max_retries=3) == [True, False, False, False]
    assert table(max_retries=3, retest=True) == [True, True, True, False]


def test_drift_sources_are_strategies_chosen_by_name():
    assert isinstance(drift_source_for("final"), FinalX0) and isinstance(drift_source_for("first_step"), FirstStepX0)
    assert [FinalX0().steps_before_test(4, m) for m in (True, False)] == [4, 4]
    assert [FirstStepX0().steps_before_test(4, m) for m in (True, False)] == [1, 4]
    with pytest.raises(ValueError, match=r"trim.drift_source must be one of \['final', 'first_step'\], got 'last'"):
        drift_source_for("last")


def test_both_caches_satisfy_the_protocol_and_do_not_import_the_model():
    kv = KVCache(num_layers=1, num_heads=1, head_dim=4, tokens_per_frame=4, max_frames=6, block_frames=2)
    rolling = RollingKVCache(num_layers=1, num_heads=1, head_dim=4, tokens_per_frame=4, block_frames=2, cache_frames=8,
                             max_attention_frames=6)
    assert isinstance(kv, PrunableCache) and isinstance(rolling, PrunableCache)
    code = "import sys, tokentrim.caches; print(sorted(m for m in sys.modules if m.startswith('tokentrim.models')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "['tokentrim.models', 'tokentrim.models.rope']"


@pytest.mark.parametrize("backbone", ["self_forcing", "rolling_forcing"])
def test_setting_trim_to_none_runs_the_plain_sampler(backbone: str, actions: list):
    """`pipeline.trim = None` (generate.py's untimed warm-up) removes the controller: no decision, no event; setting
    the decider back restores both."""
    trim = ScriptedTrim(TokenTrimConfig(p=P, drift_source="final"), {2: [True]}, actions)
    if backbone == "self_forcing":
        pipe = SelfForcingPipeline(MODEL, SelfForcingConfig(sink_frames=BLOCK), trim=trim)
    else:
        pipe = RollingForcingPipeline(MODEL, RollingForcingConfig(), trim=trim)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 5 * BLOCK, 16, 8, 8, generator=gen)
    context_kv = MODEL.encode_context(torch.randn(1, 8, 32, generator=gen))
    events: list[dict] = []
    pipe.trim = None
    assert pipe.controller is None and pipe.trim is None
    pipe(noise, context_kv, noise_source=lambda shape: torch.randn(shape, generator=gen), on_event=events.append)
    assert events == [] and actions == []
    pipe.trim = trim
    assert pipe.trim is trim and pipe.controller.trim is trim
    pipe(noise, context_kv, noise_source=lambda shape: torch.randn(shape, generator=gen), on_event=events.append)
    assert len(events) == 5 and ("regenerate", False, False) in actions
    if backbone == "rolling_forcing":
        with pytest.raises(ValueError, match=r"trim\.drift_source must be 'final' for Rolling Forcing"):
            pipe.trim = TokenTrim(TokenTrimConfig(drift_source="first_step"))
