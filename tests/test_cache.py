"""The self-attention KV cache: commit bookkeeping, frame-granular eviction with an attention sink, TokenTrim's
hard pruning of (frame, token) positions, and snapshot/restore.

K entries are written with a label that encodes (layer, frame, token), so every check can verify that the tensor
contents moved together with their (frame, token) bookkeeping.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokentrim.caches import KVCache

LAYERS, HEADS, HEAD_DIM, TOKENS = 2, 2, 4, 4  # N = 4 tokens per frame
BLOCK = 2  # frames per block


def new_cache(max_frames: int = 6, sink_frames: int = 2) -> KVCache:
    return KVCache(
        num_layers=LAYERS, num_heads=HEADS, head_dim=HEAD_DIM, tokens_per_frame=TOKENS,
        max_frames=max_frames, block_frames=BLOCK, sink_frames=sink_frames,
    )


def label(layer: int, frame: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    return 10000.0 * (layer + 1) + 100.0 * frame + token


def block_kv(layer: int, start_frame: int, num_frames: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled K (and V = -K) of a block: [B=1, n, L, d], every channel of entry (f, i) = label(layer, f, i)."""
    positions = torch.arange(num_frames * TOKENS)
    values = label(layer, start_frame + positions // TOKENS, positions % TOKENS).float()  # [L]
    k = values[None, None, :, None].expand(1, HEADS, -1, HEAD_DIM).clone()  # [L] -> [1, n, L, d]
    return k, -k


def add_block(cache: KVCache, start_frame: int, commit: bool = True) -> None:
    cache.begin_block(start_frame, BLOCK * TOKENS)
    for layer in range(LAYERS):
        cache.stage(layer, *block_kv(layer, start_frame))
    if commit:
        cache.commit()


def held_positions(cache: KVCache) -> list[tuple[int, int]]:
    frames, tokens = cache.positions()
    return list(zip(frames.tolist(), tokens.tolist()))


def assert_contents_follow_labels(cache: KVCache) -> None:
    """Every committed entry's K/V in every layer and head carries the label of its (frame, token)."""
    frames, tokens = cache.positions()
    for layer in range(LAYERS):
        expected = label(layer, frames, tokens).float()[None, None, :, None].expand(1, HEADS, -1, HEAD_DIM)  # [1, n, length, d]
        assert torch.equal(cache.k[layer, :, :, : cache.length], expected)
        assert torch.equal(cache.v[layer, :, :, : cache.length], -expected)
    assert sum(cache.frame_len) == cache.length
    for frame, count in zip(cache.committed_frames(), cache.frame_len):
        assert int((frames == frame).sum()) == count


def all_positions(frames) -> list[tuple[int, int]]:
    return [(f, i) for f in frames for i in range(TOKENS)]


def test_commit_appends_the_staged_block_with_its_frame_and_token_labels():
    cache = new_cache()
    cache.begin_block(0, BLOCK * TOKENS)
    k, v = cache.stage(0, *block_kv(0, 0))
    assert k.shape == v.shape == (1, HEADS, BLOCK * TOKENS, HEAD_DIM)  # the block attends to itself
    assert cache.length == 0 and cache.committed_frames() == []  # staged is not committed
    cache.stage(1, *block_kv(1, 0))
    cache.commit()
    assert cache.length == BLOCK * TOKENS and cache.staged == 0
    assert cache.committed_frames() == [0, 1] and cache.frame_len == [TOKENS, TOKENS]
    assert held_positions(cache) == all_positions([0, 1])
    assert_contents_follow_labels(cache)

    cache.begin_block(2, BLOCK * TOKENS)
    k, _ = cache.stage(0, *block_kv(0, 2))
    assert k.shape[2] == 2 * BLOCK * TOKENS  # committed entries, then the block
    assert torch.equal(k[:, :, BLOCK * TOKENS :], block_kv(0, 2)[0])


def test_discarded_block_leaves_the_committed_state_unchanged():
    cache = new_cache()
    add_block(cache, 0)
    add_block(cache, 2, commit=False)
    cache.discard_staged()
    assert cache.length == BLOCK * TOKENS and cache.committed_frames() == [0, 1]
    assert held_positions(cache) == all_positions([0, 1])
    assert_contents_follow_labels(cache)


def test_stage_rejects_a_token_count_other_than_announced():
    cache = new_cache()
    cache.begin_block(0, BLOCK * TOKENS)
    with pytest.raises(RuntimeError, match="announced"):
        cache.stage(0, *block_kv(0, 0, num_frames=1))


def test_eviction_keeps_sink_frames_and_drops_the_oldest_non_sink_frames():
    cache = new_cache(max_frames=6, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    assert cache.committed_frames() == [0, 1, 2, 3, 4, 5]
    cache.begin_block(6, BLOCK * TOKENS)  # 6 committed + 2 new > 6: frames 2, 3 go
    assert cache.committed_frames() == [0, 1, 4, 5]
    assert held_positions(cache) == all_positions([0, 1, 4, 5])
    assert_contents_follow_labels(cache)
    for layer in range(LAYERS):
        cache.stage(layer, *block_kv(layer, 6))
    cache.commit()
    add_block(cache, 8)  # frames 4, 5 go
    assert cache.committed_frames() == [0, 1, 6, 7, 8, 9]
    assert held_positions(cache) == all_positions([0, 1, 6, 7, 8, 9])
    assert_contents_follow_labels(cache)


def test_eviction_is_frame_granular_when_the_window_is_not_block_aligned():
    cache = new_cache(max_frames=7, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    add_block(cache, 6)  # 6 + 2 > 7: only frame 2 goes
    assert cache.committed_frames() == [0, 1, 3, 4, 5, 6, 7]
    add_block(cache, 8)  # frames 3, 4 go
    assert cache.committed_frames() == [0, 1, 5, 6, 7, 8, 9]
    assert held_positions(cache) == all_positions([0, 1, 5, 6, 7, 8, 9])
    assert_contents_follow_labels(cache)


def test_without_a_sink_eviction_is_a_plain_sliding_window():
    cache = new_cache(max_frames=4, sink_frames=0)
    for start in (0, 2, 4, 6):
        add_block(cache, start)
    assert cache.committed_frames() == [4, 5, 6, 7]
    assert_contents_follow_labels(cache)


def test_prune_removes_exactly_the_requested_positions_in_every_layer():
    cache = new_cache(max_frames=8, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    before = held_positions(cache)
    pruned_tokens = torch.tensor([3, 1])
    removed = cache.prune(pruned_tokens)  # default: every non-sink frame (2..5)
    assert removed == 2 * 4
    gone = {(f, i) for f in (2, 3, 4, 5) for i in (1, 3)}
    assert held_positions(cache) == [pos for pos in before if pos not in gone]  # order kept, nothing else removed
    assert cache.length == len(before) - removed
    assert cache.committed_frames() == [0, 1, 2, 3, 4, 5]  # a pruned frame stays a frame
    assert cache.frame_len == [4, 4, 2, 2, 2, 2]
    assert_contents_follow_labels(cache)


def test_prune_in_given_frames_only_touches_those_frames():
    cache = new_cache(max_frames=8, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    removed = cache.prune(torch.tensor([0, 2]), frames=[1, 4])  # explicit frames may include a sink frame
    assert removed == 4
    gone = {(1, 0), (1, 2), (4, 0), (4, 2)}
    assert set(held_positions(cache)) == set(all_positions(range(6))) - gone
    assert cache.frame_len == [4, 2, 4, 4, 2, 4]
    assert_contents_follow_labels(cache)
    assert cache.prune(torch.tensor([1]), frames=[]) == 0  # empty frame range: nothing removed


def test_prune_refuses_while_a_block_is_staged():
    cache = new_cache()
    add_block(cache, 0)
    add_block(cache, 2, commit=False)
    with pytest.raises(RuntimeError, match="staged"):
        cache.prune(torch.tensor([0]))


def test_after_pruning_attention_no_longer_sees_the_pruned_positions():
    """A layer's output over the pruned cache equals attention over the unpruned cache with the pruned keys at
    -inf logit (= absent); zeroing their K/V instead is NOT the same (a zero key still takes softmax weight)."""
    generator = torch.Generator().manual_seed(0)
    cache = new_cache(max_frames=8, sink_frames=2)
    for start in (0, 2, 4):  # random K/V contents
        cache.begin_block(start, BLOCK * TOKENS)
        for layer in range(LAYERS):
            cache.stage(layer, *torch.randn(2, 1, HEADS, BLOCK * TOKENS, HEAD_DIM, generator=generator))
        cache.commit()
    unpruned = cache.snapshot()
    frames, tokens = cache.positions()
    pruned_tokens = torch.tensor([0, 3])
    is_pruned = (frames >= 2) & torch.isin(tokens, pruned_tokens)  # [length]
    assert cache.prune(pruned_tokens) == int(is_pruned.sum()) == 8

    block = [torch.randn(1, HEADS, BLOCK * TOKENS, HEAD_DIM, generator=generator) for _ in range(3)]  # q, k, v
    q = block[0]
    cache.begin_block(6, BLOCK * TOKENS)
    keep = torch.cat([~is_pruned, torch.ones(BLOCK * TOKENS, dtype=torch.bool)])  # [length + L], the block always kept
    for layer in range(LAYERS):
        k, v = cache.stage(layer, block[1], block[2])  # [1, n, kept + L, d]
        out_pruned = F.scaled_dot_product_attention(q, k, v)
        full_k = torch.cat([unpruned.k[layer], block[1]], dim=2)  # [1, n, length + L, d]
        full_v = torch.cat([unpruned.v[layer], block[2]], dim=2)
        out_masked = F.scaled_dot_product_attention(q, full_k, full_v, attn_mask=keep[None, :])
        torch.testing.assert_close(out_pruned, out_masked, rtol=1e-6, atol=1e-6)
        zeroed = keep[None, None, :, None]  # [1, 1, length + L, 1]
        out_zeroed = F.scaled_dot_product_attention(q, full_k * zeroed, full_v * zeroed)
        assert (out_zeroed - out_masked).abs().max() > 1e-3


def test_snapshot_restore_round_trips_after_prune_and_eviction():
    cache = new_cache(max_frames=6, sink_frames=2)
    for start in (0, 2, 4, 6):  # frames 2, 3 evicted
        add_block(cache, start)
    cache.prune(torch.tensor([2]))
    snap = cache.snapshot()
    expected_positions, expected_frames, expected_len = held_positions(cache), cache.committed_frames(), list(cache.frame_len)
    expected_k = cache.k[:, :, :, : cache.length].clone()

    cache.prune(torch.tensor([0, 1]))  # change everything: prune, evict, commit
    add_block(cache, 8)
    cache.restore(snap)
    assert held_positions(cache) == expected_positions
    assert cache.committed_frames() == expected_frames == [0, 1, 4, 5, 6, 7]
    assert cache.frame_len == expected_len == [4, 4, 3, 3, 3, 3]
    assert torch.equal(cache.k[:, :, :, : cache.length], expected_k)
    assert_contents_follow_labels(cache)

    add_block(cache, 8)  # eviction offsets are right after a restore: frames 4, 5 (3 entries each) go
    assert cache.committed_frames() == [0, 1, 6, 7, 8, 9]
    assert held_positions(cache) == all_positions([0, 1]) + [(f, i) for f in (6, 7) for i in (0, 1, 3)] + all_positions([8, 9])
    assert_contents_follow_labels(cache)


def test_restore_drops_a_staged_block():
    cache = new_cache()
    add_block(cache, 0)
    snap = cache.snapshot()
    add_block(cache, 2, commit=False)
    cache.restore(snap)
    assert cache.staged == 0 and cache.length == BLOCK * TOKENS
    assert_contents_follow_labels(cache)


def test_pruned_state_persists_through_later_eviction():
    cache = new_cache(max_frames=8, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    cache.prune(torch.tensor([1, 2]))  # frames 2..5 lose tokens 1, 2
    add_block(cache, 6)  # 8 frames, no eviction yet
    add_block(cache, 8)  # frames 2, 3 evicted (2 entries each)
    assert cache.committed_frames() == [0, 1, 4, 5, 6, 7, 8, 9]
    pruned_frames = [(f, i) for f in (4, 5) for i in (0, 3)]
    assert held_positions(cache) == all_positions([0, 1]) + pruned_frames + all_positions([6, 7, 8, 9])
    assert cache.frame_len == [4, 4, 2, 2, 4, 4, 4, 4]
    assert_contents_follow_labels(cache)
    add_block(cache, 10)  # the pruned frames 4, 5 go; frames 6.. shift down by 4 entries
    assert held_positions(cache) == all_positions([0, 1, 6, 7, 8, 9, 10, 11])
    assert_contents_follow_labels(cache)


def test_sink_must_leave_room_for_a_block():
    with pytest.raises(ValueError, match="sink_frames"):
        new_cache(max_frames=4, sink_frames=3)


def test_a_fully_pruned_frame_still_occupies_its_window_slot_until_evicted():
    """p = 1 empties the non-sink frames; eviction stays frame-granular (window counted in frames, not entries)."""
    cache = new_cache(max_frames=6, sink_frames=2)
    for start in (0, 2, 4):
        add_block(cache, start)
    assert cache.prune(torch.arange(TOKENS)) == 4 * TOKENS
    assert cache.frame_len == [4, 4, 0, 0, 0, 0] and cache.length == 2 * TOKENS
    add_block(cache, 6)  # still evicts frames 2, 3
    assert cache.committed_frames() == [0, 1, 4, 5, 6, 7]
    assert held_positions(cache) == all_positions([0, 1, 6, 7])
    assert_contents_follow_labels(cache)
