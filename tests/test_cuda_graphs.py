"""`backbone.speed.cuda_graphs` (`tokentrim.models.cuda_graphs.GraphedCalls`) without a GPU.

A fake CUDA-graph API stands in for torch.cuda's: "capturing" remembers the call made between capture_begin and
capture_end with its (static) arguments, and "replaying" runs it again into the same output tensor, which is what a
real replay does to the captured kernels' memory. What is tested is the runner's logic: which calls run eagerly, get
captured or replayed; that replays see the inputs copied into the static buffers (latents, timesteps, a new video's
text context); that keys follow the cache state; and the eager fallback when capturing fails. The kernels themselves
are checked on a GPU by bench/official_side_by_side.py (lever `graphs`: equality with the other variants).
"""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from tokentrim.models import cuda_graphs
from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline

TINY = dict(text_len=8, in_dim=16, dim=64, ffn_dim=128, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2)
RECORDING: list = []


class FakeGraph:
    def __init__(self):
        self.replay_fn = None

    def capture_begin(self, pool=None):
        RECORDING.append(self)

    def capture_end(self):
        RECORDING.pop()

    def replay(self):
        self.replay_fn()

    def pool(self):
        return (0, 7)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    class Stream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda: [{"segment_pool_id": (0, 7), "total_size": 1000},
                                                                  {"segment_pool_id": (0, 1), "total_size": 5}])


def model_and_context(seed: int = 0):
    torch.manual_seed(seed)
    model = CausalWanModel(**TINY).eval().requires_grad_(False)
    context = model.encode_context(torch.randn(1, 5, TINY["text_dim"], generator=torch.Generator().manual_seed(1)))
    return model, context


class Forward:
    """The model's `_forward` as a graph would see it: calls counted, eager vs captured."""

    def __init__(self, model):
        self.model, self.eager, self.captured = model, 0, 0

    def __call__(self, latents, timesteps, context_kv, *, start_frame, cache, kv_only):
        result = self.model._forward(latents, timesteps, context_kv, start_frame=start_frame, cache=cache,
                                     kv_only=kv_only)
        if not RECORDING:
            self.eager += 1
            return result
        self.captured += 1

        def replay():  # what the captured kernels do: recompute from the static buffers, into the same memory
            fresh = self.model._forward(latents, timesteps, context_kv, start_frame=start_frame, cache=cache,
                                        kv_only=kv_only)
            if result is not None:
                result.copy_(fresh)
        RECORDING[-1].replay_fn = replay
        return result


def test_calls_run_eagerly_once_then_are_captured_and_replayed_with_fresh_inputs(fake_cuda):
    model, context = model_and_context()
    runner, forward = cuda_graphs.GraphedCalls(), Forward(model)
    cache = model.new_cache(height=4, width=4, max_frames=6, block_frames=3)
    generator = torch.Generator().manual_seed(2)
    cache.begin_block(0, 3 * 4)
    outs = []
    for step in range(4):  # one block's 4 denoising steps: new latents and timestep each time
        x = torch.randn(1, 3, 16, 4, 4, generator=generator)
        t = torch.full((1, 3), 1000.0 - 250 * step)
        expected = model._forward(x, t, context, start_frame=0, cache=cache)
        got = runner(forward, x, t, context, start_frame=0, cache=cache, kv_only=False)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        outs.append(got)
    assert (forward.eager, forward.captured, runner.replays) == (1 + 1, 1, 3)  # warm-up of the new stream, capture
    assert outs[2] is not outs[3] and not torch.equal(outs[2], outs[3])  # each replay hands out its own copy

    # the same key in the next "video": a new context is copied into the static buffers before the replay
    other = model.encode_context(torch.randn(1, 5, TINY["text_dim"], generator=torch.Generator().manual_seed(9)))
    x, t = torch.randn(1, 3, 16, 4, 4, generator=generator), torch.full((1, 3), 500.0)
    expected = model._forward(x, t, other, start_frame=0, cache=cache)
    torch.testing.assert_close(runner(forward, x, t, other, start_frame=0, cache=cache, kv_only=False), expected,
                               rtol=0, atol=0)
    assert runner.replays == 4 and forward.captured == 1
    # a context freed and rebuilt (maybe at the same address) with other values is copied in again
    del other
    again = model.encode_context(torch.randn(1, 5, TINY["text_dim"], generator=torch.Generator().manual_seed(5)))
    expected = model._forward(x, t, again, start_frame=0, cache=cache)
    torch.testing.assert_close(runner(forward, x, t, again, start_frame=0, cache=cache, kv_only=False), expected,
                               rtol=0, atol=0)
    with torch.no_grad():  # the same tensors changed in place (a new version): copied in again
        again[0][0].mul_(2)
    expected = model._forward(x, t, again, start_frame=0, cache=cache)
    torch.testing.assert_close(runner(forward, x, t, again, start_frame=0, cache=cache, kv_only=False), expected,
                               rtol=0, atol=0)

    # the cache state is part of the key: after a commit the next block is a new call (eager first)
    model._forward(x, t, context, start_frame=0, cache=cache, kv_only=True)
    cache.commit()
    cache.begin_block(3, 3 * 4)
    runner(forward, x, t, context, start_frame=3, cache=cache, kv_only=False)
    assert forward.captured == 1 and len(runner.graphs) == 1 and len(runner.seen) == 2
    static = [u for kv in runner.context for u in kv]
    static += [u for g in runner.graphs.values() for u in (g.latents, g.timesteps)]
    assert runner.held_bytes() == 1000 + sum(u.numel() * u.element_size() for u in static)  # pool (0, 7) + statics


def test_a_failed_capture_warns_once_and_runs_eagerly_from_then_on(fake_cuda, monkeypatch, caplog):
    class Unsupported(FakeGraph):
        def capture_begin(self, pool=None):
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Unsupported)
    model, context = model_and_context()
    runner, forward = cuda_graphs.GraphedCalls(), Forward(model)
    cache = model.new_cache(height=4, width=4, max_frames=6, block_frames=3)
    cache.begin_block(0, 12)
    x, t = torch.randn(1, 3, 16, 4, 4), torch.full((1, 3), 1000.0)
    expected = model._forward(x, t, context, start_frame=0, cache=cache)
    with caplog.at_level(logging.WARNING):
        results = [runner(forward, x, t, context, start_frame=0, cache=cache, kv_only=False) for _ in range(3)]
    assert all(torch.equal(r, expected) for r in results)
    assert runner.failed and not runner.graphs and runner.replays == 0
    assert sum("cuda_graphs: capture failed" in r.message for r in caplog.records) == 1


def test_the_model_keeps_one_graph_set_per_lever_setting_and_cpu_calls_stay_eager():
    model, context = model_and_context()
    graphs = WanSpeedConfig(cuda_graphs=True)
    model.set_speed(graphs)
    first = model._graphs
    model.set_speed(WanSpeedConfig())
    assert model._graphs is None
    model.set_speed(graphs)
    assert model._graphs is first  # switching back replays the graphs captured before

    # on CPU the dispatch never reaches the graphs: a Self Forcing rollout equals the plain one
    noise = torch.randn(1, 6, 16, 4, 4, generator=torch.Generator().manual_seed(3))

    def rollout():
        generator = torch.Generator().manual_seed(4)
        pipe = SelfForcingPipeline(model, SelfForcingConfig(max_frames=6))
        return pipe(noise, context, noise_source=lambda shape: torch.randn(shape, generator=generator))

    with_graphs = rollout()
    model.set_speed(WanSpeedConfig())
    assert torch.equal(with_graphs, rollout()) and first.replays == 0 and not first.seen
