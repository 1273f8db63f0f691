"""CUDA graphs of the causal DiT's cached calls (`backbone.speed.cuda_graphs`).

A Self Forcing video repeats a few fixed calls: each block runs its denoising steps with the same shapes against the
same cache state, and every video of a run walks the same (block start, cache length) sequence. One call launches a
few thousand kernels whose host-side cost (Python, guards, launches) leaves the GPU idle between them. A CUDA graph
records the call's kernels once and replays them with one launch.

`GraphedCalls` keys a call by everything the recorded kernels depend on besides the values of its inputs: shapes
and dtypes, the block's start frame (RoPE), the cache's committed and staged lengths and its buffers' addresses (the
kernels read and write them in place), and `kv_only`. The latents, timesteps and text context are copied into static
buffers before a replay (the context only when the caller's tensors change, i.e. once per video). A key's first call
runs eagerly (it also compiles the block regions); its second is captured and replayed, later ones replayed. A key
seen once (after a TokenTrim prune the cache length is new) costs nothing beyond its eager call.

All graphs share one memory pool: they run one at a time, and only their outputs stay allocated between replays.
Memory in that pool is reserved while the graphs live; `held_bytes` reports it with the static inputs, so benchmarks
can count it (a replay allocates nothing, so the allocator's peak statistics would miss it).

If capturing fails on a machine (an op that syncs or is not capturable), the runner logs one warning and runs every
later call eagerly: same numbers, no graphs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    latents: torch.Tensor  # static inputs, copied into before each replay
    timesteps: torch.Tensor
    out: torch.Tensor | None  # static output (None for kv_only calls)


class GraphedCalls:
    """Capture-and-replay of `CausalWanModel` calls with a cache (see the module docstring).

    Args:
        max_graphs: graphs kept at most; later new keys run eagerly (a guard against unbounded capture when cache
            lengths keep changing).
    """

    def __init__(self, max_graphs: int = 256):
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: set[tuple] = set()
        self.pool = None
        self.stream: torch.cuda.Stream | None = None
        self.context: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # static text context
        self.context_source: list | None = None  # (weakref, version) of the caller's context last copied in
        self.failed = False
        self.replays = 0

    def clear(self) -> None:
        """Drop every graph and static buffer (when the text context changes shape)."""
        self.graphs.clear()
        self.seen.clear()
        self.pool = self.stream = self.context = self.context_source = None

    @staticmethod
    def key(latents, timesteps, context_kv, start_frame: int, cache, kv_only: bool, weights: tuple) -> tuple:
        return (tuple(latents.shape), latents.dtype, latents.device, tuple(timesteps.shape), timesteps.dtype,
                start_frame, cache.length, cache.staged, kv_only, cache.k.data_ptr(), cache.v.data_ptr(),
                len(context_kv), tuple(context_kv[0][0].shape), context_kv[0][0].dtype, weights)

    def __call__(self, forward: Callable, latents: torch.Tensor, timesteps: torch.Tensor, context_kv: list, *,
                 start_frame: int, cache, kv_only: bool, weights: tuple = ()) -> torch.Tensor | None:
        """`forward(latents, timesteps, context_kv, start_frame=, cache=, kv_only=)` through a graph when possible.
        `weights`: where the model's weights are (e.g. their addresses and dtype): graphs captured elsewhere are not
        replayed."""
        key = self.key(latents, timesteps, context_kv, start_frame, cache, kv_only, weights)
        entry = self.graphs.get(key)
        if entry is None:
            first = key not in self.seen
            self.seen.add(key)
            if self.failed or first or len(self.graphs) >= self.max_graphs:
                return forward(latents, timesteps, context_kv, start_frame=start_frame, cache=cache, kv_only=kv_only)
            entry = self._capture(key, forward, latents, timesteps, context_kv, start_frame, cache, kv_only)
            if entry is None:
                return forward(latents, timesteps, context_kv, start_frame=start_frame, cache=cache, kv_only=kv_only)
        entry.latents.copy_(latents)
        entry.timesteps.copy_(timesteps)
        self._load_context(context_kv)
        entry.graph.replay()
        self.replays += 1
        return None if entry.out is None else entry.out.clone()

    def _load_context(self, context_kv: list) -> None:
        """Copy the caller's text context into the static buffers unless it is the same live tensors, unchanged, as
        last time (weak references: a freed context's memory may come back at the same address with new values)."""
        tensors = [t for kv in context_kv for t in kv]
        same = self.context_source is not None and all(
            ref() is t and version == t._version
            for t, (ref, version) in zip(tensors, self.context_source, strict=True))
        if self.context is None:
            self.context = [(k.clone(), v.clone()) for k, v in context_kv]
        elif not same:
            for (static_k, static_v), (k, v) in zip(self.context, context_kv, strict=True):
                static_k.copy_(k)
                static_v.copy_(v)
        self.context_source = [(weakref.ref(t), t._version) for t in tensors]

    def _capture(self, key, forward, latents, timesteps, context_kv, start_frame, cache, kv_only) -> _Graph | None:
        shapes = [tuple(k.shape) for k, _ in context_kv]
        if self.context is not None and [tuple(k.shape) for k, _ in self.context] != shapes:
            self.clear()  # another context shape: the graphs so far read static buffers that no longer fit
        self._load_context(context_kv)
        static_latents, static_timesteps = latents.clone(), timesteps.clone()
        graph = torch.cuda.CUDAGraph()
        warm_up = self.stream is None  # a new side stream: lazy per-stream state (cuBLAS workspaces) before capture
        if warm_up:
            self.stream = torch.cuda.Stream(device=latents.device)
        self.stream.wait_stream(torch.cuda.current_stream(latents.device))
        try:
            with torch.cuda.stream(self.stream):
                if warm_up:  # the same call (it rewrites the staged K/V with the values the replay will write)
                    forward(static_latents, static_timesteps, self.context, start_frame=start_frame, cache=cache,
                            kv_only=kv_only)
                graph.capture_begin(pool=self.pool)
                try:
                    out = forward(static_latents, static_timesteps, self.context, start_frame=start_frame,
                                  cache=cache, kv_only=kv_only)
                finally:
                    graph.capture_end()
        except Exception as exc:  # noqa: BLE001 - any capture failure: the same call, eagerly, from now on
            self.failed = True
            torch.cuda.current_stream(latents.device).wait_stream(self.stream)
            logger.warning("cuda_graphs: capture failed (%s: %s); running the DiT eagerly from now on",
                           type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return None
        torch.cuda.current_stream(latents.device).wait_stream(self.stream)
        if self.pool is None:
            self.pool = graph.pool()
        entry = _Graph(graph, static_latents, static_timesteps, out)
        self.graphs[key] = entry
        return entry

    def held_bytes(self) -> int:
        """Device memory that exists for the graphs: their pool (intermediates and outputs, reserved while the graphs
        live; a replay allocates nothing, so the allocator's peak statistics do not see it) and the static inputs."""
        static = [t for g in self.graphs.values() for t in (g.latents, g.timesteps)]
        static += [t for kv in (self.context or []) for t in kv]
        pool = 0
        if self.pool is not None:
            pool = sum(s["total_size"] for s in torch.cuda.memory_snapshot()
                       if tuple(s.get("segment_pool_id", ())) == tuple(self.pool))
        return pool + sum(t.numel() * t.element_size() for t in static)
